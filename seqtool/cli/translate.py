"""`seqtool translate`: one detokenised translation per input line, greedy or beam search."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer

from seqtool.cli.options import Adapter, Device, EncodingErrors, Workspace, pick, require_workspace

Opt = typer.Option


def translate(
    ctx: typer.Context,
    input: Annotated[str, typer.Argument(help="Source text, one sentence per line ('-': stdin).")] = "-",
    workspace: Workspace = None,
    beam: Annotated[int, Opt("--beam", "-k", help="Beam size; 1 is greedy search.")] = 1,
    length_penalty: Annotated[float, Opt(
        "--length-penalty", "-a",
        help="GNMT length penalty α: a finished hypothesis Y scores log P(Y|X) / lp(Y) with "
             "lp(Y) = ((5 + |Y|) / 6)^α. Larger α favours longer outputs; 0 ranks by raw log-probability.")]
    = 0.0,
    max_len_a: Annotated[float, Opt(help="An output has at most a·|source tokens| + b tokens: a.")] = 1.5,
    max_len_b: Annotated[int, Opt(help="… and b.")] = 10,
    nbest: Annotated[int, Opt(help="Print the N best translations of each line (needs --beam ≥ N).")] = 1,
    nbest_format: Annotated[Literal["tsv", "jsonl"], Opt(help="With --nbest > 1 or --scores: tsv (line, "
                                                         "rank, score, text) | jsonl (one object per input "
                                                         "line).")] = "tsv",
    scores: Annotated[bool, Opt("--scores", help="Print the score of each translation too.")] = False,
    batch_size: Annotated[int, Opt(help="Sentences decoded together.")] = 64,
    no_repeat_ngram: Annotated[int, Opt(help="Never repeat an n-gram of this size (0: off).")] = 0,
    adapter: Adapter = None,
    device: Device = None,
    encoding_errors: EncodingErrors = "strict",
) -> None:
    """Translate a file line by line with a translation workspace (empty lines stay empty).

    Example: seqtool translate -w runs/enfr test.en --beam 5 --length-penalty 0.6 > test.hyp.fr
    """
    import sys

    from seqtool.data.io import iter_lines
    from seqtool.training import runtime
    from seqtool.translation import TranslateConfig, Translator

    cfg = TranslateConfig(beam, length_penalty, max_len_a, max_len_b, nbest, batch_size, no_repeat_ngram)
    translator = Translator.from_workspace(require_workspace(workspace, ctx),
                                           runtime.pick_device(pick(device, ctx, "device")), adapter)
    lines = iter_lines(input, encoding_errors=encoding_errors)
    plain = nbest == 1 and not scores
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
