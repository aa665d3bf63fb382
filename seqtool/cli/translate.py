"""`seqtool translate`: one detokenised translation per input line, greedy or beam search."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Literal, Optional

import typer

from seqtool.cli.options import (
    Adapter,
    Device,
    EncodingErrors,
    Key,
    Quantize,
    Workspace,
    config_options,
    pick,
    require_workspace,
)

Opt = typer.Option


def translate(
    ctx: typer.Context,
    input: Annotated[str, typer.Argument(help="Source text, one sentence per line ('-': stdin).")] = "-",
    workspace: Workspace = None,
    beam: Annotated[Optional[int], Opt("--beam", "-k", help="Beam size; 1 is greedy search."), Key("beam")] \
        = None,
    length_penalty: Annotated[Optional[float], Opt(
        "--length-penalty", "-a",
        help="GNMT length penalty α: a finished hypothesis Y scores log P(Y|X) / lp(Y) with "
             "lp(Y) = ((5 + |Y|) / 6)^α. Larger α favours longer outputs; 0 ranks by raw log-probability."),
        Key("length_penalty")] = None,
    max_len_a: Annotated[Optional[float], Opt(help="An output has at most a·|source tokens| + b tokens: a."),
                         Key("max_len_a")] = None,
    max_len_b: Annotated[Optional[int], Opt(help="… and b."), Key("max_len_b")] = None,
    nbest: Annotated[Optional[int], Opt(help="Print the N best translations of each line (needs --beam "
                                        "≥ N)."), Key("nbest")] = None,
    nbest_format: Annotated[Literal["tsv", "jsonl"], Opt(help="With --nbest > 1 or --scores: tsv (line, "
                                                         "rank, score, text) | jsonl (one object per input "
                                                         "line).")] = "tsv",
    scores: Annotated[bool, Opt("--scores", help="Print the score of each translation too.")] = False,
    batch_size: Annotated[Optional[int], Opt(help="Sentences decoded together."), Key("batch_size")] = None,
    no_repeat_ngram: Annotated[Optional[int], Opt(help="Never repeat an n-gram of this size (0: off)."),
                               Key("no_repeat_ngram")] = None,
    adapter: Adapter = None,
    quantize: Quantize = "none",
    device: Device = None,
    encoding_errors: EncodingErrors = "strict",
) -> None:
    """Translate a file line by line with a translation workspace (empty lines stay empty).

    Example: seqtool translate -w runs/enfr test.en --beam 5 --length-penalty 0.6 > test.hyp.fr
    """
    options = config_options(ctx, translate, locals())
    from seqtool.config import resolve
    from seqtool.data.io import iter_lines
    from seqtool.models.quantize import quantize_int8
    from seqtool.training import runtime
    from seqtool.translation import TranslateConfig, Translator

    cfg = resolve(TranslateConfig, options=options)
    translator = Translator.from_workspace(require_workspace(workspace, ctx),
                                           runtime.pick_device(pick(device, ctx, "device")), adapter)
    if quantize == "int8":
        translator.model = quantize_int8(translator.model, translator.device)
    lines = iter_lines(input, encoding_errors=encoding_errors)
    plain = cfg.nbest == 1 and not scores
    out = sys.stdout
    for n, candidates in enumerate(translator.translate(lines, cfg), 1):
        if plain:
            out.write(candidates[0].text + "\n")
        elif nbest_format == "jsonl":
            out.write(json.dumps({"line": n, "nbest": [{"text": c.text, "score": round(c.score, 4)}
                                                        for c in candidates]}, ensure_ascii=False) + "\n")
        else:
            for rank, c in enumerate(candidates, 1):
                out.write(f"{n}\t{rank}\t{c.score:.4f}\t{c.text}\n")
        out.flush()
