"""BART's noise functions (Lewis et al., 2020, §2.2) for denoising pretraining of an encoder-decoder:
token masking, token deletion, text infilling (a span of Poisson(λ) length → one <mask>) and sentence
permutation. Each takes one example, a list of sentences of token ids, and a seeded random.Random, and
returns the noised token ids; `DenoisingBatches` noises the examples of each batch afresh every epoch,
deterministically from (seed, epoch, batch), so a resumed run sees the same corruption.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from seqtool.config import check_positive
from seqtool.errors import InputError

NOISES = ("mask", "delete", "infill", "permute")


@dataclass
class NoiseConfig:
    """train-transformer --objective denoise: which noise functions run, in BART's order (permute the
    sentences, then corrupt tokens), and how much."""

    functions: list[str] = field(default_factory=lambda: ["infill", "permute"])  # BART's best pair (§5.1)
    ratio: float = 0.3  # share of the tokens masked, deleted or covered by infilled spans
    span_lambda: float = 3.0  # infilling: span lengths ~ Poisson(λ)

    def __post_init__(self) -> None:
        for name in self.functions:
            if name not in NOISES:
                raise InputError(f"--noise {name!r} is not one of {', '.join(NOISES)}")
        if not self.functions:
            raise InputError("--noise needs at least one of " + ", ".join(NOISES))
        if not 0.0 <= self.ratio < 1.0:
            raise InputError(f"noise.ratio must be in [0, 1), got {self.ratio}")
        check_positive("noise.span_lambda", self.span_lambda)


def permute_sentences(sentences: Sequence[Sequence[int]], rng: random.Random) -> list[list[int]]:
    """The same sentences in a random order."""
    order = list(range(len(sentences)))
    rng.shuffle(order)
    return [list(sentences[i]) for i in order]


def mask_tokens(ids: Sequence[int], ratio: float, mask_id: int, rng: random.Random) -> list[int]:
    """Each token becomes <mask> with probability `ratio`; the length is kept."""
    return [mask_id if rng.random() < ratio else t for t in ids]


def delete_tokens(ids: Sequence[int], ratio: float, rng: random.Random) -> list[int]:
    """Each token is dropped with probability `ratio`; the rest keep their order (the model must find
    where the gaps are)."""
    return [t for t in ids if rng.random() >= ratio]


def poisson(lam: float, rng: random.Random) -> int:
    """A Poisson(λ) draw (Knuth's multiplication method: fine for BART's small λ)."""
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def infill(ids: Sequence[int], ratio: float, lam: float, mask_id: int, rng: random.Random) -> list[int]:
    """Text infilling: spans with Poisson(λ) lengths covering round(ratio · len) tokens are each
    replaced by ONE <mask>, so the model must also learn how many tokens are missing; a span of
    length 0 inserts a <mask>. Spans never touch: a kept token stands between any two."""
    target = round(ratio * len(ids))
    lengths: list[int] = []
    while sum(lengths) < target:
        lengths.append(poisson(lam, rng))
    if lengths:
        lengths[-1] -= sum(lengths) - target  # cover exactly `target` tokens
    free = len(ids) - target  # the kept tokens; a span goes before one of them, or at the end
    lengths = lengths[:free + 1]  # more spans than slots (many of length 0): fewer spans
    free = len(ids) - sum(lengths)
    spans = dict(zip(sorted(rng.sample(range(free + 1), len(lengths))), lengths, strict=True))
    out, i = [], 0
    for slot in range(free + 1):
        if slot in spans:
            out.append(mask_id)
            i += spans[slot]
        if slot < free:
            out.append(ids[i])
            i += 1
    return out


def noise_example(sentences: Sequence[Sequence[int]], cfg: NoiseConfig, mask_id: int, sep_id: int,
                  rng: random.Random) -> list[int]:
    """One example's noised token ids: sentences permuted (if asked) and joined by `sep_id`, then the
    token noises in the order given."""
    if "permute" in cfg.functions:
        sentences = permute_sentences(sentences, rng)
    ids = join(sentences, sep_id)
    for name in cfg.functions:
        if name == "mask":
            ids = mask_tokens(ids, cfg.ratio, mask_id, rng)
        elif name == "delete":
            ids = delete_tokens(ids, cfg.ratio, rng)
        elif name == "infill":
            ids = infill(ids, cfg.ratio, cfg.span_lambda, mask_id, rng)
    return ids


def join(sentences: Sequence[Sequence[int]], sep_id: int) -> list[int]:
    """Sentences as one token sequence, separated by `sep_id` (the newline)."""
    out: list[int] = []
    for n, sentence in enumerate(sentences):
        if n:
            out.append(sep_id)
        out.extend(sentence)
    return out


def pack(lines: Sequence[Sequence[int]], max_tokens: int) -> list[list[list[int]]]:
    """Consecutive sentences packed into examples of at most `max_tokens` tokens (with separators);
    a sentence longer than that is cut."""
    examples: list[list[list[int]]] = []
    current: list[list[int]] = []
    size = 0
    for line in lines:
        line = list(line[:max_tokens])
        if not line:
            continue
        if current and size + 1 + len(line) > max_tokens:
            examples.append(current)
            current, size = [], 0
        size += len(line) + (1 if current else 0)
        current.append(line)
    if current:
        examples.append(current)
    return examples


class DenoisingBatches:
    """Batches of (noised example → the example) pairs, for the encoder-decoder's translation batch
    format (trainer.BatchSource). The clean examples decide the batches (ParallelBatches' length
    buckets under a token budget, the same every epoch); each batch's sources are noised with a
    random.Random seeded by (seed, epoch, batch index)."""

    def __init__(self, examples: list[list[list[int]]], cfg: NoiseConfig, batch_tokens: int, tok: Any,
                 seed: int, max_len: int, shuffle: bool = True):
        from seqtool.data.parallel import EncodedPairs, ParallelBatches

        self.examples, self.cfg, self.tok, self.seed, self.max_len = examples, cfg, tok, seed, max_len
        clean = [join(e, tok.newline_id) for e in examples]
        # batches are cut by the clean lengths: noise changes a source's length little (deletion and
        # infilling shorten it, a 0-length span adds one <mask>)
        pairs = EncodedPairs([[*c, tok.eos_id] for c in clean], clean, list(range(1, len(clean) + 1)))
        self.inner = ParallelBatches(pairs, batch_tokens, tok.pad_id, tok.bos_id, tok.eos_id, seed=seed,
                                     shuffle=shuffle)
        self.steps_per_epoch = self.inner.steps_per_epoch

    def noised(self, rows: list[int], rng: random.Random) -> list[list[int]]:
        """The noised sources of the examples `rows`, each cut to fit max_len with its </s>."""
        return [[*noise_example(self.examples[i], self.cfg, self.tok.mask_id, self.tok.newline_id, rng)
                 [:self.max_len - 1], self.tok.eos_id] for i in rows]

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        from seqtool.data.parallel import make_batch

        for index, rows in enumerate(self.inner.batch_rows(epoch, start), start):
            rng = random.Random(f"{self.seed}:{epoch}:{index}")
            batch = make_batch(self.noised(rows, rng), [self.inner.data.tgt[i] for i in rows],
                               self.tok.pad_id, self.tok.bos_id, self.tok.eos_id)
            batch["batch_number"] = epoch * self.steps_per_epoch + index
            yield batch
