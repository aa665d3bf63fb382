"""Several corpora trained on with weights (data.mix, `--mix FILES:WEIGHT`): the spec, and the batch source
that draws each batch from one corpus's own batch source, with probability its weight, whatever the
corpora's sizes.

An epoch of a mixture is as many batches as its corpora hold together (the sum of their epochs); corpus k
gives round(w_k × that) of them, in an order shuffled by (seed, epoch). Corpus k's j-th draw ever is batch
j of its own endless sequence of epochs, so a small corpus with a large weight is read several times per
mixed epoch, a big one with a small weight in part. Everything follows from (seed, epoch, step), like every
tasks.BatchSource: a resumed run continues bit for bit from the trainer's (epoch, index) alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from seqtool.errors import InputError

MIX_HINT = "write --mix FILES:WEIGHT once per corpus, e.g. --mix web.txt:0.7 --mix 'domain/*.txt':0.3"
MIX_SALT = 0x6D6978  # "mix": the order's generator differs from the corpora's own (seed, epoch) ones
# data.valid_tokens' default (training/streams.held_out): validation time and memory stay bounded on big
# corpora, and a held-out text below it (any small corpus) is scored whole, as before; a mean loss over a
# million tokens is far finer than the differences between runs
VALID_TOKENS = 1_000_000


@dataclass(frozen=True)
class MixPart:
    """One corpus of a mixture: its name (in the log and the metrics), its files or globs, and its
    weight, normalized so that the weights of a mixture sum to 1."""

    name: str
    files: tuple[str, ...]
    weight: float


def parse_mix(items: Sequence[str]) -> list[MixPart]:
    """The corpora of data.mix: each item is [NAME=]FILES:WEIGHT, FILES one or more comma-separated files
    or globs, WEIGHT a number > 0 (any scale: 70 and 30 mean 0.7 and 0.3). NAME defaults to the first
    file's name without its extensions. An InputError (exit 2) names the item that is wrong."""
    if len(items) < 2:
        raise InputError(f"data.mix needs two corpora or more, got {len(items)}",
                         hint="pass one corpus as FILES instead; " + MIX_HINT)
    parts: list[tuple[str, tuple[str, ...], float]] = []
    for item in items:
        spec, colon, raw = str(item).rpartition(":")
        if not colon or not spec:
            raise InputError(f"--mix {item!r} has no weight", hint=MIX_HINT)
        try:
            weight = float(raw)
        except ValueError:
            weight = math.nan
        if not 0 < weight < math.inf:
            raise InputError(f"--mix {item!r}: the weight must be a finite number > 0, got {raw!r}",
                             hint=MIX_HINT)
        name, eq, files = spec.partition("=")
        if not eq:
            name, files = "", spec
        paths = tuple(p.strip() for p in files.split(",") if p.strip())
        if not paths:
            raise InputError(f"--mix {item!r} names no file", hint=MIX_HINT)
        if "-" in paths:
            raise InputError(f"--mix {item!r}: a mixed corpus is read from files, not stdin",
                             hint="save the text to a file first")
        name = name.strip() or _default_name(paths[0])
        parts.append((name, paths, weight))
    names = [p[0] for p in parts]
    if len(set(names)) < len(names):  # the metrics need one name per corpus
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"data.mix names two corpora {dup!r}",
                         hint="name them: --mix NAME=FILES:WEIGHT, e.g. --mix web=a/web.txt:0.7")
    total = sum(p[2] for p in parts)
    return [MixPart(name, paths, weight / total) for name, paths, weight in parts]


def describe_mix(items: Sequence[str]) -> list[dict[str, Any]]:
    """The corpora of a recorded data.mix for `seqtool info`: name, files and normalized weight."""
    return [{"name": p.name, "files": list(p.files), "weight": round(p.weight, 6)} for p in parse_mix(items)]


def _default_name(path: str) -> str:
    """'data/web.txt.gz' → 'web', 'domain/*.txt' → 'domain': the last part of the path without a glob."""
    plain = [c for c in path.replace("\\", "/").split("/") if c and not set("*?[") & set(c)]
    return (re.sub(r"[^\w-]", "_", plain[-1].split(".")[0]) if plain else "") or "corpus"


def draws_per_epoch(weights: Sequence[float], steps: int) -> list[int]:
    """round(w_k × steps) for each corpus, by largest remainders so that they sum to `steps`."""
    exact = [w * steps for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda k: (counts[k] - exact[k], k))
    for k in by_remainder[:steps - sum(counts)]:
        counts[k] += 1
    return counts


class MixedBatches:
    """A tasks.BatchSource over the batch sources of several corpora, each batch drawn from corpus k with
    probability weights[k] (the module docstring says how)."""

    def __init__(self, sources: Sequence[Any], weights: Sequence[float], seed: int):
        self.sources, self.seed = list(sources), seed
        self.steps_per_epoch = sum(s.steps_per_epoch for s in self.sources)
        self.draws = draws_per_epoch(weights, self.steps_per_epoch)  # per corpus, per epoch

    def order(self, epoch: int) -> Any:
        """The corpus of each step of `epoch`: a (steps_per_epoch,) LongTensor, seeded by (seed, epoch)."""
        import torch

        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) ^ MIX_SALT)
        corpus = torch.repeat_interleave(torch.arange(len(self.sources)), torch.tensor(self.draws))
        return corpus[torch.randperm(self.steps_per_epoch, generator=generator)]

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        import torch

        order = self.order(epoch)
        before = torch.bincount(order[:start], minlength=len(self.sources)).tolist()
        streams = [self._draws(k, epoch * self.draws[k] + before[k]) for k in range(len(self.sources))]
        for k in order[start:].tolist():
            yield next(streams[k])

    def _draws(self, k: int, first: int) -> Iterator[dict[str, Any]]:
        """Corpus k's batches from its `first`-th draw on, through as many of its own epochs as needed."""
        source = self.sources[k]
        epoch, index = divmod(first, source.steps_per_epoch)
        while True:
            yield from source.batches(epoch, index)
            epoch, index = epoch + 1, 0


def check_text_data(data: Any) -> None:
    """The checks of data.mix and data.valid_tokens, for the data sections of the language-model trainers
    (train-rnn's, train-transformer's): an InputError naming what is wrong."""
    if not 0 <= data.valid_tokens < math.inf:
        raise InputError(f"data.valid_tokens must be ≥ 0 (0: every held-out token), got {data.valid_tokens}")
    if not data.mix:
        return
    parse_mix(data.mix)
    if data.train:
        raise InputError("give the training text either as FILES or as --mix corpora, not both",
                         hint="add FILES to the mixture as one more --mix FILES:WEIGHT")
    if data.valid:
        raise InputError("--valid cannot be used with --mix: each corpus holds out its own last lines",
                         hint="drop --valid, and set the held-out share with --valid-fraction")
