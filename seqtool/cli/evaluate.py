"""`seqtool evaluate`: a language model's perplexity, next-token accuracy, bits per byte and per-word
perplexity on held-out text, beside a smoothed n-gram baseline trained on the same training text."""

from __future__ import annotations

import sys
from typing import Annotated, Literal, Optional

import typer

from seqtool.cli.options import (
    Adapter,
    Device,
    EncodingErrors,
    Json,
    Workspace,
    pick,
    reporter,
    require_workspace,
)
from seqtool.storage import json_line

Opt = typer.Option
SMOOTHINGS = ("kn", "addk")  # models.ngram.SMOOTHINGS (here so that --help needs no torch)


def evaluate(
    ctx: typer.Context,
    workspace: Workspace = None,
    data: Annotated[Optional[list[str]], Opt(
        "--data", help="Held-out text: files, globs, .gz or - (stdin); default: the workspace's own "
        "validation text.", show_default=False)] = None,
    baseline: Annotated[Optional[Literal["ngram"]], Opt(help="ngram: also score a smoothed n-gram model "
                                                        "trained on the workspace's training text.",
                                                        show_default=False)] = None,
    order: Annotated[Optional[int], Opt(help="n-gram order (default 5 for char models, else 3).",
                                        show_default=False)] = None,
    smoothing: Annotated[Literal[SMOOTHINGS], Opt(help="kn (interpolated Kneser–Ney) | addk (add-k at the "
                                                    "longest seen context).")] = "kn",
    add_k: Annotated[float, Opt(help="k for --smoothing addk.")] = 0.1,
    baseline_train: Annotated[Optional[list[str]], Opt(
        help="Train the baseline on this text instead of the files recorded in the workspace.",
        show_default=False)] = None,
    batch_size: Annotated[int, Opt(help="Rows scored together (0: one stream for bptt models, so every "
                                   "token has its whole history; 64 windows for window models).")] = 0,
    src: Annotated[Optional[str], Opt("--src", help="Translation workspaces: source sentences, one per line.",
                                      show_default=False)] = None,
    ref: Annotated[Optional[str], Opt("--ref", help="Translation workspaces: the reference translations, "
                                      "line-aligned with --src.", show_default=False)] = None,
    as_json: Json = False,
    adapter: Adapter = None,
    device: Device = None,
    encoding_errors: EncodingErrors = "strict",
) -> None:
    """Perplexity, accuracy and bits per byte of a language model on held-out text (and an n-gram baseline).

    Per token: loss (nats), ppl and the next-token accuracy (the most likely token is the next one);
    bpc for char models. Per byte and per word, so that char, word and BPE models compare on the same
    text: bpb = bits per UTF-8 byte and word ppl = perplexity per whitespace-separated word, each
    line's end counting as one byte and one word (the newline is predicted too).

    Without --data, a language model is scored on the validation text of its own run (its --valid files,
    or the same held-out lines of its training text).

    A forecasting workspace (train-rnn --task forecast): one-step-ahead MSE on the held-out tail of its
    series (or on --data CSV after its first window) beside the naive forecast (the last value).

    Example: seqtool evaluate -w runs/recipes --baseline ngram --order 3
    """
    from seqtool import evaluation
    from seqtool.data.io import describe, iter_lines, require_nonempty
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.errors import InputError
    from seqtool.kinds import LM_KINDS, MLM_KINDS, MT_KINDS
    from seqtool.metrics import text_size
    from seqtool.models import load_published
    from seqtool.training import lm, runtime
    from seqtool.workspace import Workspace as WS

    report = reporter(ctx)
    ws = WS.open(require_workspace(workspace, ctx), kinds=(*LM_KINDS, *MLM_KINDS, *MT_KINDS, "classifier",
                                                           "rnn-forecast"), purpose="evaluation")
    dev = runtime.pick_device(pick(device, ctx, "device"))
    if ws.kind == "rnn-forecast":  # one-step-ahead MSE beside the naive last-value forecast
        from seqtool.cli.forecast import evaluate_forecast

        evaluate_forecast(ctx, ws, data, None, as_json, dev)
        return
    if ws.kind == "classifier":  # accuracy, macro-F1, per-class scores, confusion matrix
        from seqtool.cli.classify import evaluate_classifier

        if baseline or src or ref or adapter:
            raise InputError("--baseline, --src, --ref and --adapter do not apply to a classifier",
                             hint="pass its labelled data with --data FILE.tsv")
        evaluate_classifier(ctx, ws, data, as_json, dev, encoding_errors)
        return
    if ws.kind in MT_KINDS:
        _evaluate_translation(ws.path, src, ref, as_json, dev, encoding_errors, adapter)
        return
    if baseline and ws.kind in MLM_KINDS:
        raise InputError("--baseline ngram compares left-to-right language models; this is a masked LM",
                         hint="leave out --baseline")
    model = load_published(ws, dev, adapter)
    tok = load_tokenizer(ws.tokenizer_dir)
    # The run's own text is read once, for the validation lines and/or the baseline's training lines.
    corpus = lm.recorded_corpus(ws, report.warn) if not data or (baseline and not baseline_train) else None
    if data:
        lines = list(require_nonempty(iter_lines(data, encoding_errors), describe(data)))
    elif corpus.valid:  # the workspace's own validation text, as the run saw it
        lines = corpus.valid
    else:
        raise InputError(f"workspace {ws.path} was validated on its training text (nothing held out)",
                         hint="pass held-out text with --data FILE")
    ids = lm.encode(tok, lines)
    reading, context, rows = evaluation.workspace_reading(ws.kind, ws.config, model)
    size = text_size(lines, ids.numel() - 1)
    scores = evaluation.text_scores(model, tok, ids, reading, context, batch_size or rows, size=size)
    result = {"data": describe(data) if data else "validation text of the run", "tokenizer": tok.kind,
              "model": scores}
    if baseline:
        train = lm.text_lines(ws, baseline_train) if baseline_train else corpus.train
        n = order or (5 if tok.kind == "char" else 3)
        result["baseline"] = evaluation.ngram_scores(tok, train, ids, n, smoothing, add_k, size)
    if as_json:
        sys.stdout.write(json_line(result, indent=2) + "\n")  # strict: a NaN loss is null
        return
    scored = result["model"]["tokens"]
    sys.stdout.write(f"{'data':<14}{result['data']} ({scored:,} {tok.kind} tokens scored; {size.bytes:,} "
                     f"bytes, {size.words:,} words)\n")
    rows_out = [("model", result["model"])]
    if baseline:
        b = result["baseline"]
        rows_out.append((f"{b['order']}-gram {b['smoothing']}", b))
    for name, scores in rows_out:
        line = f"{name:<14}loss {scores['loss']:.4f}  ppl {scores['ppl']:.2f}"
        if "bpc" in scores:
            line += f"  bpc {scores['bpc']:.3f}"
        if "masked_tokens" in scores:
            line += f"  masked-token accuracy {scores['accuracy']:.4f} ({scores['masked_tokens']:,} masked)"
        elif "accuracy" in scores:
            line += f"  accuracy {scores['accuracy']:.4f}"
        if "bpb" in scores:
            line += f"  bpb {scores['bpb']:.3f}  word ppl {scores['word_ppl']:.2f}"
        sys.stdout.write(line + "\n")


