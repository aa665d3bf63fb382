"""Scores: BLEU, chrF and TER through sacrebleu's Python API (always with its signature), and a
language model's perplexity, accuracy, bits per character / per byte and per-word perplexity.

No torch at import: `seqtool bleu` must start fast. The numbers equal the sacrebleu command line for the
same options because the same metric objects compute them with its command line's defaults (`-lc` is
BLEU-only; chrF is case-sensitive and TER case-insensitive unless told otherwise), on lines read the
way it reads them (trailing whitespace stripped, a byte-order mark kept as text).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from seqtool.errors import InputError

METRICS = ("bleu", "chrf", "chrf++", "ter")  # chrf++: chrF with word bigrams (Popović 2017)
TOKENIZERS = ("13a", "intl", "char", "zh", "none")
SMOOTH_METHODS = ("exp", "floor", "add-k", "none")


@dataclass(frozen=True)
class BleuOptions:
    """What sacrebleu's command line takes (same names as its options, same defaults)."""

    tokenize: str = "13a"
    lowercase: bool = False  # BLEU only, as sacrebleu's -lc
    smooth_method: str = "exp"
    smooth_value: float | None = None  # None: sacrebleu's default for the method
    max_ngram: int = 4
    chrf_lowercase: bool = False
    ter_case_sensitive: bool = False  # sacrebleu's TER ignores case by default (signature case:lc)

    def __post_init__(self) -> None:
        if self.tokenize not in TOKENIZERS:
            raise InputError(f"--tokenize must be one of {', '.join(TOKENIZERS)}; got {self.tokenize!r}")
        if self.smooth_method not in SMOOTH_METHODS:
            raise InputError(f"--smooth-method must be one of {', '.join(SMOOTH_METHODS)}; "
                             f"got {self.smooth_method!r}")
        if not 1 <= self.max_ngram <= 4:
            raise InputError(f"--max-ngram must be 1, 2, 3 or 4; got {self.max_ngram}")


@dataclass
class MetricScore:
    """One corpus score, the signature that produced it, and (BLEU) the breakdown."""

    name: str  # "BLEU", "BLEU-2", "chrF2", "TER"
    score: float
    signature: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "signature": self.signature, **self.details}


def parse_metrics(text: str) -> tuple[str, ...]:
    """'bleu,chrf' → ('bleu', 'chrf'); unknown names are an InputError listing the choices."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise InputError(f"--metrics: unknown metric {', '.join(bad) or repr(text)}",
                         hint=f"choose from {', '.join(METRICS)}, comma-separated")
    return names


def make_metric(name: str, options: BleuOptions, references: Sequence[Sequence[str]] | None = None,
                sentence: bool = False) -> Any:
    """A sacrebleu metric object; `references` (one list per reference set) are cached in it."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    if name == "bleu":
        # sacrebleu's command line turns on effective order for sentence-level BLEU; so do we.
        return BLEU(lowercase=options.lowercase, tokenize=options.tokenize,
                    smooth_method=options.smooth_method, smooth_value=options.smooth_value,
                    max_ngram_order=options.max_ngram, effective_order=sentence, references=references)
    if name in ("chrf", "chrf++"):
        return CHRF(word_order=2 if name == "chrf++" else 0, lowercase=options.chrf_lowercase,
                    references=references)
    if name == "ter":
        return TER(case_sensitive=options.ter_case_sensitive, references=references)
    raise InputError(f"unknown metric {name!r}", hint=f"choose from {', '.join(METRICS)}")


def _bleu_details(score: Any) -> dict[str, Any]:
    return {"precisions": [float(p) for p in score.precisions], "counts": list(score.counts),
            "totals": list(score.totals), "bp": float(score.bp), "ratio": float(score.ratio),
            "sys_len": int(score.sys_len), "ref_len": int(score.ref_len)}


def _name(name: str, score: Any, options: BleuOptions) -> str:
    if name == "bleu" and options.max_ngram != 4:
        return f"BLEU-{options.max_ngram}"
    return str(score.name)


def corpus_scores(hyps: Sequence[str], refs: Sequence[Sequence[str]], metrics: Sequence[str] = ("bleu",),
                  options: BleuOptions | None = None) -> list[MetricScore]:
    """Corpus-level scores of `hyps` against one or more reference sets (each as long as `hyps`)."""
    options = options or BleuOptions()
    check_lengths(hyps, refs)
    out = []
    for name in metrics:
        metric = make_metric(name, options, refs)
        score = metric.corpus_score(hyps, None)
        signature = metric.get_signature().format()
        details = _bleu_details(score) if name == "bleu" else {}
        out.append(MetricScore(_name(name, score, options), float(score.score), signature, details))
    return out


def corpus_bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]], tokenize: str = "13a") -> MetricScore:
    """Corpus BLEU with sacrebleu's defaults: what validation during training reports."""
    return corpus_scores(hyps, refs, ("bleu",), BleuOptions(tokenize=tokenize))[0]


