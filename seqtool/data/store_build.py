"""Building a token store entry (data/store.py describes the layout): the files are cut into byte ranges at
line boundaries, the ranges are encoded in parallel worker processes and written as they come, so memory
stays bounded whatever the corpus size; the entry appears by one rename of a finished temporary directory.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from seqtool.data.store import (
    CHUNK_BYTES,
    FORMAT,
    LINE_BATCH,
    LINES,
    MANIFEST,
    TEXT_SIZE,
    TOKENIZER,
    TOKENS,
    Progress,
)
from seqtool.errors import InputError


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
