"""The sentence pairs a translation model trains and validates on (train-seq2seq, train-transformer --arch
encoder-decoder): mapped from the token store (data/store.py, one entry per side; data/stored_pairs.py)
when the data are files, so the pairs are tokenized once — not again on a resume, a later run on the same
data or another DDP rank — and never listed in memory. With stdin among them they are read and encoded in
memory (seq2seq.read_data and parallel.encode_pairs), as stdin cannot be read twice.

Both paths give the same pairs, skips and batches: the held-out pairs are the last valid_fraction of the
training pairs (at least one), and only their raw text (the BLEU references) is read from the files.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqtool.data.io import STDIN
from seqtool.data.parallel import (
    ParallelText,
    held_out,
    iter_pairs,
    read_parallel,
    sides,
)
from seqtool.workspace import Workspace

Note = Callable[[str], None]


@dataclass
class PairData:
    """What a translation task trains on: the tokenizers, the kept training and validation pairs
    (parallel.EncodedPairs or stored_pairs.StoredPairs) and the raw validation text (from the store: only
    the pairs BLEU reads, valid.max_sentences or all, none without BLEU)."""

    src_tok: Any
    tgt_tok: Any
    train: Any
    valid: Any
    valid_text: ParallelText
    train_where: str  # "a.en + a.fr" or "pairs.tsv", for messages


def from_files(data: Any) -> bool:
    """Whether the parallel data section `data` names files only (stdin goes the in-memory way)."""
    return STDIN not in (data.src, data.tgt, data.tsv, data.valid_src, data.valid_tgt, data.valid_tsv)


def stored_pairs(cfg: Any, ws: Workspace, resuming: bool, note: Note) -> PairData:
    """The pairs of `cfg` (a config with data, tokenizer and valid sections: seq2seq or transformer) from
    the token store in data.store (default WS/store), each side built there by the writing rank if
    missing. The tokenizers are loaded, or learned from the training pairs streamed from the files."""
    from seqtool.data.stored_pairs import count_pairs, select
    from seqtool.training.seq2seq import prepare_tokenizers

    d = cfg.data
    if d.src is None and d.tsv is None:
        from seqtool.errors import InputError

        raise InputError("no training data", hint="pass --src and --tgt, or --tsv")
    train_sides = sides(d.src, d.tgt, d.tsv)
    given = bool(d.valid_src or d.valid_tgt or d.valid_tsv)
    valid_sides = sides(d.valid_src, d.valid_tgt, d.valid_tsv) if given else []
    where = d.tsv or f"{d.src} + {d.tgt}"

    def training_side(column: int) -> Any:  # read only if the tokenizers are learned (not on a resume)
        n = count_pairs(train_sides)
        n -= 0 if given else held_out(n, d.valid_fraction, where)
        pairs = itertools.islice(iter_pairs(d.src, d.tgt, d.tsv, d.encoding_errors), n)
        return (pair[column] for pair in pairs)

    src_tok, tgt_tok = prepare_tokenizers(cfg.tokenizer, _Lazy(lambda: training_side(0)),
                                          _Lazy(lambda: training_side(1)), ws, reuse=resuming)
    root = Path(d.store) if d.store else ws.store_dir
    src, tgt = stored_sides(root, train_sides, (src_tok, tgt_tok), d.encoding_errors, ws, note)
    eos = src_tok.eos_id
    if given:
        valid_src, valid_tgt = stored_sides(root, valid_sides, (src_tok, tgt_tok), d.encoding_errors, ws,
                                             note)
        return PairData(src_tok, tgt_tok, select(src, tgt, 0, src.lines, d.max_len, eos),
                        select(valid_src, valid_tgt, 0, valid_src.lines, d.max_len, eos),
                        read_parallel(d.valid_src, d.valid_tgt, d.valid_tsv, d.encoding_errors), where)
    k = held_out(src.lines, d.valid_fraction, where)
    first = src.lines - k
    # the raw held-out pairs only as far as BLEU reads them (evaluation.translation_validation)
    wanted = 0 if not cfg.valid.bleu else cfg.valid.max_sentences or k
    pairs = list(itertools.islice(iter_pairs(d.src, d.tgt, d.tsv, d.encoding_errors), first, first + wanted)
                 ) if wanted else []
    valid_text = ParallelText([s for s, _ in pairs], [t for _, t in pairs], f"the last {k} pairs of {where}")
    return PairData(src_tok, tgt_tok, select(src, tgt, 0, first, d.max_len, eos),
                    select(src, tgt, first, src.lines, d.max_len, eos), valid_text, where)


class _Lazy:
    """An iterable whose lines are only read when it is iterated (learning a tokenizer)."""

    def __init__(self, lines: Callable[[], Any]):
        self.lines = lines

    def __iter__(self) -> Any:
        return iter(self.lines())


def stored_sides(root: Path, pair_sides: list[tuple[str, str]], toks: tuple[Any, Any], encoding_errors: str,
                  ws: Workspace, note: Note) -> tuple[Any, Any]:
    """The store entries of the source and target side (stored_pairs.ensure_sides), written by rank 0."""
    from seqtool.data.stored_pairs import ensure_sides

    sources = [_fingerprint(ws, path) for path, _ in pair_sides]
    return ensure_sides(root, pair_sides, sources, toks, encoding_errors, writer=not ws.read_only,
                        progress=note)


def _fingerprint(ws: Workspace, path: str) -> dict:
    """{path, bytes, sha256} of `path`: as the workspace recorded it for this run, else hashed now."""
    from seqtool.data.io import file_fingerprint

    resolved = str(Path(path).resolve())
    for recorded in ws.meta.get("data", []):
        if recorded.get("path") == resolved and recorded.get("sha256"):
            return recorded
    return file_fingerprint(resolved)