def sentence_scores(hyps: Sequence[str], refs: Sequence[Sequence[str]], metrics: Sequence[str] = ("bleu",),
                    options: BleuOptions | None = None) -> tuple[list[dict[str, float]], dict[str, str]]:
    """Per-line scores ({metric name: score} per hypothesis) and the signature of each metric."""
    options = options or BleuOptions()
    check_lengths(hyps, refs)
    rows: list[dict[str, float]] = [{} for _ in hyps]
    signatures: dict[str, str] = {}
    for name in metrics:
        metric = make_metric(name, options, sentence=True)
        label = ""
        for i, (hyp, *line_refs) in enumerate(zip(hyps, *refs, strict=False)):
            score = metric.sentence_score(hyp, line_refs)
            label = _name(name, score, options)
            rows[i][label] = float(score.score)
        signatures[label or name.upper()] = metric.get_signature().format()
    return rows, signatures


# ---------------------------------------------------------------------------------------------
# BLEU by sentence length (Bahdanau et al. 2015, Fig. 2: scores fall with the source length)

LENGTH_EDGES = (10, 20, 30, 40)  # buckets ≤10, 11-20, 21-30, 31-40, 41+ reference tokens


@dataclass
class LengthBucket:
    """The segments whose first reference has low..high tokens (high None: no upper bound) and their
    corpus scores (empty when no segment falls in the bucket)."""

    low: int
    high: int | None
    segments: int
    scores: list[MetricScore]

    @property
    def label(self) -> str:
        if self.high is None:
            return f"{self.low}+"
        return f"≤{self.high}" if self.low == 0 else f"{self.low}-{self.high}"

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.label, "min_tokens": self.low, "max_tokens": self.high,
                "segments": self.segments, "scores": [s.to_dict() for s in self.scores]}


def parse_length_edges(text: str) -> tuple[int, ...]:
    """'10,20,30' → (10, 20, 30): the upper ends of the buckets, rising; the last bucket is open."""
    try:
        edges = tuple(int(part) for part in text.split(","))
    except ValueError:
        edges = ()
    if not edges or any(e < 1 for e in edges) or list(edges) != sorted(set(edges)):
        raise InputError(f"--length-edges must be rising whole numbers ≥ 1, comma-separated; got {text!r}",
                         hint="e.g. --length-edges 10,20,30,40 (buckets ≤10, 11-20, 21-30, 31-40, 41+)")
    return edges


def scores_by_length(hyps: Sequence[str], refs: Sequence[Sequence[str]], metrics: Sequence[str] = ("bleu",),
                     options: BleuOptions | None = None, edges: Sequence[int] = LENGTH_EDGES
                     ) -> list[LengthBucket]:
    """Corpus scores per bucket of reference length: the tokens of the first reference as BLEU's
    --tokenize splits it (what sacrebleu counts as ref_len). Each bucket is scored on its own, so its
    numbers equal sacrebleu's on that subset of lines."""
    options = options or BleuOptions()
    check_lengths(hyps, refs)
    tokenizer = make_metric("bleu", options).tokenizer
    lengths = [len(tokenizer(ref.rstrip()).split()) for ref in refs[0]]
    highs: list[int | None] = [*edges, None]
    bounds = [(0 if i == 0 else edges[i - 1] + 1, high) for i, high in enumerate(highs)]
    buckets = []
    for low, high in bounds:
        rows = [i for i, n in enumerate(lengths) if n >= low and (high is None or n <= high)]
        scores = corpus_scores([hyps[i] for i in rows], [[ref[i] for i in rows] for ref in refs], metrics,
                               options) if rows else []
        buckets.append(LengthBucket(low, high, len(rows), scores))
    return buckets


@dataclass
class Comparison:
    """Paired bootstrap resampling (Koehn 2004) between a baseline and a second system, per metric."""

    metric: str
    baseline: float
    baseline_mean: float
    baseline_ci: float  # half-width of the 95% interval around the mean
    system: float
    system_mean: float
    system_ci: float
    p_value: float
    signature: str

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def paired_bootstrap(hyps: Sequence[str], hyps2: Sequence[str], refs: Sequence[Sequence[str]],
                     metrics: Sequence[str] = ("bleu",), options: BleuOptions | None = None,
                     n_samples: int = 1000) -> list[Comparison]:
    """sacrebleu's paired bootstrap test (as `sacrebleu --paired-bs`; seed SACREBLEU_SEED, 12345)."""
    from sacrebleu.significance import PairedTest

    options = options or BleuOptions()
    check_lengths(hyps, refs)
    check_lengths(hyps2, refs, what="the --compare hypothesis")
    objects = {name: make_metric(name, options, refs) for name in metrics}
    test = PairedTest([("baseline", list(hyps)), ("system", list(hyps2))], objects, references=None,
                      test_type="bs", n_samples=n_samples)
    signatures, results = test()
    out = []
    for key, (base, other) in ((k, v) for k, v in results.items() if k != "System"):
        out.append(Comparison(key, float(base.score), float(base.mean), float(base.ci), float(other.score),
                              float(other.mean), float(other.ci), float(other.p_value),
                              signatures[key].format()))
    return out


