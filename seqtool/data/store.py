"""The token store: a corpus encoded once into a memory-mapped file of token ids, reused by every later
run on the same data and tokenizer, by a resume and by every DDP rank, so that no run holds the corpus
in memory or tokenizes it again.

A store directory (WS/store/, or a shared cache given with --data-store) holds one entry per encoded
corpus, named by its key: the sha256 of the data files' contents, the tokenizer's files and how the
text is read. An entry is

    KEY/manifest.json   format, key, dtype, token and line counts, the sources (path, bytes, sha256)
    KEY/tokens.bin      the token stream, uint16 (vocabularies up to 65,536) or int32, little-endian:
                        newline_id, then each line's ids followed by newline_id (training/lm.encode)
    KEY/lines.bin       int64: where each line's stream ends (just past its newline)
    KEY/text_size.bin   int64 pairs: the UTF-8 bytes and the words of the lines up to each line's end
                        (each line end counting one of each, as metrics.text_size counts them), so the
                        bits per byte and word perplexity of any run of lines need no reading of the text
    KEY/tokenizer/      the tokenizer that encoded it

Here: the keys, reading an entry and finding (or having built) the entry of a corpus. Building it, in
parallel and in bounded memory, is data/store_build.py. An entry appears by one rename of a finished
temporary directory (seqtool.storage's rule): a killed build leaves nothing a reader would take for a store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqtool.errors import InputError

FORMAT = 2  # 2: text_size.bin
MANIFEST = "manifest.json"
TOKENS = "tokens.bin"
LINES = "lines.bin"
TEXT_SIZE = "text_size.bin"
TOKENIZER = "tokenizer"
CHUNK_BYTES = 16 << 20  # a worker's share of a file at a time; small enough to balance the workers
LINE_BATCH = 1000  # lines per encode_batch call (sentencepiece's batch encoder does the work)
Progress = Callable[[str], None]  # a progress line (with its ETA) for the log
# How each line of the files is read: "lm" as it is (a language model's corpus; each line followed by
# newline_id), or as one side of parallel text (data/stored_pairs.py): "line" stripped, "tsv:0" / "tsv:1"
# the source / target column of a TSV line, stripped; a blank side is stored as nothing, not even the
# separator, so its line ends where the line before it does.
READINGS = ("lm", "line", "tsv:0", "tsv:1")


def _corrupt(path: Path, what: str) -> InputError:
    return InputError(f"token store {path} is corrupt: {what}",
                      hint=f"delete {path} and run again (it is rebuilt), or rebuild it with "
                           "seqtool tokenize --format store")


# ---------------------------------------------------------------------------------------------
# keys


def tokenizer_hash(tok: Any) -> str:
    """sha256 over the files the tokenizer saves (tokenizer.json, spm.model): what makes its ids."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="seqtool-tok-") as tmp:
        tok.save(tmp)
        for name in sorted(os.listdir(tmp)):
            digest.update(name.encode() + b"\0" + Path(tmp, name).read_bytes() + b"\0")
    return digest.hexdigest()


def corpus_key(sources: Sequence[dict], tok_hash: str, encoding_errors: str, reading: str = "lm") -> str:
    """The key of a corpus: the contents (sha256) of its files in order, the tokenizer, how text is
    read (READINGS), and the store format. Paths do not count: the same text elsewhere finds the same
    entry."""
    fields = {"format": FORMAT, "tokenizer": tok_hash, "encoding_errors": encoding_errors,
              "files": [s["sha256"] for s in sources]}
    if reading != "lm":  # a side of parallel text (the language-model keys stay as they were)
        fields["reading"] = reading
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class StoredCorpus:
    """A mapped store entry: `tokens` (N,) and `line_ends` (L,) are views of the files on disk
    (torch.from_file, copy-on-write), so opening costs the same for 1 MB and 100 GB."""

    path: Path
    manifest: dict[str, Any]
    tokens: Any  # torch.Tensor (N,), uint16 or int32
    line_ends: Any  # torch.Tensor (L,), int64
    text_ends: Any  # torch.Tensor (L, 2), int64: UTF-8 bytes and words through each line's end

    @property
    def lines(self) -> int:
        return int(self.manifest["lines"])

    def slice_lines(self, first: int, last: int) -> Any:
        """The token stream of lines [first, last), as training/lm.encode makes it: a newline, then each
        line followed by its newline. A view: the newline before line `first` opens it."""
        start = int(self.line_ends[first - 1]) - 1 if first else 0
        end = int(self.line_ends[last - 1]) if last else 1
        return self.tokens[start:end]

    def text_size(self, first: int, last: int) -> tuple[int, int]:
        """(UTF-8 bytes, words) of lines [first, last) as metrics.text_size counts them, from the index."""
        if last <= first:
            return 0, 0
        end_bytes, end_words = self.text_ends[last - 1].tolist()
        start_bytes, start_words = self.text_ends[first - 1].tolist() if first else (0, 0)
        return end_bytes - start_bytes, end_words - start_words


