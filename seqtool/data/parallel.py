"""Parallel corpora: line-aligned source/target files or one TSV, filtered with a report, and
length-bucketed batches under a token budget that a resumed run can re-enter at (epoch, index).
"""

from __future__ import annotations

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

    sides(src, tgt, tsv)
    if tsv is not None:
        pairs = list(iter_pairs(src, tgt, tsv, encoding_errors))
        return ParallelText([s for s, _ in pairs], [t for _, t in pairs], tsv)
    assert src is not None and tgt is not None
    src_lines = [s.strip() for s in iter_lines(src, encoding_errors=encoding_errors)]
    tgt_lines = [t.strip() for t in iter_lines(tgt, encoding_errors=encoding_errors)]
    if len(src_lines) != len(tgt_lines):
        raise line_count_error(src, len(src_lines), tgt, len(tgt_lines))
    return ParallelText(src_lines, tgt_lines, f"{src} + {tgt}")


def sides(src: str | None, tgt: str | None, tsv: str | None) -> list[tuple[str, str]]:
    """(file, how the token store reads it: store.READINGS) of the source and the target side: two
    line-aligned files, or the two columns of one TSV file."""
    if tsv is not None:
        if src is not None or tgt is not None:
            raise InputError("pass either --tsv or --src/--tgt, not both")
        return [(tsv, "tsv:0"), (tsv, "tsv:1")]
    if src is None or tgt is None:
        raise InputError("parallel data needs --src and --tgt (or --tsv)")
    return [(src, "line"), (tgt, "line")]


def iter_pairs(src: str | None, tgt: str | None, tsv: str | None, encoding_errors: str = "strict"
               ) -> Iterator[tuple[str, str]]:
    """The (source, target) pairs, stripped, streamed (line counts are not compared here)."""
    from seqtool.data.io import iter_lines

    if tsv is not None:
        return (tsv_columns(line, tsv, n) for n, line in enumerate(iter_lines(tsv, encoding_errors), 1))
    assert src is not None and tgt is not None
    return ((s.strip(), t.strip()) for s, t in zip(iter_lines(src, encoding_errors),
                                                   iter_lines(tgt, encoding_errors), strict=False))


def line_count_error(src: str, src_lines: int, tgt: str, tgt_lines: int) -> InputError:
    return InputError(f"{src} has {src_lines} lines but {tgt} has {tgt_lines}",
                      hint="source and target files must be line-aligned, one sentence per line")


def tsv_columns(line: str, path: str, n: int) -> tuple[str, str]:
    """(source, target) of TSV line `n` of `path`, each stripped; an InputError naming path:n if the
    line is not two tab-separated columns."""
    if "\t" not in line:
        raise InputError(f"{path}:{n}: no tab between source and target",
                         hint="a TSV line is source<TAB>target")
    if (columns := line.count("\t") + 1) > 2:
        raise InputError(f"{path}:{n}: {columns} tab-separated columns, not 2",
                         hint="a TSV line is source<TAB>target; remove the extra tabs")
    s, t = line.split("\t")
    return s.strip(), t.strip()


def held_out(n: int, fraction: float, where: str) -> int:
    """How many of `n` pairs the last `fraction` holds out for validation (at least one)."""
    k = max(1, int(round(n * fraction)))
    if n - k < 1:
        raise InputError(f"{where}: {n} pairs are too few to hold out a validation set",
                         hint="pass --valid-src/--valid-tgt, or more data")
    return k


def split_off(text: ParallelText, fraction: float) -> tuple[ParallelText, ParallelText]:
    """Hold out the last `fraction` of the pairs (at least one) for validation."""
    k = held_out(len(text.src), fraction, text.where)
    return (ParallelText(text.src[:-k], text.tgt[:-k], text.where),
            ParallelText(text.src[-k:], text.tgt[-k:], f"the last {k} pairs of {text.where}"))


