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

Encoding streams: the files are cut into byte ranges at line boundaries, the ranges are encoded in
parallel worker processes and written as they come, so memory stays bounded whatever the corpus size.
An entry appears by one rename of a finished temporary directory (seqtool.storage's rule): a killed
build leaves nothing a reader would take for a store.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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


def count_lines(files: Sequence[str]) -> int:
    """How many lines data.io.iter_lines reads from `files`, counted in bytes (no decoding): every
    newline, plus a last line without one; a byte-order mark alone is no line."""
    total = 0
    for path in files:
        with _open_range(path, 0, os.path.getsize(path)) as stream:
            last, size = b"\n", 0
            while block := stream.read(1 << 20):
                if size == 0:
                    block = block.removeprefix(b"\xef\xbb\xbf")
                size += len(block)
                total += block.count(b"\n")
                last = block[-1:] or last
            total += last != b"\n"
    return total


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


def build_corpus(target: str | Path, paths: Sequence[str], sources: Sequence[dict], tok: Any,
                 key: str = "", encoding_errors: str = "strict", workers: int = 0,
                 progress: Progress | None = None, chunk_bytes: int = CHUNK_BYTES,
                 reading: str = "lm") -> None:
    """Encode the text files `paths` with `tok` into the store entry `target` (see the module
    docstring), with `workers` processes (0: one per CPU core), each taking runs of whole lines of
    about `chunk_bytes`, each line read as `reading` says (READINGS)."""
    from seqtool.data.io import describe, expand_paths
    from seqtool.storage import fsync_dir, temp_dir_beside, write_error

    files = expand_paths(paths)
    if "-" in files:
        raise InputError("a token store is built from files, not stdin (it cannot be read twice or hashed)",
                         hint="save the text to a file first")
    target = Path(target)
    tmp = temp_dir_beside(target)
    try:
        tok.save(tmp / TOKENIZER)
        cores = workers or os.cpu_count() or 1  # ranges of a quarter of a core's share at most: balance
        chunk_bytes = min(chunk_bytes, max(1 << 20, sum(map(os.path.getsize, files)) // (4 * cores)))
        tasks = _tasks(files, chunk_bytes)
        dtype = "uint16" if tok.vocab_size <= 1 << 16 else "int32"
        started = time.time()
        tokens, lines, nonempty = _encode_all(tasks, tmp, tok, dtype, encoding_errors, workers, progress,
                                              reading)
        if not nonempty:
            raise InputError(f"empty corpus: {describe(paths)} has no non-empty line",
                             hint="pass a text file with at least one line of text")
        manifest = {"format": FORMAT, "key": key, "dtype": dtype, "tokens": tokens, "lines": lines,
                    "vocab_size": tok.vocab_size, "newline_id": tok.newline_id,
                    "encoding_errors": encoding_errors, "reading": reading, "sources": list(sources),
                    "bytes": sum(t[3] for t in tasks), "seconds": round(time.time() - started, 3)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        for name in (TOKENS, LINES, TEXT_SIZE, MANIFEST):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if target.exists():  # a corrupt entry being rebuilt
            shutil.rmtree(target)
        os.rename(tmp, target)
        fsync_dir(target.parent)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise write_error(err, target) from None
        raise


Task = tuple[int, str, int, int]  # (index, file, first byte, bytes): a run of whole lines


def _tasks(files: Sequence[str], chunk_bytes: int) -> list[Task]:
    """Each file cut into runs of whole lines of about `chunk_bytes` (a .gz file is one run)."""
    tasks: list[Task] = []
    for path in files:
        size = os.path.getsize(path)
        if path.endswith(".gz"):
            tasks.append((len(tasks), path, 0, -1))
            continue
        with open(path, "rb") as fh:
            start = 0
            while start < size:
                end = min(start + chunk_bytes, size)
                if end < size:
                    fh.seek(end)
                    while (block := fh.read(1 << 16)) and (cut := block.find(b"\n")) < 0:
                        end += len(block)
                    end = min(end + cut + 1, size) if block else size
                tasks.append((len(tasks), path, start, end - start))
                start = end
    return [(i, p, a, n if n >= 0 else os.path.getsize(p)) for i, p, a, n in tasks]


def _encode_all(tasks: list[Task], tmp: Path, tok: Any, dtype: str, encoding_errors: str, workers: int,
                progress: Progress | None, reading: str = "lm") -> tuple[int, int, bool]:
    """Encode every task (in worker processes when there are several), appending each part to
    tokens.bin, lines.bin and text_size.bin in task order as it arrives; (tokens, lines, any non-empty
    line)."""
    total_bytes = sum(t[3] for t in tasks) or 1
    workers = min(workers or os.cpu_count() or 1, len(tasks)) or 1
    job = (str(tmp / TOKENIZER), str(tmp), dtype, encoding_errors, reading)
    started, last_report, done_bytes = time.time(), 0.0, 0
    tokens_written, lines_written, nonempty = 1, 0, False
    text_written = [0, 0]  # UTF-8 bytes, words
    with open(tmp / TOKENS, "wb") as tokens_out, open(tmp / LINES, "wb") as lines_out, \
            open(tmp / TEXT_SIZE, "wb") as text_out:
        array("H" if dtype == "uint16" else "i", [tok.newline_id]).tofile(tokens_out)
        with _pool(workers, job) as results_of:
            for (index, path, _start, size), (_count, n_lines, has_text, error) in zip(
                    tasks, results_of(tasks), strict=True):
                if error:
                    _raise_read_error(path, encoding_errors, error, reading)
                part_tokens, part_lines = _part(tmp, index, "tok"), _part(tmp, index, "len")
                with open(part_tokens, "rb") as fh:
                    shutil.copyfileobj(fh, tokens_out, 1 << 20)
                counts = array("q")  # per line: tokens, UTF-8 bytes, words
                with open(part_lines, "rb") as fh:
                    counts.frombytes(fh.read())
                ends = array("q", itertools.accumulate(counts[0::3], initial=tokens_written))  # → absolute
                ends[1:].tofile(lines_out)
                tokens_written = ends[-1]
                text_ends = array("q", [0]) * (len(counts) // 3 * 2)
                for column in (0, 1):
                    running = array("q", itertools.accumulate(counts[column + 1::3],
                                                              initial=text_written[column]))
                    text_ends[column::2] = running[1:]
                    text_written[column] = running[-1]
                text_ends.tofile(text_out)
                part_tokens.unlink()
                part_lines.unlink()
                lines_written += n_lines
                nonempty = nonempty or has_text
                done_bytes += size
                now = time.time()
                if progress is not None and (now - last_report >= 2 or done_bytes >= total_bytes):
                    last_report = now
                    rate = done_bytes / max(now - started, 1e-9)
                    eta = int((total_bytes - done_bytes) / max(rate, 1e-9))
                    progress(f"token store: encoded {done_bytes / 1e6:,.1f} of {total_bytes / 1e6:,.1f} MB "
                             f"({100 * done_bytes / total_bytes:.0f}%), {rate / 1e6:.1f} MB/s, "
                             f"{tokens_written:,} tokens, eta {eta // 60}m{eta % 60:02d}s")
    return tokens_written, lines_written, nonempty


@contextlib.contextmanager
def _pool(workers: int, job: tuple) -> Iterator[Callable[[list[Task]], Iterator[tuple]]]:
    """results_of(tasks): each task's result in task order, from `workers` processes or, with one
    worker, from this process. Workers are forked where the OS can (they use no torch, so a parent's
    torch threads do not matter, and a spawned worker would need an importable __main__)."""
    if workers <= 1:
        _start_worker(*job)
        yield lambda tasks: map(_encode_task, tasks)
        return
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, _start_worker, job) as pool:
        yield lambda tasks: pool.imap(_encode_task, tasks)


def _part(tmp: Path, index: int, what: str) -> Path:
    return tmp / f"part-{index:06d}.{what}"


def _raise_read_error(path: str, encoding_errors: str, error: str, reading: str) -> None:
    """A worker failed on a range of `path`: read the file whole to raise the error with its true line
    number (a worker counts lines from the start of its range)."""
    from seqtool.data.io import iter_lines

    for _ in _texts(iter_lines([path], encoding_errors), reading, path):
        pass
    raise InputError(error)


# -- in the worker processes --------------------------------------------------------------------
# What each worker process holds between tasks, set once by its initializer (a worker process's
# own state; the parent never reads it).
_WORKER: dict[str, Any] = {}


def _start_worker(tokenizer_dir: str, tmp: str, dtype: str, encoding_errors: str, reading: str) -> None:
    from seqtool.data.tokenizers import load_tokenizer

    _WORKER.update(tok=load_tokenizer(tokenizer_dir), tmp=Path(tmp), dtype=dtype, errors=encoding_errors,
                   reading=reading)


def _encode_task(task: Task) -> tuple[int, int, bool, str | None]:
    """Encode one run of lines into part files: the ids (each line followed by newline_id) and each
    line's tokens, UTF-8 bytes and words, its end counting one of each (metrics.text_size); (tokens, lines,
    any non-empty line, the error message of bad input or None)."""
    from seqtool.data.io import MAX_LINE_CHARS, _lines_of, batches

    index, path, start, size = task
    tok, tmp = _WORKER["tok"], _WORKER["tmp"]
    nl, code = tok.newline_id, "H" if _WORKER["dtype"] == "uint16" else "i"
    count, n_lines, has_text = 0, 0, False
    try:
        with _open_range(path, start, size) as stream, open(_part(tmp, index, "tok"), "wb") as out:
            lengths = array("q")
            lines = _texts(_lines_of(stream, path, _WORKER["errors"], MAX_LINE_CHARS, keep_bom=start > 0),
                           _WORKER["reading"], path)
            side = _WORKER["reading"] != "lm"
            for batch in batches(lines, LINE_BATCH):
                has_text = has_text or any(line.strip() for line in batch)
                ids, rows = array(code), tok.encode_batch(batch)
                counts = _counts(batch, rows)
                for i, (line, row) in enumerate(zip(batch, rows, strict=True)):
                    if side and not line:  # a blank side of a pair: nothing, not even the separator
                        counts[3 * i:3 * i + 3] = array("q", (0, 0, 0))
                        continue
                    ids.extend(row)
                    ids.append(nl)
                lengths.extend(counts)
                ids.tofile(out)
                count += len(ids)
                n_lines += len(batch)
        with open(_part(tmp, index, "len"), "wb") as fh:
            lengths.tofile(fh)
    except InputError as err:
        return 0, 0, False, err.message
    return count, n_lines, has_text, None


def _counts(batch: list[str], rows: list[list[int]]) -> array:
    """Each line's tokens (with its newline), UTF-8 bytes and words, its end counting one of each
    (metrics.text_size), interleaved; counted by maps of builtins, as this runs for every line of a corpus
    (a Python loop per line cost a fifth of the encoder's time)."""
    one_more = (1).__add__
    counts = array("q", bytes(24 * len(batch)))
    counts[0::3] = array("q", map(one_more, map(len, rows)))
    counts[1::3] = array("q", map(one_more, map(len, map(str.encode, batch))))
    counts[2::3] = array("q", map(one_more, map(len, map(str.split, batch))))
    return counts


def _texts(lines: Iterable[str], reading: str, path: str) -> Iterable[str]:
    """The text of each line to encode, as `reading` says (READINGS)."""
    if reading == "lm":
        return lines
    if reading == "line":
        return (line.strip() for line in lines)
    from seqtool.data.parallel import tsv_columns

    column = int(reading.removeprefix("tsv:"))  # the worker numbers lines from its range: parents re-read
    return (tsv_columns(line, path, n)[column] for n, line in enumerate(lines, 1))


@contextlib.contextmanager
def _open_range(path: str, start: int, size: int) -> Iterator[BinaryIO]:
    """bytes [start, start + size) of `path` as a stream (a .gz file whole, decompressed)."""
    if path.endswith(".gz"):
        import gzip

        with gzip.open(path, "rb") as stream:
            yield stream  # type: ignore[misc]
        return
    with open(path, "rb") as fh:
        fh.seek(start)
        yield _Range(fh, size)


class _Range(io.RawIOBase):
    """At most `size` bytes of an open file, from where it stands."""

    def __init__(self, fh: BinaryIO, size: int):
        self.fh, self.left = fh, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(n)
        self.left -= len(data)
        return data

    def readable(self) -> bool:
        return True
