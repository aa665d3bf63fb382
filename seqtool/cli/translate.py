"""`seqtool translate`: one detokenised translation per input line: greedy, beam search or sampling."""

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
    Seed,
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
    sample: Annotated[bool, Opt("--sample", help="Draw each token from the model's distribution instead of "
                                "searching (e.g. varied back-translations); reproducible with --seed and "
                                "the same --batch-size."), Key("sample")] = False,
    temperature: Annotated[Optional[float], Opt(help="With --sample: divide the logits by this (< 1: closer "
                                                "to greedy)."), Key("temperature")] = None,
    top_p: Annotated[Optional[float], Opt(help="With --sample: draw from the smallest set of tokens holding "
                                          "this much probability (1: all)."), Key("top_p")] = None,
    seed: Seed = None,
    adapter: Adapter = None,
    quantize: Quantize = "none",
    device: Device = None,
    encoding_errors: EncodingErrors = "strict",
) -> None:
    """Translate a file line by line with a translation workspace (empty lines stay empty).

    Example: seqtool translate -w runs/enfr test.en --beam 5 --length-penalty 0.6 > test.hyp.fr

    Example: seqtool translate -w runs/enfr test.en --sample --temperature 0.8 --top-p 0.9 --seed 1
    """
    options = config_options(ctx, translate, locals())
    import random

    import torch

    from seqtool.config import check_seed, resolve
    from seqtool.data.io import iter_lines
    from seqtool.models.quantize import quantize_int8
    from seqtool.training import runtime
    from seqtool.translation import TranslateConfig, Translator

    cfg = resolve(TranslateConfig, options=options)
    dev = runtime.pick_device(pick(device, ctx, "device"))
    seed = pick(seed, ctx, "seed")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    check_seed("--seed", seed)
    generator = torch.Generator(device=dev).manual_seed(seed) if cfg.sample else None
    translator = Translator.from_workspace(require_workspace(workspace, ctx), dev, adapter)
    if quantize == "int8":
        translator.model = quantize_int8(translator.model, translator.device)
    lines = iter_lines(input, encoding_errors=encoding_errors)
    plain = cfg.nbest == 1 and not scores
    out = sys.stdout
    for n, candidates in enumerate(translator.translate(lines, cfg, generator), 1):
        if plain:
            out.write(candidates[0].text + "\n")
        elif nbest_format == "jsonl":
            out.write(json.dumps({"line": n, "nbest": [{"text": c.text, "score": round(c.score, 4)}
                                                        for c in candidates]}, ensure_ascii=False) + "\n")
        else:
            for rank, c in enumerate(candidates, 1):
                out.write(f"{n}\t{rank}\t{c.score:.4f}\t{c.text}\n")
        out.flush()