@dataclass
class EncodedPairs:
    """Token ids of the kept pairs, and which input lines were skipped and why (1-based)."""

    src: list[list[int]]
    tgt: list[list[int]]
    kept: list[int]  # input line numbers of the kept pairs
    skipped: dict[str, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.src)

    def lengths(self) -> tuple[Any, Any]:
        """(N,) source lengths (with </s>) and (N,) target lengths (without specials), int64 tensors."""
        import torch

        return (torch.tensor([len(s) for s in self.src], dtype=torch.long),
                torch.tensor([len(t) for t in self.tgt], dtype=torch.long))

    def longest(self) -> int:
        """The longest side of any pair, in tokens (the source with its </s>)."""
        return max((len(s) for s in (*self.src, *self.tgt)), default=0)

    def rows(self, index: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
        """The source and target ids of pairs `index`."""
        return [self.src[i] for i in index], [self.tgt[i] for i in index]

    def report(self, where: str, limit: int = 10) -> list[str]:
        return skip_report(self.skipped, where, limit)


def skip_report(skipped: dict[str, Any], where: str, limit: int = 10) -> list[str]:
    """Log lines naming every reason for skipping pairs, its count and the first `limit` line numbers."""
    lines = []
    for reason, numbers in skipped.items():
        shown = ", ".join(str(int(n)) for n in numbers[:limit]) + (", …" if len(numbers) > limit else "")
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
    """Length-bucketed batches with a token budget (training.tasks.BatchSource), over any pairs with
    `lengths()` and `rows(index)` (EncodedPairs in memory, data.stored_pairs.StoredPairs mapped from
    the token store), so that no epoch lists the pairs in Python.

    Each epoch shuffles the pairs with a generator seeded by (seed, epoch), sorts them stably by
    length (so equal lengths stay shuffled), cuts batches of at most `batch_tokens` padded tokens
    (source or target, whichever is longer), and shuffles the batch order. The lengths alone decide
    where batches are cut, so the cut is computed once and every epoch has the same number of batches.
    """

    def __init__(self, data: Any, batch_tokens: int, pad_id: int, bos_id: int, eos_id: int,
                 seed: int = 0, shuffle: bool = True, max_batch_size: int = 0):
        import torch

        if not len(data):
            raise InputError("no training pairs are left after filtering",
                             hint="check the data, or raise --max-len")
        self.data, self.batch_tokens, self.seed, self.shuffle = data, batch_tokens, seed, shuffle
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        src_len, tgt_len = data.lengths()
        size = torch.maximum(src_len, tgt_len + 1)  # (N,) padded width of each pair
        if (longest := int(size.max())) > batch_tokens:
            raise InputError(f"--batch-tokens {batch_tokens} is below the longest pair ({longest} tokens)",
                             hint="raise --batch-tokens or lower --max-len")
        span = int(tgt_len.max()) + 1
        self.key = src_len * span + tgt_len  # (N,) sorts as (source length, target length)
        if (top := int(self.key.max()) + 1) <= 1 << 24:  # counted: much faster than unique's sort
            counts = torch.bincount(self.key, minlength=top)
            keys = counts.nonzero().flatten()
            counts = counts[keys]
        else:
            keys, counts = torch.unique(self.key, return_counts=True)  # sorted: runs of equal lengths
        sizes = torch.maximum(keys // span, keys % span + 1)
        rows = cut(sizes.tolist(), counts.tolist(), batch_tokens, max_batch_size)
        self.ends = torch.tensor(rows, dtype=torch.long).cumsum(0)  # (batches,) in the sorted order
        self.steps_per_epoch = len(rows)

    def batch_rows(self, epoch: int, start: int = 0) -> Iterator[list[int]]:
        """The pair indices of each batch of `epoch` from batch `start` on, in training order."""
        import torch

        n = len(self.key)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        order = order[torch.sort(self.key[order], stable=True).indices]
        ends = self.ends.tolist()
        batch_order = (torch.randperm(self.steps_per_epoch, generator=generator) if self.shuffle
                       else torch.arange(self.steps_per_epoch))
        for b in batch_order[start:].tolist():
            yield order[ends[b - 1] if b else 0:ends[b]].tolist()

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        for index, rows in enumerate(self.batch_rows(epoch, start), start):
            src, tgt = self.data.rows(rows)
            batch = make_batch(src, tgt, self.pad_id, self.bos_id, self.eos_id)
            batch["batch_number"] = epoch * self.steps_per_epoch + index
            yield batch


def cut(sizes: Sequence[int], counts: Sequence[int], batch_tokens: int, max_batch_size: int = 0) -> list[int]:
    """How many pairs each batch takes, over pairs sorted by length given as runs (`counts[i]` pairs
    of padded width `sizes[i]`): a batch takes the next pair while its rows times its widest pair stay
    within `batch_tokens` (and its rows within `max_batch_size`, if set). Run by run, not pair by pair."""
    rows: list[int] = []
    current, widest = 0, 0
    for size, count in zip(sizes, counts, strict=True):
        while count:
            if current:
                wide = max(widest, size)
                fits = batch_tokens // wide
                if max_batch_size:
                    fits = min(fits, max_batch_size)
                if (take := min(count, fits - current)) > 0:
                    current, widest, count = current + take, wide, count - take
                if not count:
                    break
                rows.append(current)
            current, widest, count = 1, size, count - 1  # a new batch opens with the next pair
    if current:
        rows.append(current)
    return rows
