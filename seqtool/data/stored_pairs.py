"""Sentence pairs mapped from the token store. Each side of a parallel corpus is a store entry of its own
(data/store.py, read as "line", or as "tsv:0" / "tsv:1" for one column of a TSV file: each line stripped,
a blank side stored as no tokens at all, not even its separator). StoredPairs picks the pairs of a run
of lines that parallel.encode_pairs would keep, reading their lengths from the line index alone, so that
batching (parallel.ParallelBatches) never lists the pairs in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqtool.data.parallel import line_count_error, skip_report

Progress = Callable[[str], None]


def spans(side: Any) -> Any:
    """(L,) int64: what each line of a side entry (store.StoredCorpus) takes in its token stream — its
    ids and the separator after them, or 0 for a blank line. The stream opens with one separator."""
    import torch

    ends = side.line_ends
    return ends - torch.cat([ends.new_ones(1), ends[:-1]])


@dataclass
class StoredPairs:
    """The kept pairs of two side entries: `lines` (N,) their line numbers in the entries (0-based);
    `skipped` maps each reason to the 1-based numbers of the skipped lines within the run selected."""

    src: Any  # store.StoredCorpus of the source side
    tgt: Any  # store.StoredCorpus of the target side
    lines: Any  # (N,) int64
    eos_id: int
    skipped: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lines)

    def lengths(self) -> tuple[Any, Any]:
        """(N,) source lengths (ids + </s>) and (N,) target lengths (ids alone), as EncodedPairs.lengths."""
        return spans(self.src)[self.lines], spans(self.tgt)[self.lines] - 1

    def longest(self) -> int:
        """The longest side of any pair, in tokens (the source with its </s>)."""
        src_len, tgt_len = self.lengths()
        return max(int(src_len.max()), int(tgt_len.max())) if len(self) else 0

    def rows(self, index: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
        """The ids of pairs `index`: the source followed by </s>, the target without specials."""
        lines = self.lines[list(index)]
        return ([ids + [self.eos_id] for ids in _ids(self.src, lines)], _ids(self.tgt, lines))

    def report(self, where: str, limit: int = 10) -> list[str]:
        return skip_report(self.skipped, where, limit)


def _ids(side: Any, lines: Any) -> list[list[int]]:
    """The ids of `lines` ((n,) int64) of a side entry, without their separators."""
    import torch

    ends = side.line_ends[lines]
    starts = torch.where(lines > 0, side.line_ends[(lines - 1).clamp(min=0)], 1)
    return [side.tokens[a:b - 1].tolist() for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def select(src: Any, tgt: Any, first: int, last: int, max_len: int, eos_id: int) -> StoredPairs:
    """The pairs of lines [first, last) of the side entries that parallel.encode_pairs keeps: pairs with
    an empty side or a side longer than `max_len` tokens (with its </s>; 0: no limit) are skipped, and
    listed under the same reasons, in the order encode_pairs meets them."""
    import torch

    s, t = spans(src)[first:last], spans(tgt)[first:last]  # a span counts the ids and one more
    empty_src = s == 0
    empty_tgt = ~empty_src & (t == 0)
    too_long = ~empty_src & ~empty_tgt & ((s > max_len) | (t > max_len)) if max_len else torch.zeros_like(
        empty_src)
    found = []
    for reason, mask in (("an empty source", empty_src), ("an empty target", empty_tgt),
                         (f"more than {max_len} tokens (--max-len)", too_long)):
        numbers = mask.nonzero().flatten() + 1
        if len(numbers):
            found.append((int(numbers[0]), reason, numbers))
    kept = ~(empty_src | empty_tgt | too_long)
    return StoredPairs(src, tgt, kept.nonzero().flatten() + first, eos_id,
                       {reason: numbers for _, reason, numbers in sorted(found, key=lambda f: f[0])})


# ---------------------------------------------------------------------------------------------
# building


def count_pairs(pair_sides: list[tuple[str, str]]) -> int:
    """The number of pairs of parallel.sides' (file, reading) pairs, counted in bytes (no decoding);
    two files of other line counts are an error here."""
    from seqtool.data.store_build import count_lines

    (src, _), (tgt, _) = pair_sides
    n = count_lines([src])
    if tgt != src and (m := count_lines([tgt])) != n:
        raise line_count_error(src, n, tgt, m)
    return n


def ensure_sides(root: str | Path, pair_sides: list[tuple[str, str]], sources: list[dict],
                 toks: tuple[Any, Any], encoding_errors: str = "strict", writer: bool = True,
                 progress: Progress | None = None) -> tuple[Any, Any]:
    """The store entries (store.StoredCorpus) of the source and the target side in the store directory
    `root`, each built first if missing (store.ensure_corpus: by the `writer`, the other DDP ranks wait);
    `sources` are the two files' {path, bytes, sha256}. Line counts are compared before a build (in
    bytes) and after (in lines), and a difference is one error naming both files."""
    from seqtool.data.store import MANIFEST, corpus_key, ensure_corpus, entry_path, tokenizer_hash

    root = Path(root)
    hashes = [tokenizer_hash(tok) for tok in toks]
    present = [(entry_path(root, corpus_key([source], digest, encoding_errors, reading)) / MANIFEST).is_file()
               for source, digest, (_, reading) in zip(sources, hashes, pair_sides, strict=True)]
    if writer and not all(present):
        count_pairs(pair_sides)  # before encoding anything
    entries = []
    for (path, reading), source, tok, name in zip(pair_sides, sources, toks, ("source", "target"),
                                                  strict=True):
        entry, built = ensure_corpus(root, [path], [source], tok, encoding_errors, writer=writer,
                                     progress=progress, reading=reading)
        if progress is not None:
            progress(f"token store: {'built' if built else 'reusing'} {entry.path} "
                     f"({entry.manifest['tokens']:,} {name} tokens, {entry.lines:,} lines)")
        entries.append(entry)
    (src_path, _), (tgt_path, _) = pair_sides
    if entries[0].lines != entries[1].lines:
        raise line_count_error(src_path, entries[0].lines, tgt_path, entries[1].lines)
    return entries[0], entries[1]
