"""Reading text corpora: files, globs, `-` (stdin) and `.gz`, streamed in constant memory.

Every problem a user can cause (missing file, binary data, invalid UTF-8, a runaway line) is an
`InputError` that names the file and line and says how to fix it. No torch here.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import io
import itertools
import os
import random
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

from seqtool.errors import InputError

MAX_LINE_CHARS = 1_000_000
ENCODING_ERRORS = ("strict", "replace", "ignore")
STDIN = "-"

_BLOCK = 1 << 18  # bytes read at a time: lines are cut out of blocks, so memory stays constant
_BOM = b"\xef\xbb\xbf"
_GLOB_CHARS = frozenset("*?[")

PathLike = str | os.PathLike


def expand_paths(paths: PathLike | Sequence[PathLike]) -> list[str]:
    """Files named by `paths` in order: globs expanded and sorted, `-` kept; checks each exists."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[str] = []
    for path in map(str, paths):
        if path == STDIN:
            found.append(path)
        elif not os.path.lexists(path) and _GLOB_CHARS & set(path):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise InputError(f"no file matches {path!r}", hint="check the pattern and the directory")
            found.extend(matches)
        else:
            found.append(path)
    if not found:
        raise InputError("no input files given", hint="pass one or more files, a glob, or - for stdin")
    for path in found:
        _check_readable(path)
    return found


def _check_readable(path: str) -> None:
    if path == STDIN:
        return
    if not os.path.exists(path):
        raise InputError(f"file not found: {path}", hint="check the path")
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory, not a file",
                         hint=f"pass the files inside it, e.g. '{os.path.join(path, '*.txt')}'")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {path}: permission denied", hint="check the file's permissions")


def iter_lines(
    paths: PathLike | Sequence[PathLike],
    encoding_errors: str = "strict",
    max_line_chars: int = MAX_LINE_CHARS,
    keep_bom: bool = False,
) -> Iterator[str]:
    """Every line of every file, without its line ending (`\\n` or `\\r\\n`), in constant memory.

    `paths` may hold files, globs, `-` for stdin and `.gz` files. Invalid UTF-8 raises an
    `InputError` naming file:line unless `encoding_errors` is "replace" or "ignore". A UTF-8
    byte-order mark opening a file is dropped unless `keep_bom` (sacrebleu scores it as text).
    """
    check_encoding_errors(encoding_errors)
    for path in expand_paths(paths):
        with _open_binary(path) as stream:
            yield from _lines_of(stream, _display(path), encoding_errors, max_line_chars, keep_bom)


def check_encoding_errors(encoding_errors: str) -> None:
    if encoding_errors not in ENCODING_ERRORS:
        raise InputError(f"--encoding-errors must be one of {', '.join(ENCODING_ERRORS)}, "
                         f"not {encoding_errors!r}")


def _display(path: str) -> str:
    return "<stdin>" if path == STDIN else path


@contextlib.contextmanager
def _open_binary(path: str) -> Iterator[BinaryIO]:
    if path == STDIN:
        if sys.stdin is None:  # started with stdin closed (`<&-`): Python then has no sys.stdin
            raise InputError("no input: stdin is closed", hint="pass a file, or pipe text in")
        yield sys.stdin.buffer
        return
    try:
        stream = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    except OSError as err:
        raise InputError(f"cannot open {path}: {err.strerror or err}", hint="check the path") from None
    with stream:
        yield stream


def _read_blocks(stream: BinaryIO, name: str) -> Iterator[bytes]:
    while True:
        try:
            block = stream.read(_BLOCK)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(f"{name}: cannot read it: {err}",
                             hint="a .gz file must be a complete gzip file") from None
        if not block:
            return
        yield block


