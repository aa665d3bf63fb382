"""The token streams a language model trains and validates on: read from the token store
(data/store.py) when the text comes from files, so a corpus is tokenized once — not again on a resume,
a later run on the same data or another DDP rank — and never held in memory; text from stdin is read
and encoded in memory (training/lm.py's read_corpus and encode), as it cannot be read twice.

Both paths give the same streams: the held-out split is by lines (the last valid_fraction of the
training lines), and a store's line index cuts it without copying; the store's index also holds the
text's bytes and words, so bits per byte and word perplexity need no second reading of the text.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqtool.data.io import STDIN, data_fingerprints, describe, expand_paths, iter_lines, require_nonempty
from seqtool.errors import InputError
from seqtool.metrics import TextSize
from seqtool.workspace import Workspace

Note = Callable[[str], None]


@dataclass
class Streams:
    """A language model's data: its tokenizer, training and validation token streams (N,) (mapped
    from the store, uint16/int32, or in memory, int64), and where the validation text comes from. The
    lines are there only when read into memory (stdin); `valid_text` is the validation lines (stdin)
    or their size, counted by the store (bits per byte and per-word perplexity need it)."""

    tok: Any
    train_ids: Any
    valid_ids: Any
    note: str
    train: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)
    valid_text: Iterable[str] | TextSize = ()


def token_streams(data: Any, tok_cfg: Any, ws: Workspace, resuming: bool, seed: int, note: Note) -> Streams:
    """The streams of `data` (a data section with train, valid, valid_fraction, encoding_errors and
    store) for a run in `ws`, with the tokenizer of `tok_cfg` (loaded, or learned from the training
    lines, then saved to WS/tokenizer); on a resume the workspace's own tokenizer."""
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.training import lm

    if not data.train:
        raise InputError("no training text given", hint="pass FILES (or data.train in the --config YAML)")
    if STDIN in (*data.train, *data.valid):
        if data.store:
            raise InputError("--data-store needs the text in files: stdin cannot be hashed or read twice",
                             hint="save the text to a file first, or drop --data-store")
        corpus = lm.read_corpus(data)
        tok = (load_tokenizer(ws.tokenizer_dir) if resuming
               else lm.prepare_tokenizer(tok_cfg, corpus.train, ws))
        train_ids = lm.encode(tok, corpus.train)
        valid_ids = lm.encode(tok, corpus.valid) if corpus.valid else train_ids
        return Streams(tok, train_ids, valid_ids, corpus.note, corpus.train, corpus.valid,
                       corpus.valid or corpus.train)

    train_files = expand_paths(data.train)
    if resuming:
        tok = load_tokenizer(ws.tokenizer_dir)
    elif tok_cfg.path:
        tok = load_tokenizer(tok_cfg.path)
        ws.save_tokenizers({"": tok})
    else:
        tok = _learn_tokenizer(tok_cfg, data, train_files, seed, note)
        ws.save_tokenizers({"": tok})
    root = Path(data.store) if data.store else ws.store_dir
    train = stored(root, "train", train_files, data, ws, tok, note)
    if data.valid:
        valid = stored(root, "valid", expand_paths(data.valid), data, ws, tok, note)
        return Streams(tok, train.tokens, valid.tokens, f"validation text: {describe(data.valid)}",
                       valid_text=_size(valid, 0, valid.lines))
    held_out = int(train.lines * data.valid_fraction)
    if held_out < 1:
        return Streams(tok, train.tokens, train.tokens, "no validation text (too few lines to hold out, or "
                       "valid_fraction 0): validating on the training text",
                       valid_text=_size(train, 0, train.lines))
    first = train.lines - held_out
    return Streams(tok, train.slice_lines(0, first), train.slice_lines(first, train.lines),
                   f"validation text: the last {held_out:,} of {train.lines:,} lines (valid_fraction "
                   f"{data.valid_fraction})", valid_text=_size(train, first, train.lines))


def _size(corpus: Any, first: int, last: int) -> TextSize:
    """The TextSize (metrics.text_size) of lines [first, last) of a stored corpus, from its index."""
    return TextSize(corpus.slice_lines(first, last).numel() - 1, *corpus.text_size(first, last))


def _learn_tokenizer(tok_cfg: Any, data: Any, files: list[str], seed: int, note: Note) -> Any:
    """A tokenizer learned from the training lines (without the held-out ones), streamed from the
    files; on tokenizer.sample lines drawn at random (seeded) when the corpus has more."""
    from seqtool.data.store import count_lines
    from seqtool.data.tokenizers import train_tokenizer

    lines = count_lines(files)
    held_out = 0 if data.valid else int(lines * data.valid_fraction)
    text = require_nonempty(itertools.islice(iter_lines(files, data.encoding_errors), lines - held_out),
                            describe(data.train))
    sample = getattr(tok_cfg, "sample", 0)
    if sample and sample < lines - held_out:
        note(f"tokenizer: learning {tok_cfg.kind} from a random sample of {sample:,} of "
             f"{lines - held_out:,} lines (tokenizer.sample, seed {seed})")
        return train_tokenizer(tok_cfg.kind, text, vocab_size=tok_cfg.vocab_size, min_count=tok_cfg.min_count,
                               lowercase=tok_cfg.lowercase, sample=sample, seed=seed)
    return train_tokenizer(tok_cfg.kind, text, vocab_size=tok_cfg.vocab_size, min_count=tok_cfg.min_count,
                           lowercase=tok_cfg.lowercase)


def stored(root: Path, role: str, files: list[str], data: Any, ws: Workspace, tok: Any, note: Note) -> Any:
    """The store entry (data.store.StoredCorpus) of `files`, the `role` ("train" or "valid") files of
    `data`; built here by the writing rank if missing."""
    from seqtool.data.store import ensure_corpus, known_sources

    recorded = [f for f in ws.meta.get("data", []) if f.get("role") == role]
    if [f["path"] for f in recorded] != [str(Path(p).resolve()) for p in files]:  # a view: not recorded
        fields = (("train", "train"),) if role == "train" else (("valid", "valid"),)
        recorded = data_fingerprints(data, fields, [*ws.meta.get("data", []), *known_sources(root)])
    corpus, built = ensure_corpus(root, files, recorded, tok, data.encoding_errors, writer=not ws.read_only,
                                  progress=note)
    note(f"token store: {'built' if built else 'reusing'} {corpus.path} ({corpus.manifest['tokens']:,} "
         f"{role} tokens, {corpus.lines:,} lines)")
    return corpus
