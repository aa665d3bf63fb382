"""A smoothed n-gram language model over token ids, in pure Python: the baseline that `evaluate
--baseline ngram` reports beside a network's perplexity, on the same tokens.

Interpolated Kneser–Ney (Kneser & Ney 1995; the interpolated form of Chen & Goodman 1998, §3.5) with
one absolute discount per order, or add-k smoothing at the longest context seen in training.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

from seqtool.errors import InputError

SMOOTHINGS = ("kn", "addk")
Gram = tuple[int, ...]


class NGramLM:
    """P(w | the previous order − 1 tokens), trained on one token stream (`fit`)."""

    def __init__(self, order: int, vocab_size: int, smoothing: str = "kn", k: float = 0.1):
        if order < 1:
            raise InputError(f"--order must be ≥ 1, got {order}")
        if smoothing not in SMOOTHINGS:
            raise InputError(f"--smoothing must be one of {', '.join(SMOOTHINGS)}; got {smoothing!r}")
        if smoothing == "addk" and not 0 < k < float("inf"):  # (NaN fails every comparison)
            raise InputError(f"--add-k must be a finite number > 0, got {k}")
        self.order, self.vocab_size, self.smoothing, self.k = order, vocab_size, smoothing, k
        # per order n (1..order): gram → count, context → total count, context → distinct next tokens
        self.counts: list[dict[Gram, int]] = [{} for _ in range(order + 1)]
        self.totals: list[dict[Gram, int]] = [{} for _ in range(order + 1)]
        self.types: list[dict[Gram, int]] = [{} for _ in range(order + 1)]
        self.discount = [0.0] * (order + 1)

    def fit(self, ids: Sequence[int]) -> NGramLM:
        ids = list(ids)
        if len(ids) < 2:
            raise InputError("the n-gram baseline needs at least 2 training tokens")
        n = self.order
        # raw[m]: the m-grams (zip stops at the shortest slice, so every gram is complete)
        raw = [Counter(zip(*(ids[i:] for i in range(m)), strict=False)) for m in range(n + 1)]
        for m in range(1, n + 1):
            if self.smoothing == "kn" and m < n:
                # Kneser–Ney: lower orders count the distinct tokens that precede a gram (its
                # "continuation" count), not how often it occurs.
                counts: dict[Gram, int] = Counter(gram[1:] for gram in raw[m + 1])
            else:
                counts = dict(raw[m])
            totals: dict[Gram, int] = defaultdict(int)
            types: dict[Gram, int] = defaultdict(int)
            for gram, c in counts.items():
                totals[gram[:-1]] += c
                types[gram[:-1]] += 1
            self.counts[m], self.totals[m], self.types[m] = counts, dict(totals), dict(types)
            # Ney, Essen & Kneser (1994): D = n1 / (n1 + 2 n2), from the counts of counts
            n1 = sum(1 for c in counts.values() if c == 1)
            n2 = sum(1 for c in counts.values() if c == 2)
            self.discount[m] = min(max(n1 / (n1 + 2 * n2), 0.05), 0.95) if n1 and n2 else 0.75
        return self

    def prob(self, context: Gram, token: int) -> float:
        """P(token | context); only the last order − 1 tokens of context matter."""
        context = context[len(context) - self.order + 1:] if self.order > 1 else ()
        if self.smoothing == "addk":
            return self._addk(context, token)
        return self._kn(context, token)

    def _kn(self, context: Gram, token: int) -> float:
        m = len(context) + 1
        lower = self._kn(context[1:], token) if m > 1 else 1.0 / self.vocab_size
        total = self.totals[m].get(context, 0)
        if not total:
            return lower
        d = self.discount[m]
        count = self.counts[m].get((*context, token), 0)
        return max(count - d, 0.0) / total + d * self.types[m][context] / total * lower

    def _addk(self, context: Gram, token: int) -> float:
        while context and not self.totals[len(context) + 1].get(context):
            context = context[1:]  # back off to the longest context seen in training
        m = len(context) + 1
        count = self.counts[m].get((*context, token), 0)
        return (count + self.k) / (self.totals[m].get(context, 0) + self.k * self.vocab_size)

    def nll(self, ids: Sequence[int]) -> tuple[float, int]:
        """(summed negative log-likelihood in nats, tokens predicted) of ids[1:], each given the ones
        before it, as the networks are scored."""
        ids = list(ids)
        total = 0.0
        for i in range(1, len(ids)):
            total -= math.log(self.prob(tuple(ids[max(0, i - self.order + 1):i]), ids[i]))
        return total, max(len(ids) - 1, 0)
