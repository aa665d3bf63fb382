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
    parts: list[Any] = field(default_factory=list)  # a mixture's corpora (training/mixture.py's Part)

    @property
    def train_tokens(self) -> int:
        return sum(p.train_ids.numel() for p in self.parts) if self.parts else int(self.train_ids.numel())


def token_streams(data: Any, tok_cfg: Any, ws: Workspace, resuming: bool, seed: int, note: Note) -> Streams:
    """The streams of `data` (a data section with train, valid, valid_fraction, encoding_errors and
    store) for a run in `ws`, with the tokenizer of `tok_cfg` (loaded, or learned from the training
    lines, then saved to WS/tokenizer); on a resume the workspace's own tokenizer."""
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.training import lm

    if getattr(data, "mix", None):
        from seqtool.training.mixture import mixed_streams

        return mixed_streams(data, tok_cfg, ws, resuming, seed, note)
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
        valid_lines, valid_ids, used = _first_lines(tok, corpus.valid or corpus.train, _cap(data))
        if valid_ids is None:
            valid_ids = lm.encode(tok, valid_lines) if valid_lines is not corpus.train else train_ids
        used = used or _used(valid_ids.numel() - 1, 0)
        return Streams(tok, train_ids, valid_ids, corpus.note + used, corpus.train, corpus.valid, valid_lines)

    train_files = expand_paths(data.train)
    tok = tokenizer(tok_cfg, data, [train_files], ws, resuming, seed, note)
    root = Path(data.store) if data.store else ws.store_dir
    train = stored(root, "train", train_files, data, ws, tok, note)
    if data.valid:
        valid = stored(root, "valid", expand_paths(data.valid), data, ws, tok, note)
        valid_ids, size, used = held_out(valid, 0, _cap(data))
        return Streams(tok, train.tokens, valid_ids, f"validation text: {describe(data.valid)}{used}",
                       valid_text=size)
    train_ids, valid_ids, size, where = split_held_out(train, data.valid_fraction, _cap(data))
    return Streams(tok, train_ids, valid_ids, where, valid_text=size)


def tokenizer(tok_cfg: Any, data: Any, groups: list[list[str]], ws: Workspace, resuming: bool, seed: int,
              note: Note) -> Any:
    """The run's tokenizer: the workspace's own on a resume, else tokenizer.path's or one learned from the
    training lines of the files `groups` (each group a corpus holding out its own last lines), saved to
    WS/tokenizer."""
    from seqtool.data.tokenizers import load_tokenizer

    if resuming:
        return load_tokenizer(ws.tokenizer_dir)
    tok = (load_tokenizer(tok_cfg.path) if tok_cfg.path
           else _learn_tokenizer(tok_cfg, data, groups, seed, note))
    ws.save_tokenizers({"": tok})
    return tok


# ---------------------------------------------------------------------------------------------
# the validation stream: held-out lines, at most data.valid_tokens of their tokens


def _cap(data: Any) -> int:
    return int(getattr(data, "valid_tokens", 0) or 0)


def split_held_out(corpus: Any, valid_fraction: float, cap: int) -> tuple[Any, Any, TextSize | tuple, str]:
    """A stored corpus's training stream, its validation stream (the last valid_fraction of its lines,
    or all of it when that is no line; see held_out for `cap`), its TextSize and the log's note."""
    held = int(corpus.lines * valid_fraction)
    if held < 1:
        valid_ids, size, used = held_out(corpus, 0, cap)
        return corpus.tokens, valid_ids, size, ("no validation text (too few lines to hold out, or "
                                                f"valid_fraction 0): validating on the training text{used}")
    first = corpus.lines - held
    valid_ids, size, used = held_out(corpus, first, cap)
    return corpus.slice_lines(0, first), valid_ids, size, (
        f"validation text: the last {held:,} of {corpus.lines:,} lines (valid_fraction {valid_fraction})"
        f"{used}")


def held_out(corpus: Any, first: int, cap: int) -> tuple[Any, TextSize | tuple, str]:
    """Lines [first, end) of a stored corpus as a validation stream, its TextSize and the log's note. With
    a `cap` (data.valid_tokens) only the first lines whose tokens to predict fit in it: the same tokens at
    every evaluation and resume, whole lines so that bits per byte and per word stay exact; a first line
    longer than the cap alone is cut (then without its TextSize)."""
    import torch

    last = corpus.lines
    if cap:
        start = int(corpus.line_ends[first - 1]) - 1 if first else 0  # the newline that opens line `first`
        fit = int(torch.searchsorted(corpus.line_ends[first:last], start + 1 + cap, right=True))
        if fit == 0:
            return corpus.tokens[start:start + cap + 1], (), _used(cap, cap, mid_line=True)
        last = first + fit
    ids = corpus.slice_lines(first, last)
    cut = last - first if last < corpus.lines else 0
    return ids, _size(corpus, first, last), _used(ids.numel() - 1, cap, cut)


def _first_lines(tok: Any, lines: list[str], cap: int) -> tuple[list[str], Any, str]:
    """held_out for lines in memory (stdin): (the lines kept, their stream when cut inside the first line
    else None, the note when cut else "")."""
    total = 0
    for i, line in enumerate(lines if cap else ()):
        n = len(tok.encode(line)) + 1  # its tokens and its newline, as training/lm.encode streams them
        if total + n > cap:
            if i == 0:
                from seqtool.training.lm import encode

                return [], encode(tok, lines[:1])[:cap + 1], _used(cap, cap, mid_line=True)
            return lines[:i], None, _used(total, cap, i)
        total += n
    return lines, None, ""


def _used(tokens: int, cap: int, lines: int = 0, mid_line: bool = False) -> str:
    """The log's note on how many held-out tokens validation scores: all of them, those of the first
    `lines` lines (cut by the cap), or the first `tokens` of the first line."""
    if mid_line:
        return (f"; validation scores the first {tokens:,} tokens of its first line (data.valid_tokens "
                f"{cap:,}; no bits per byte or word perplexity)")
    if lines:
        return (f"; validation scores {tokens:,} tokens, those of its first {lines:,} lines "
                f"(data.valid_tokens {cap:,})")
    return f"; validation scores {tokens:,} tokens"


def _size(corpus: Any, first: int, last: int) -> TextSize:
    """The TextSize (metrics.text_size) of lines [first, last) of a stored corpus, from its index."""
    return TextSize(corpus.slice_lines(first, last).numel() - 1, *corpus.text_size(first, last))


def _learn_tokenizer(tok_cfg: Any, data: Any, groups: list[list[str]], seed: int, note: Note) -> Any:
    """A tokenizer learned from the training lines (without the held-out ones) of each group of files
    (a corpus), streamed from them; on tokenizer.sample lines drawn at random (seeded) when there are
    more."""
    from seqtool.data.store_build import count_lines
    from seqtool.data.tokenizers import train_tokenizer

    counts = [count_lines(files) for files in groups]
    kept = [n - (0 if data.valid else int(n * data.valid_fraction)) for n in counts]
    lines = (itertools.islice(iter_lines(files, data.encoding_errors), n)
             for files, n in zip(groups, kept, strict=True))
    text = require_nonempty(itertools.chain.from_iterable(lines), describe([f for g in groups for f in g]))
    train_lines = sum(kept)
    sample = getattr(tok_cfg, "sample", 0)
    if sample and sample < train_lines:
        note(f"tokenizer: learning {tok_cfg.kind} from a random sample of {sample:,} of "
             f"{train_lines:,} lines (tokenizer.sample, seed {seed})")
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
