"""Parallel corpora: line-aligned source/target files or one TSV, filtered with a report, and
length-bucketed batches under a token budget that a resumed run can re-enter at (epoch, index).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from seqtool.errors import InputError


@dataclass
class ParallelText:
    """Raw sentence pairs, in file order (line numbers are 1-based positions in the input)."""

    src: list[str]
    tgt: list[str]
    where: str  # "a.en + a.fr" or "pairs.tsv", for messages


def read_parallel(src: str | None = None, tgt: str | None = None, tsv: str | None = None,
                  encoding_errors: str = "strict") -> ParallelText:
    """Two line-aligned files, or one TSV of `source<TAB>target` lines."""
    from seqtool.data.io import iter_lines

    if tsv is not None:
        if src is not None or tgt is not None:
            raise InputError("pass either --tsv or --src/--tgt, not both")
        pairs_src, pairs_tgt = [], []
        for n, line in enumerate(iter_lines(tsv, encoding_errors=encoding_errors), 1):
            if "\t" not in line:
                raise InputError(f"{tsv}:{n}: no tab between source and target",
                                 hint="a TSV line is source<TAB>target")
            if (columns := line.count("\t") + 1) > 2:
                raise InputError(f"{tsv}:{n}: {columns} tab-separated columns, not 2",
                                 hint="a TSV line is source<TAB>target; remove the extra tabs")
            s, t = line.split("\t")
            pairs_src.append(s.strip())
            pairs_tgt.append(t.strip())
        return ParallelText(pairs_src, pairs_tgt, tsv)
    if src is None or tgt is None:
        raise InputError("parallel data needs --src and --tgt (or --tsv)")
    src_lines = [s.strip() for s in iter_lines(src, encoding_errors=encoding_errors)]
    tgt_lines = [t.strip() for t in iter_lines(tgt, encoding_errors=encoding_errors)]
    if len(src_lines) != len(tgt_lines):
        raise InputError(f"{src} has {len(src_lines)} lines but {tgt} has {len(tgt_lines)}",
                         hint="source and target files must be line-aligned, one sentence per line")
    return ParallelText(src_lines, tgt_lines, f"{src} + {tgt}")


def split_off(text: ParallelText, fraction: float) -> tuple[ParallelText, ParallelText]:
    """Hold out the last `fraction` of the pairs (at least one) for validation."""
    n = len(text.src)
    k = max(1, int(round(n * fraction)))
    if n - k < 1:
        raise InputError(f"{text.where}: {n} pairs are too few to hold out a validation set",
                         hint="pass --valid-src/--valid-tgt, or more data")
    return (ParallelText(text.src[:-k], text.tgt[:-k], text.where),
            ParallelText(text.src[-k:], text.tgt[-k:], f"the last {k} pairs of {text.where}"))


@dataclass
class EncodedPairs:
    """Token ids of the kept pairs, and which input lines were skipped and why (1-based)."""

    src: list[list[int]]
    tgt: list[list[int]]
    kept: list[int]  # input line numbers of the kept pairs
    skipped: dict[str, list[int]] = field(default_factory=dict)

    def report(self, where: str, limit: int = 10) -> list[str]:
        """Log lines naming every reason, its count and the first `limit` line numbers."""
        lines = []
        for reason, numbers in self.skipped.items():
            shown = ", ".join(map(str, numbers[:limit])) + (", …" if len(numbers) > limit else "")
            lines.append(f"{where}: skipped {len(numbers)} pair(s) with {reason} (lines {shown})")
        return lines


def encode_pairs(text: ParallelText, src_tok: Any, tgt_tok: Any, max_len: int = 0) -> EncodedPairs:
    """Encode both sides (source + </s>; the target without specials). Pairs with an empty side or a
    side longer than `max_len` tokens (0: no limit) are skipped and counted, never dropped silently."""
    src_ids = src_tok.encode_batch(text.src) if hasattr(src_tok, "encode_batch") else [
        src_tok.encode(s) for s in text.src]
    tgt_ids = tgt_tok.encode_batch(text.tgt) if hasattr(tgt_tok, "encode_batch") else [
        tgt_tok.encode(t) for t in text.tgt]
    out = EncodedPairs([], [], [])
    for n, (s_raw, t_raw, s, t) in enumerate(zip(text.src, text.tgt, src_ids, tgt_ids, strict=True), 1):
        reason = None
        if not s_raw.strip():
            reason = "an empty source"
        elif not t_raw.strip():
            reason = "an empty target"
        elif max_len and (len(s) + 1 > max_len or len(t) + 1 > max_len):
            reason = f"more than {max_len} tokens (--max-len)"
        if reason:
            out.skipped.setdefault(reason, []).append(n)
            continue
        out.src.append([*s, src_tok.eos_id])
        out.tgt.append(list(t))
        out.kept.append(n)
    return out


# ---------------------------------------------------------------------------------------------
# batching


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> Any:
    """Right-pad lists of ids into a (B, max_len) LongTensor."""
    import torch

    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def make_batch(src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], pad_id: int, bos_id: int,
               eos_id: int) -> dict[str, Any]:
    """{"src" (B, S), "src_mask" (B, S), "tgt_in" (B, T) <s> y…, "tgt_out" (B, T) y… </s>, "ntokens",
    "row_tokens" (B,): the target tokens of each row}."""
    import torch

    src_ids = pad_batch(src, pad_id)
    row_tokens = torch.tensor([len(t) + 1 for t in tgt], dtype=torch.long)
    return {"src": src_ids, "src_mask": src_ids != pad_id,
            "tgt_in": pad_batch([[bos_id, *t] for t in tgt], pad_id),
            "tgt_out": pad_batch([[*t, eos_id] for t in tgt], pad_id),
            "ntokens": int(row_tokens.sum()), "row_tokens": row_tokens}


class ParallelBatches:
    """Length-bucketed batches with a token budget (training.tasks.BatchSource).

    Each epoch shuffles the pairs with a seed derived from (seed, epoch), sorts them stably by
    length (so equal lengths stay shuffled), cuts batches of at most `batch_tokens` padded tokens
    (source or target, whichever is longer), and shuffles the batch order. The lengths alone decide
    where batches are cut, so every epoch has the same number of batches.
    """

    def __init__(self, data: EncodedPairs, batch_tokens: int, pad_id: int, bos_id: int, eos_id: int,
                 seed: int = 0, shuffle: bool = True, max_batch_size: int = 0):
        if not data.src:
            raise InputError("no training pairs are left after filtering",
                             hint="check the data, or raise --max-len")
        self.data, self.batch_tokens, self.seed, self.shuffle = data, batch_tokens, seed, shuffle
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.max_batch_size = max_batch_size
        longest = max(self._size(i) for i in range(len(data.src)))
        if longest > batch_tokens:
            raise InputError(f"--batch-tokens {batch_tokens} is below the longest pair ({longest} tokens)",
                             hint="raise --batch-tokens or lower --max-len")
        self.steps_per_epoch = len(self._batches(0))

    def _size(self, i: int) -> int:
        return max(len(self.data.src[i]), len(self.data.tgt[i]) + 1)

    def _batches(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.data.src)))
        rng = random.Random(f"{self.seed}:{epoch}")
        if self.shuffle:
            rng.shuffle(order)
        order.sort(key=lambda i: (len(self.data.src[i]), len(self.data.tgt[i])))
        batches, current, longest = [], [], 0
        for i in order:
            size = max(longest, self._size(i))
            full = self.max_batch_size and len(current) >= self.max_batch_size
            if current and (size * (len(current) + 1) > self.batch_tokens or full):
                batches.append(current)
                current, size = [], self._size(i)
            current.append(i)
            longest = size
        if current:
            batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        for index, rows in enumerate(self._batches(epoch)[start:], start):
            batch = make_batch([self.data.src[i] for i in rows], [self.data.tgt[i] for i in rows],
                               self.pad_id, self.bos_id, self.eos_id)
            batch["batch_number"] = epoch * self.steps_per_epoch + index
            yield batch