def open_corpus(path: str | Path, key: str | None = None) -> StoredCorpus:
    """Map the store entry in `path`; an InputError (exit 2) if it is incomplete, corrupt, or (with
    `key`) encodes other data or another tokenizer."""
    import torch

    path = Path(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise InputError(f"{path} is not a token store: {MANIFEST} is missing",
                         hint="build one with seqtool tokenize FILES -t TOKENIZER --format store -o DIR")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        dtype = {"uint16": torch.uint16, "int32": torch.int32}[manifest["dtype"]]
        tokens, lines, fmt = int(manifest["tokens"]), int(manifest["lines"]), manifest["format"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise _corrupt(path, f"unreadable {MANIFEST} ({err})") from None
    if fmt != FORMAT:
        raise InputError(f"token store {path} has format {fmt!r}; this seqtool reads format {FORMAT}",
                         hint=f"delete {path} and run again to rebuild it")
    if key is not None and manifest.get("key") != key:
        raise InputError(f"token store {path} was built from other data or another tokenizer",
                         hint="pass the files and tokenizer it was built from, or rebuild it")
    itemsize = 2 if manifest["dtype"] == "uint16" else 4
    for name, want in ((TOKENS, tokens * itemsize), (LINES, lines * 8), (TEXT_SIZE, lines * 16)):
        size = (path / name).stat().st_size if (path / name).is_file() else None
        if size != want:
            raise _corrupt(path, f"{name} holds {size} bytes, the manifest says {want}")
    token_view = torch.from_file(str(path / TOKENS), shared=False, size=tokens, dtype=dtype)
    line_ends = (torch.from_file(str(path / LINES), shared=False, size=lines, dtype=torch.int64)
                 if lines else torch.zeros(0, dtype=torch.int64))
    text_ends = (torch.from_file(str(path / TEXT_SIZE), shared=False, size=2 * lines, dtype=torch.int64)
                 .view(lines, 2) if lines else torch.zeros(0, 2, dtype=torch.int64))
    if lines and int(line_ends[-1]) != tokens:
        raise _corrupt(path, f"its line index ends at token {int(line_ends[-1])}, not {tokens}")
    return StoredCorpus(path, manifest, token_view, line_ends, text_ends)


def known_sources(root: str | Path) -> list[dict]:
    """The sources (path, bytes, sha256, mtime...) recorded by the entries of the store directory `root`
    (or by `root`, an entry itself): data.io.file_fingerprint reuses the sha256 of a file unchanged since,
    so that finding an entry costs no reading of the corpus. Unreadable manifests are passed over."""
    root = Path(root)
    manifests = [root / MANIFEST] if (root / MANIFEST).is_file() else sorted(root.glob(f"*/{MANIFEST}"))
    found: list[dict] = []
    for path in manifests:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found += [s for s in json.loads(path.read_text(encoding="utf-8")).get("sources", [])
                      if isinstance(s, dict)]
    return found


# ---------------------------------------------------------------------------------------------
# building


def ensure_corpus(root: str | Path, paths: Sequence[str], sources: Sequence[dict], tok: Any,
                  encoding_errors: str = "strict", writer: bool = True, workers: int = 0,
                  progress: Progress | None = None, reading: str = "lm") -> tuple[StoredCorpus, bool]:
    """The entry of (paths, tok) in the store directory `root`, built first if it is not there (by
    the `writer` alone: the other DDP ranks wait for it at a barrier, then map it); with whether it was
    built now. `root` may also be an entry itself, which must then hold these files and tokenizer.
    `sources` are the files' {path, bytes, sha256} (data.io.data_fingerprints)."""
    key = corpus_key(sources, tokenizer_hash(tok), encoding_errors, reading)
    if (Path(root) / MANIFEST).is_file():  # an entry itself, not a store directory: it must match
        return _stamped(open_corpus(root, key), writer), False
    target = entry_path(root, key)
    built = False
    if writer and not (target / MANIFEST).is_file():
        from seqtool.data.store_build import build_corpus

        build_corpus(target, paths, sources, tok, key, encoding_errors, workers, progress, reading=reading)
        built = True
    _barrier()
    return _stamped(open_corpus(target, key), writer), built


def _stamped(corpus: StoredCorpus, writer: bool) -> StoredCorpus:
    """The entry, stamped as used now by the writing rank (its manifest's mtime, in this machine's clock):
    a workspace's store keeps the entries its latest run used (data/store_prune.py)."""
    if writer:
        now = time.time_ns()
        with contextlib.suppress(OSError):  # a shared store this user cannot write to: not stamped
            os.utime(corpus.path / MANIFEST, ns=(now, now))
    return corpus


def entry_path(root: str | Path, key: str) -> Path:
    """Where the entry of `key` lives in the store directory `root` (built or not)."""
    return Path(root) / key[:32]


def _barrier() -> None:
    """Under torchrun/srun: every rank waits here until rank 0 has built the store."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