def _evaluate_translation(path, src: str | None, ref: str | None, as_json: bool, device,
                          encoding_errors: str, adapter: str | None = None) -> None:
    """BLEU, loss and perplexity of a translation workspace on --src sentences and their --ref."""
    from seqtool.data.io import iter_lines
    from seqtool.errors import InputError
    from seqtool.translation import Translator

    if not (src and ref):
        raise InputError("a translation workspace is scored against reference translations",
                         hint="pass --src FILE --ref FILE")
    sources = list(iter_lines(src, encoding_errors))
    references = list(iter_lines(ref, encoding_errors))
    if len(sources) != len(references):
        raise InputError(f"{src} has {len(sources)} lines but {ref} has {len(references)}",
                         hint="--src and --ref must be line-aligned")
    scores = Translator.from_workspace(path, device, adapter).score(sources, references)
    if as_json:
        sys.stdout.write(json_line({"src": src, "ref": ref, "model": scores}, indent=2) + "\n")
        return
    sys.stdout.write(f"{'data':<14}{src} → {ref} ({scores['sentences']:,} sentences)\n")
    sys.stdout.write(f"{'model':<14}BLEU {scores['bleu']:.2f}  loss {scores['loss']:.4f}  "
                     f"ppl {scores['ppl']:.2f}\n")
    sys.stdout.write(f"{'signature':<14}{scores['signature']}\n")
