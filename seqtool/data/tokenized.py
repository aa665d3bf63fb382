"""Tokenized text as lines: the formats `seqtool tokenize` writes and reads, and corpus statistics.

One output line per input line, produced `BATCH_LINES` at a time so sentencepiece's batch encoder
does the work and memory stays constant.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from seqtool.data.io import batches
from seqtool.data.tokenizers import BATCH_LINES, Tokenizer
from seqtool.errors import InputError

FORMATS = ("pieces", "ids", "jsonl")


@dataclass
class StreamStats:
    """What a tokenize run saw: filled in while its output streams."""

    lines: int = 0
    tokens: int = 0
    unk: int = 0
    unknown: Counter = field(default_factory=Counter)  # the characters or words that became <unk>


def encode_lines(tok: Tokenizer, lines: Iterable[str], fmt: str = "pieces", add_bos: bool = False,
                 add_eos: bool = False, stats: StreamStats | None = None) -> Iterator[str]:
    """Text chunks holding one line per input line: space-separated pieces or ids, or JSON objects
    {"ids": [...], "pieces": [...]}. Each chunk ends with a newline."""
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    stats = stats if stats is not None else StreamStats()
    unk = tok.unk_id
    for batch in batches(lines, BATCH_LINES):
        ids = tok.encode_batch(batch, add_bos, add_eos)
        stats.lines += len(batch)
        stats.tokens += sum(map(len, ids))
        unk_counts = [row.count(unk) for row in ids]
        if any(unk_counts):
            stats.unk += sum(unk_counts)
            for line, n in zip(batch, unk_counts, strict=True):
                if n:
                    stats.unknown.update(tok.unknown(line))
        if fmt == "ids":
            rows = [" ".join(map(str, row)) for row in ids]
        else:
            pieces = tok.encode_pieces_batch(batch, add_bos, add_eos)
            if fmt == "pieces":
                rows = [" ".join(row) for row in pieces]
            else:
                rows = [json.dumps({"ids": i, "pieces": p}, ensure_ascii=False)
                        for i, p in zip(ids, pieces, strict=True)]
        yield "\n".join(rows) + "\n"


def decode_lines(tok: Tokenizer, lines: Iterable[str], source: str = "ids") -> Iterator[str]:
    """The inverse of `encode_lines`: reads lines of ids, pieces or jsonl and yields text chunks."""
    if source not in FORMATS:
        raise InputError(f"--from must be one of {', '.join(FORMATS)}, not {source!r}")
    lineno = 0
    for batch in batches(lines, BATCH_LINES):
        texts = []
        for line in batch:
            lineno += 1
            if source == "pieces":
                texts.append(tok.decode_pieces(line.split(" ") if line else []))
            else:
                texts.append(tok.decode(_parse_ids(line, lineno, source)))
        yield "\n".join(texts) + "\n"


def _parse_ids(line: str, lineno: int, source: str) -> list[int]:
    try:
        if source == "ids":
            return [int(x) for x in line.split()]
        ids = json.loads(line)["ids"]
        if isinstance(ids, list) and all(type(i) is int for i in ids):
            return ids
    except (ValueError, TypeError, KeyError):
        pass
    want = "space-separated token ids" if source == "ids" else 'a JSON object with "ids"'
    shown = line if len(line) <= 40 else line[:40] + "…"
    raise InputError(f"input line {lineno}: expected {want}, got {shown!r}",
                     hint=f"decode what `seqtool tokenize --format {source}` wrote, with --from {source}")


def corpus_stats(tok: Tokenizer, lines: Iterable[str], top: int = 10) -> dict:
    """Vocabulary size, token and <unk> counts over `lines`, and the `top` most frequent pieces."""
    counts: Counter = Counter()
    n_lines = 0
    for batch in batches(lines, BATCH_LINES):
        n_lines += len(batch)
        counts.update(itertools.chain.from_iterable(tok.encode_batch(batch)))
    tokens = sum(counts.values())
    return {
        "kind": tok.kind, "vocab_size": tok.vocab_size, "lines": n_lines, "tokens": tokens,
        "unk": counts[tok.unk_id], "unk_rate": counts[tok.unk_id] / tokens if tokens else 0.0,
        "top": [{"piece": tok.id_to_piece(i), "id": i, "count": c} for i, c in counts.most_common(top)],
    }
