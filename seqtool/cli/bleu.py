"""`seqtool bleu`: corpus BLEU/chrF/TER through sacrebleu, with the breakdown and the signature."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Literal, Optional

import typer

from seqtool.cli.options import EncodingErrors, Json, reporter
from seqtool.metrics import METRICS, SMOOTH_METHODS, TOKENIZERS


def complete_metrics(incomplete: str) -> list[str]:
    """`-m bleu,c<TAB>` → bleu,chrf and bleu,chrf++: the names that can go on a comma-separated list."""
    given, _, last = incomplete.rpartition(",")
    return [f"{given}," * bool(given) + name for name in METRICS if name.startswith(last)]


def bleu(
    ctx: typer.Context,
    hypothesis: Annotated[str, typer.Argument(
        help="Detokenised system output, one segment per line ('-': stdin).")],
    references: Annotated[list[str], typer.Argument(help="One or more reference files, line-aligned.")],
    tokenize: Annotated[Literal[TOKENIZERS], typer.Option("--tokenize", "-tok", help="sacreBLEU's "
                                                          "tokenizer.")] = "13a",
    lowercase: Annotated[bool, typer.Option("--lowercase", "-lc", help="Case-insensitive BLEU (BLEU only, as "
                                            "sacreBLEU's -lc).")] = False,
    smooth_method: Annotated[Literal[SMOOTH_METHODS], typer.Option(help="BLEU smoothing.")] = "exp",
    smooth_value: Annotated[Optional[float], typer.Option(help="Value for floor / add-k smoothing.")] = None,
    metrics: Annotated[str, typer.Option("--metrics", "-m", help="Comma-separated: bleu,chrf,chrf++,ter.",
                                         autocompletion=complete_metrics)] = "bleu",
    chrf_lowercase: Annotated[bool, typer.Option("--chrf-lowercase", help="Case-insensitive chrF/chrF++.")]
    = False,
    ter_case_sensitive: Annotated[bool, typer.Option(
        "--ter-case-sensitive", help="Case-sensitive TER (sacreBLEU's TER ignores case by default).")]
    = False,
    max_ngram: Annotated[int, typer.Option(help="Highest n-gram order: 1-4 gives BLEU-1 … BLEU-4.")] = 4,
    sentence: Annotated[bool, typer.Option("--sentence", help="One score per line, not a corpus score.")]
    = False,
    compare: Annotated[Optional[str], typer.Option(
        help="A second system's output: paired bootstrap resampling against HYPOTHESIS (p-value, 95% CIs).")]
    = None,
    bootstrap_samples: Annotated[int, typer.Option(help="Resamples for --compare.")] = 1000,
    by_length: Annotated[bool, typer.Option("--by-length", help="Scores per bucket of reference length "
                                            "(tokens of the first reference, as --tokenize splits it).")]
    = False,
    length_edges: Annotated[str, typer.Option(help="--by-length buckets' upper ends: 10,20,30,40 gives "
                                              "≤10, 11-20, 21-30, 31-40, 41+.")] = "10,20,30,40",
    as_json: Json = False,
    encoding_errors: EncodingErrors = "strict",
) -> None:
    """Score a detokenised hypothesis against references with sacreBLEU (same numbers as its CLI).

    Files are read as sacreBLEU reads them: trailing whitespace is stripped, and a UTF-8 byte-order
    mark is kept and scored as text. chrf++ is chrF with word bigrams (sacreBLEU's --chrf-word-order 2).

    --by-length scores each bucket of reference length as a corpus of its own (same numbers as sacreBLEU
    on those lines), with the number of segments in it.

    Example: seqtool bleu out.fr test.fr --metrics bleu,chrf --json

    Example: seqtool bleu out.fr test.fr --by-length --length-edges 5,10,20
    """
    from seqtool.data.io import iter_lines
    from seqtool.errors import InputError
    from seqtool.metrics import (
        BleuOptions,
        corpus_scores,
        paired_bootstrap,
        parse_length_edges,
        parse_metrics,
        scores_by_length,
        sentence_scores,
        tokenisation_warning,
    )

    report = reporter(ctx)
    names = parse_metrics(metrics)
    options = BleuOptions(tokenize, lowercase, smooth_method, smooth_value, max_ngram, chrf_lowercase,
                          ter_case_sensitive)
    inputs = [hypothesis, *references, *([compare] if compare else [])]
    if inputs.count("-") > 1:
        raise InputError("'-' (stdin) can stand for only one of the inputs")
    if sum((sentence, bool(compare), by_length)) > 1:
        raise InputError("--sentence, --compare and --by-length cannot be combined", hint="use one of them")
    edges = parse_length_edges(length_edges)
    if bootstrap_samples < 1:
        raise InputError(f"--bootstrap-samples must be ≥ 1, got {bootstrap_samples}")

    def read(path: str) -> list[str]:
        # sacrebleu's command line strips trailing whitespace from every line and scores a BOM as text
        return [line.rstrip() for line in iter_lines(path, encoding_errors=encoding_errors, keep_bom=True)]

    hyps = read(hypothesis)
    refs = [read(path) for path in references]
    if warning := tokenisation_warning(hyps):
        report.warn(warning)
    out = sys.stdout
    if sentence:
        rows, signatures = sentence_scores(hyps, refs, names, options)
        for row in rows:
            out.write((json.dumps(row) if as_json else "\t".join(f"{v:.2f}" for v in row.values())) + "\n")
        for label, signature in signatures.items():
            report.info(f"{label} signature: {signature}")
        return
    if compare:
        hyps2 = read(compare)
        if warning := tokenisation_warning(hyps2):
            report.warn(f"{compare}: {warning}")
        results = paired_bootstrap(hyps, hyps2, refs, names, options, bootstrap_samples)
        if as_json:
            out.write(json.dumps({"baseline": hypothesis, "system": compare, "samples": bootstrap_samples,
                                  "comparison": [r.to_dict() for r in results]}, indent=2) + "\n")
            return
        out.write(f"paired bootstrap resampling, {bootstrap_samples} samples; "
                  "mean ± half-width of the 95% confidence interval\n")
        for r in results:
            out.write(f"{r.metric}\n  baseline {hypothesis}: {r.baseline:.2f} "
                      f"(μ = {r.baseline_mean:.2f} ± {r.baseline_ci:.2f})\n"
                      f"  system   {compare}: {r.system:.2f} (μ = {r.system_mean:.2f} ± {r.system_ci:.2f})"
                      f"  p = {r.p_value:.4f}{' (significant at 0.05)' if r.p_value < 0.05 else ''}\n"
                      f"  signature: {r.signature}\n")
        return
    if by_length:
        buckets = scores_by_length(hyps, refs, names, options, edges)
        if as_json:
            out.write(json.dumps([b.to_dict() for b in buckets], indent=2) + "\n")
            return
        labels = [s.name for s in next((b.scores for b in buckets if b.scores), [])]
        out.write(f"{'ref tokens':<12}{'segments':>9}" + "".join(f"{label:>9}" for label in labels) + "\n")
        for b in buckets:
            cells = [f"{s.score:9.2f}" for s in b.scores] or [f"{'-':>9}"] * len(labels)
            out.write(f"{b.label:<12}{b.segments:>9}" + "".join(cells) + "\n")
        for s in next((b.scores for b in buckets if b.scores), []):
            report.info(f"{s.name} signature: {s.signature}")
        return
    scores = corpus_scores(hyps, refs, names, options)
    if as_json:
        out.write(json.dumps([s.to_dict() for s in scores], indent=2) + "\n")
        return
    for s in scores:
        out.write(f"{s.name} = {s.score:.2f}\n  signature: {s.signature}\n")
        if s.details:
            d = s.details
            for n, (p, c, t) in enumerate(zip(d["precisions"], d["counts"], d["totals"], strict=False), 1):
                out.write(f"  {n}-gram precision (clipped) {p:6.2f}  {c}/{t}\n")
            out.write(f"  brevity penalty {d['bp']:.3f}  ratio {d['ratio']:.3f}  "
                      f"hyp_len {d['sys_len']}  ref_len {d['ref_len']}\n")