def _lines_of(stream: BinaryIO, name: str, errors: str, max_chars: int, keep_bom: bool = False
              ) -> Iterator[str]:
    """Cuts whole lines out of fixed-size blocks: decoding, NUL and length checks run per block."""
    lineno = 0  # lines already yielded
    pending: list[bytes] = []  # the start of a line whose end has not been read yet
    pending_bytes = 0
    first = not keep_bom  # the first block may open with a BOM to drop
    for block in _read_blocks(stream, name):
        if first:
            block = block.removeprefix(_BOM)
            first = False
        cut = block.rfind(b"\n")
        if cut < 0:
            pending.append(block)
            pending_bytes += len(block)
            # A line can hold up to 4 bytes per character: past that it is surely too long.
            if pending_bytes > 4 * max_chars:
                _too_long(name, lineno + 1, max_chars)
            continue
        data = b"".join([*pending, block[:cut]])
        pending, pending_bytes = [block[cut + 1:]], len(block) - cut - 1
        lines = _decode_lines(data, name, lineno, errors, max_chars)
        lineno += len(lines)
        yield from lines
    if pending_bytes:
        yield from _decode_lines(b"".join(pending), name, lineno, errors, max_chars)


def _decode_lines(data: bytes, name: str, lineno: int, errors: str, max_chars: int) -> list[str]:
    """`data` holds whole lines joined by \\n (no final \\n); `lineno` lines came before it."""
    nul = data.find(b"\0")
    if nul >= 0:
        where = lineno + data.count(b"\n", 0, nul) + 1
        raise InputError(f"{name}:{where}: contains NUL bytes, so it looks like a binary file, not text",
                         hint="pass a UTF-8 text file; convert UTF-16 with iconv -f UTF-16 -t UTF-8")
    try:
        text = data.decode("utf-8", errors)
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        where = lineno + data.count(b"\n", 0, err.start) + 1
        column = err.start - line_start + 1
        raise InputError(
            f"{name}:{where}: invalid UTF-8 (byte 0x{data[err.start]:02x} at byte {column})",
            hint="pass --encoding-errors replace|ignore, or convert the file, e.g. iconv -f latin1 -t utf-8",
        ) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").removesuffix("\r")
    lines = text.split("\n")
    if len(text) > max_chars and max(map(len, lines)) > max_chars:
        longest = max(range(len(lines)), key=lambda i: len(lines[i]))
        _too_long(name, lineno + longest + 1, max_chars)
    return lines


def _too_long(name: str, where: int, max_chars: int) -> None:
    raise InputError(f"{name}:{where}: line longer than {max_chars:,} characters",
                     hint="split the text into lines, or raise the limit with --max-line-chars")


def require_nonempty(lines: Iterable[str], source: str) -> Iterator[str]:
    """Passes `lines` through; at the end raises "empty corpus" if none held anything but spaces."""
    seen = False
    for line in lines:
        if not seen and line.strip():
            seen = True
        yield line
    if not seen:
        raise InputError(f"empty corpus: {source} has no non-empty line",
                         hint="pass a text file with at least one line of text")


def batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """`lines` in lists of `size` (the last one shorter): work for batch encoders, memory constant."""
    it = iter(lines)
    while batch := list(itertools.islice(it, size)):
        yield batch


def describe(paths: PathLike | Sequence[PathLike]) -> str:
    """A short name for a list of inputs, for messages: `a.txt`, `a.txt, b.txt`, `3 files`."""
    names = [_display(str(p)) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} files"


def sample_lines(lines: Iterable[str], n: int, seed: int = 0) -> list[str]:
    """Reservoir sample of `n` lines (Vitter's algorithm R), in their original order; seeded."""
    if n <= 0:
        raise InputError(f"--sample must be a positive number of lines, not {n}")
    rng = random.Random(seed)
    reservoir: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        if i < n:
            reservoir.append((i, line))
        else:
            j = rng.randrange(i + 1)
            if j < n:
                reservoir[j] = (i, line)
    return [line for _, line in sorted(reservoir)]


@contextlib.contextmanager
def two_passes(
    paths: Sequence[PathLike], encoding_errors: str = "strict", max_line_chars: int = MAX_LINE_CHARS
) -> Iterator[tuple[Iterator[str], Callable[[], Iterator[str]]]]:
    """(first, again): the lines of `paths` for a first pass, and a function giving them again.

    Files are simply read twice. With `-` among the paths, the first pass also copies every line to
    a temporary file that `again()` reads back, since stdin can be read only once.
    """
    paths = [str(p) for p in paths]
    if STDIN not in paths:
        yield (iter_lines(paths, encoding_errors, max_line_chars),
               lambda: iter_lines(paths, encoding_errors, max_line_chars))
        return
    with tempfile.TemporaryDirectory(prefix="seqtool-") as tmp:
        copy = os.path.join(tmp, "lines.txt")

        def first() -> Iterator[str]:
            with open(copy, "w", encoding="utf-8", newline="\n") as f:
                for line in iter_lines(paths, encoding_errors, max_line_chars):
                    f.write(line + "\n")
                    yield line

        yield first(), lambda: iter_lines(copy, "strict", max_line_chars)