def check_lengths(hyps: Sequence[str], refs: Sequence[Sequence[str]], what: str = "the hypothesis") -> None:
    """Every reference set must have one line per hypothesis line: else an InputError with both counts."""
    if not refs:
        raise InputError("no reference given", hint="pass at least one reference file")
    for i, ref in enumerate(refs):
        if len(ref) != len(hyps):
            which = "the reference" if len(refs) == 1 else f"reference {i + 1}"
            raise InputError(f"{what} has {len(hyps)} lines but {which} has {len(ref)}",
                             hint="the files must be line-aligned, one segment per line")


# ---------------------------------------------------------------------------------------------
# scoring tokenised text is the most common way to get a wrong BLEU: spot it

_SUBWORD = re.compile(r"@@( |$)|\u2581")
_SPLIT_PUNCT = re.compile(r"\w \.$|\w ,\s|\w 's\b|\w n't\b|\w [?!:;]( |$)|\( \w|\w \)")


def tokenisation_warning(hyps: Sequence[str], sample: int = 2000) -> str | None:
    """A sentence saying why `hyps` look tokenised (sub-word markers, split punctuation), or None."""
    lines = [h for h in hyps[:sample] if h.strip()]
    if not lines:
        return None
    subword = sum(1 for h in lines if _SUBWORD.search(h))
    if subword / len(lines) >= 0.1:
        return (f"{subword} of the first {len(lines)} hypothesis lines hold sub-word markers (@@ or ▁): "
                "BLEU must be computed on detokenised text (undo BPE/SentencePiece first)")
    split = sum(1 for h in lines if _SPLIT_PUNCT.search(h))
    if split / len(lines) >= 0.3:
        return (f"{split} of the first {len(lines)} hypothesis lines have punctuation split off by spaces "
                "(e.g. 'word .'): the hypothesis looks tokenised; score detokenised text and let "
                "--tokenize do the tokenisation")
    return None


# ---------------------------------------------------------------------------------------------
# language models: perplexity, per byte and per word


@dataclass(frozen=True)
class TextSize:
    """The size of a held-out text, counted once from its lines, so that models with different
    tokenizers (char, word, BPE) can be compared per byte and per word (text_size)."""

    tokens: int  # tokens a language model predicts in it: each line's tokens and its newline
    bytes: int  # UTF-8 bytes: each line and its "\n"
    words: int  # whitespace-separated words of each line, plus one per line for its end


def text_size(lines: Iterable[str], tokens: int) -> TextSize:
    """The TextSize of `lines` (read once) as a language model reads them (training.lm.encode: each
    line followed by a newline token), `tokens` being the predicted tokens of that stream (all but the
    first newline, which is context). A line's end counts as one byte and as one word, as the newline
    is a token the model must predict, like the <eos> that word-level perplexities count."""
    nbytes = nwords = 0
    for line in lines:
        nbytes += len(line.encode("utf-8")) + 1
        nwords += len(line.split()) + 1
    return TextSize(tokens, nbytes, nwords)


MAX_LOSS = 700.0  # exp(700) is about 1e304: the largest loss whose perplexity is still a finite float


def perplexity(loss: float) -> float:
    """exp(loss), capped at exp(MAX_LOSS), so that a diverging model reports a huge number, not inf."""
    return math.exp(min(loss, MAX_LOSS))


def lm_scores(nll: float, ntokens: int, char_level: bool = False, size: TextSize | None = None,
              correct: int | None = None) -> dict[str, float]:
    """{loss (nats/token), ppl, bpc for character models} from a summed negative log-likelihood over
    `ntokens` predicted tokens; with `correct` (top-1 predictions) the next-token accuracy, and with
    the text's `size` bits per byte and per-word perplexity.

    Per byte and per word, the loss per token is rescaled by the text's tokens per byte (word):
    bpb = loss / ln 2 · tokens / bytes, word_ppl = exp(loss · tokens / words). When every token of the
    text is scored this is the summed nll over the bytes (words); when only some are (validation
    limited by --eval-batches, the window reading's first window), the scored tokens stand for all."""
    if ntokens <= 0:
        raise InputError("no token to score", hint="the text is too short: it needs at least 2 tokens")
    loss = nll / ntokens
    scores = {"loss": loss, "ppl": perplexity(loss)}
    if correct is not None:
        scores["accuracy"] = correct / ntokens
    if char_level:  # one token per character, newline included
        scores["bpc"] = loss / math.log(2)
    if size is not None and size.bytes and size.words:
        scores["bpb"] = loss / math.log(2) * size.tokens / size.bytes
        scores["word_ppl"] = perplexity(loss * size.tokens / size.words)
    return scores
