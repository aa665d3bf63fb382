"""`seqtool evaluate`: a language model's perplexity (and bits per character) on held-out text, beside
a smoothed n-gram baseline trained on the same training text."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from seqtool.cli.options import Device, EncodingErrors, Json, Workspace, pick, reporter, require_workspace

Opt = typer.Option


def evaluate(
    ctx: typer.Context,
    workspace: Workspace = None,
    data: Annotated[Optional[list[str]], Opt("--data", help="Held-out text: files, globs, .gz or - (stdin).",
                                             show_default=False)] = None,
    baseline: Annotated[Optional[str], Opt(help="ngram: also score a smoothed n-gram model trained on the "
                                           "workspace's training text.", show_default=False)] = None,
    order: Annotated[Optional[int], Opt(help="n-gram order (default 5 for char models, else 3).",
                                        show_default=False)] = None,
    smoothing: Annotated[str, Opt(help="kn (interpolated Kneser–Ney) | addk (add-k at the longest seen "
                                  "context).")] = "kn",
    add_k: Annotated[float, Opt(help="k for --smoothing addk.")] = 0.1,
    baseline_train: Annotated[Optional[list[str]], Opt(
        help="Train the baseline on this text instead of the files recorded in the workspace.",
        show_default=False)] = None,
    batch_size: Annotated[int, Opt(help="Rows scored together (0: one stream for bptt models, so every "
                                   "token has its whole history; 64 windows for window models).")] = 0,
    as_json: Json = False,
    device: Device = None,
    encoding_errors: EncodingErrors = "strict",
) -> None:
    """Perplexity and bits per character of a language model on held-out text (and an n-gram baseline).

    Example: seqtool evaluate -w runs/recipes --data recipes_data/valid.txt --baseline ngram --order 5
    """
    from seqtool.config import from_dict
    from seqtool.data.io import describe, iter_lines, require_nonempty
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.errors import InputError
    from seqtool.models import load_published
    from seqtool.training import lm, runtime
    from seqtool.workspace import LM_KINDS
    from seqtool.workspace import Workspace as WS

    if not data:
        raise InputError("no text to evaluate on", hint="pass --data FILE")
    if baseline not in (None, "ngram"):
        raise InputError(f"--baseline must be ngram, got {baseline!r}")
    report = reporter(ctx)
    ws = WS.open(require_workspace(workspace, ctx), kinds=LM_KINDS, purpose="perplexity")
    model = load_published(ws, runtime.pick_device(pick(device, ctx, "device")))
    tok = load_tokenizer(ws.sub("tokenizer"))
    objective = from_dict(lm.LMDataConfig, ws.config.get("data") or {}, "data.")
    ids = lm.encode(tok, list(require_nonempty(iter_lines(data, encoding_errors), describe(data))))
    rows = batch_size or (1 if objective.objective == "bptt" else 64)
    char_level = tok.kind == "char"
    result = {"data": describe(data), "tokenizer": tok.kind,
              "model": lm.score_ids(model, ids, objective, rows, char_level)}
    if baseline:
        train = lm.training_lines(ws, baseline_train, report.warn)
        n = order or (5 if char_level else 3)
        result["baseline"] = lm.ngram_scores(tok, train, ids, n, smoothing, add_k)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    scored = result["model"]["tokens"]
    sys.stdout.write(f"{'data':<14}{result['data']} ({scored:,} {tok.kind} tokens scored)\n")
    rows_out = [("model", result["model"])]
    if baseline:
        b = result["baseline"]
        rows_out.append((f"{b['order']}-gram {b['smoothing']}", b))
    for name, scores in rows_out:
        line = f"{name:<14}loss {scores['loss']:.4f}  ppl {scores['ppl']:.2f}"
        if "bpc" in scores:
            line += f"  bpc {scores['bpc']:.3f}"
        sys.stdout.write(line + "\n")