# A file modified this recently is read again next time (its mtime is not recorded): a write in the
# same clock tick as the stat would otherwise go unseen.
SETTLED_NS = 2 * 10**9


def file_fingerprint(path: PathLike, known: Iterable[dict] = ()) -> dict:
    """{path, bytes, sha256, mtime_ns, inode, device} of a data file, recorded in the workspace to
    identify its data. The file is read (sha256) only when it is new or changed: the sha256 of a record
    in `known` (an earlier run's seqtool.yaml, a token store's manifest) with the same path, size,
    mtime, inode and device is reused, so a start or resume on unchanged data costs a stat per file
    whatever its size. An edit that keeps the size and the mtime (restored on purpose, e.g. by
    `cp -p` or `touch -d`) is not seen; `touch FILE` makes the next run read it again."""
    from seqtool.storage import sha256_file  # the one checksum: data files here, checkpoints there

    path = str(path)
    _check_readable(path)
    st = os.stat(path)
    stat = {"mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "device": st.st_dev}
    for record in known:
        if (record.get("path") == path and record.get("bytes") == st.st_size and record.get("sha256")
                and all(record.get(name) == value for name, value in stat.items())):
            return {"path": path, "bytes": st.st_size, "sha256": record["sha256"], **stat}
    fingerprint = {"path": path, "bytes": st.st_size, "sha256": sha256_file(path)}
    settled = time.time_ns() - st.st_mtime_ns >= SETTLED_NS  # the stat came before the reading
    return {**fingerprint, **stat} if settled else fingerprint


# (role, field) of the data files a config's data section may name: lists of text files and globs,
# then single parallel files (line-aligned src/tgt or one TSV)
TEXT_FILES = (("train", "train"), ("valid", "valid"))
PARALLEL_FILES = (("train", "src"), ("train", "tgt"), ("train", "tsv"),
                  ("valid", "valid_src"), ("valid", "valid_tgt"), ("valid", "valid_tsv"))


def data_fingerprints(data: object, fields: Sequence[tuple[str, str]] = TEXT_FILES + PARALLEL_FILES,
                      known: Sequence[dict] = ()) -> list[dict]:
    """{role, path (absolute), bytes, sha256, ...} (file_fingerprint, reusing the sha256 of an unchanged
    file in `known`) of every data file that `fields` of a config's data section name, as seqtool.yaml
    records them; stdin as path '-'. Text globs are expanded and a missing text file is an error here;
    a missing parallel file is left to the data's reader."""
    out = []
    for role, name in fields:
        value = getattr(data, name, None)
        if (role, name) in TEXT_FILES:
            paths = expand_paths(value) if value else []
        else:
            paths = [value] if value == STDIN or (value and os.path.isfile(value)) else []
        for path in paths:
            if path == STDIN:
                out.append({"role": role, "path": STDIN})
            else:
                out.append({"role": role, **file_fingerprint(str(Path(path).resolve()), known)})
    if getattr(data, "mix", None) and ("train", "train") in fields:  # several corpora (data/mixing.py)
        from seqtool.data.mixing import parse_mix

        for part in parse_mix(data.mix):
            for path in expand_paths(list(part.files)):
                out.append({"role": "train", "corpus": part.name,
                            **file_fingerprint(str(Path(path).resolve()), known)})
    return out


@contextlib.contextmanager
def open_output(path: PathLike) -> Iterator[TextIO]:
    """A UTF-8 text stream to `path` or, for `-`, to stdout; always `\\n` line endings.

    A file is written to a temporary name beside it and renamed when the block ends without an
    error, so a failed run never leaves a half-written file.
    """
    if str(path) == STDIN:
        sys.stdout.flush()
        out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
        try:
            yield out
            out.flush()
        finally:
            out.detach()  # leave sys.stdout open for whoever writes next
        return
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(f"cannot write {target}: directory {target.parent} does not exist",
                         hint="create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as out:
            yield out
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
