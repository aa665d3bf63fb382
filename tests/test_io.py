"""seqtool.data.io: lines from files, globs, stdin and .gz; every bad input is one clear InputError."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtool.data import io as dio
from seqtool.data.io import (
    file_fingerprint,
    iter_lines,
    open_output,
    require_nonempty,
    sample_lines,
    two_passes,
)
from seqtool.errors import InputError


def read(path, **kw) -> list[str]:
    return list(iter_lines(path, **kw))


def test_lines_without_endings_empty_lines_kept(tmp_text):
    assert read(tmp_text("a\n\nb\n")) == ["a", "", "b"]
    assert read(tmp_text("a\nb")) == ["a", "b"]  # no final newline
    assert read(tmp_text("")) == []
    assert read(tmp_text("\n")) == [""]


def test_crlf_and_bom(tmp_text):
    assert read(tmp_text(b"\xef\xbb\xbfone\r\ntwo\r\n\r\nthree\r")) == ["one", "two", "", "three"]


def test_several_files_globs_and_gz(tmp_text, tmp_path):
    tmp_text("b1\n", "d/b.txt")
    tmp_text("a1\na2\n", "d/a.txt")
    with gzip.open(tmp_path / "d" / "c.txt.gz", "wb") as f:
        f.write("c1 é\n".encode())
    assert read(str(tmp_path / "d" / "*.txt")) == ["a1", "a2", "b1"]  # sorted
    assert read([tmp_path / "d" / "b.txt", str(tmp_path / "d" / "*.gz")]) == ["b1", "c1 é"]


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("x\r\ny ü\n".encode())))
    assert read("-") == ["x", "y ü"]


@settings(max_examples=80, deadline=None)
@given(text=st.text(st.characters(blacklist_characters="\r\0", blacklist_categories=["Cs"]), max_size=60),
       block=st.integers(1, 9))
def test_lines_survive_any_block_boundary(tmp_path_factory, text, block):
    path = tmp_path_factory.mktemp("p") / "t.txt"
    path.write_text(text, encoding="utf-8")
    dio_block, dio._BLOCK = dio._BLOCK, block  # cut multi-byte characters and lines mid-way
    try:
        got = read(path)
    finally:
        dio._BLOCK = dio_block
    # A final newline ends the last line; it does not start another one.
    assert got == ([] if text == "" else text.removesuffix("\n").split("\n"))


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_file_directory_and_empty_glob(tmp_path):
    with pytest.raises(InputError) as e:
        read(tmp_path / "nope.txt")
    assert "file not found" in one_line_error(e)
    with pytest.raises(InputError) as e:
        read(tmp_path)
    assert "is a directory" in one_line_error(e)
    with pytest.raises(InputError) as e:
        read(str(tmp_path / "*.nothing"))
    assert "no file matches" in one_line_error(e)


def test_nul_bytes_name_file_and_line(tmp_text):
    path = tmp_text(b"fine\nalso fine\nbin\x00ary\n")
    with pytest.raises(InputError) as e:
        read(path)
    assert f"{path}:3:" in one_line_error(e) and "binary" in str(e.value)


def test_invalid_utf8_names_file_line_and_the_fix(tmp_text):
    path = tmp_text(b"ok\nstill ok\ncaf\xe9 latin-1\n")
    with pytest.raises(InputError) as e:
        read(path)
    message = one_line_error(e)
    assert f"{path}:3:" in message and "invalid UTF-8" in message and "--encoding-errors" in message
    assert read(path, encoding_errors="replace")[2] == "caf\ufffd latin-1"
    assert read(path, encoding_errors="ignore")[2] == "caf latin-1"
    with pytest.raises(InputError):
        read(path, encoding_errors="bogus")


def test_overlong_line(tmp_text):
    path = tmp_text("short\n" + "x" * 10_000_001 + "\n")
    with pytest.raises(InputError) as e:
        read(path)
    assert f"{path}:2:" in one_line_error(e) and "--max-line-chars" in str(e.value)
    assert read(tmp_text("short\nabcdef\n", "b.txt"), max_line_chars=6) == ["short", "abcdef"]
    with pytest.raises(InputError):
        read(tmp_text("short\nabcdefg\n", "c.txt"), max_line_chars=6)


def test_bad_gzip(tmp_text):
    with pytest.raises(InputError) as e:
        read(tmp_text(b"not gzip at all\n", "x.gz"))
    one_line_error(e)


def test_require_nonempty():
    assert list(require_nonempty(["", "a"], "c.txt")) == ["", "a"]
    with pytest.raises(InputError, match="empty corpus"):
        list(require_nonempty(["", "  ", "\t"], "c.txt"))
    with pytest.raises(InputError, match="empty corpus"):
        list(require_nonempty([], "c.txt"))


def test_sample_lines_is_seeded_and_keeps_order():
    lines = [f"line {i}" for i in range(1000)]
    a = sample_lines(lines, 50, seed=3)
    assert a == sample_lines(iter(lines), 50, seed=3) and len(a) == 50
    assert a == sorted(a, key=lines.index) and a != sample_lines(lines, 50, seed=4)
    assert sample_lines(lines[:10], 50) == lines[:10]


def test_file_fingerprint(tmp_text):
    path = tmp_text("hello\n")
    fp = file_fingerprint(path)  # just written: its mtime is not recorded (a write in the same tick)
    assert fp == {"path": str(path), "bytes": 6, "sha256": hashlib.sha256(b"hello\n").hexdigest()}


def test_an_unchanged_file_is_not_read_again_and_a_changed_one_is(tmp_path, monkeypatch):
    import os

    from seqtool import storage

    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    os.utime(path, ns=(10**18, 10**18))  # settled long ago
    reads: list[str] = []
    real = storage.sha256_file
    monkeypatch.setattr(storage, "sha256_file", lambda p: reads.append(str(p)) or real(p))
    first = file_fingerprint(path)
    assert first["sha256"] == hashlib.sha256(b"hello\n").hexdigest() and first["mtime_ns"] == 10**18
    assert file_fingerprint(path, [first]) == first and len(reads) == 1  # a stat, no reading
    # a changed size, a changed mtime or another file (inode) at the path: read again
    path.write_text("hello!\n")
    os.utime(path, ns=(10**18, 10**18))
    assert file_fingerprint(path, [first])["sha256"] == hashlib.sha256(b"hello!\n").hexdigest()
    path.write_text("HELLO\n")  # the same size, and the mtime put back on purpose: not seen (documented)
    os.utime(path, ns=(10**18, 10**18))
    assert file_fingerprint(path, [first])["sha256"] == first["sha256"]
    os.utime(path, ns=(10**18 + 1, 10**18 + 1))  # as `touch` does: read again
    assert file_fingerprint(path, [first])["sha256"] == hashlib.sha256(b"HELLO\n").hexdigest()
    other_file = {**first, "mtime_ns": 10**18 + 1, "inode": -1}
    assert file_fingerprint(path, [other_file])["sha256"] != first["sha256"]
    assert len(reads) == 4
    # through data_fingerprints, as a run's start does with its workspace's records
    from types import SimpleNamespace

    data = SimpleNamespace(train=[str(path)])
    recorded = dio.data_fingerprints(data)
    assert dio.data_fingerprints(data, known=recorded) == recorded and len(reads) == 5


def test_data_fingerprints_record_text_globs_then_parallel_files_and_stdin_by_name(tmp_path):
    from types import SimpleNamespace

    for name in ("a2.txt", "a1.txt", "src.txt"):
        (tmp_path / name).write_text(name)
    data = SimpleNamespace(train=[str(tmp_path / "a*.txt")], valid=["-"], src=str(tmp_path / "src.txt"),
                           tgt=str(tmp_path / "missing.txt"), valid_src="-")
    got = [(f["role"], f["path"].rsplit("/", 1)[-1], f.get("bytes")) for f in dio.data_fingerprints(data)]
    # tgt is missing: a parallel file is left to its reader, which names it
    assert got == [("train", "a1.txt", 6), ("train", "a2.txt", 6), ("valid", "-", None),
                   ("train", "src.txt", 7), ("valid", "-", None)]
    assert dio.data_fingerprints(data, dio.PARALLEL_FILES)[0]["path"] == str((tmp_path / "src.txt").resolve())
    with pytest.raises(InputError, match="file not found"):
        dio.data_fingerprints(SimpleNamespace(train=[str(tmp_path / "gone.txt")]))


def test_open_output_is_atomic(tmp_path):
    target = tmp_path / "out.txt"
    with open_output(target) as out:
        out.write("é\n")
    assert target.read_bytes() == "é\n".encode()
    with pytest.raises(RuntimeError), open_output(target) as out:
        out.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "é\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_open_output_dash_writes_utf8_to_stdout():
    code = "from seqtool.data.io import open_output\nwith open_output('-') as o: o.write('ü\\n')\nprint('a')"
    env = {"PYTHONIOENCODING": "ascii"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env)
    assert proc.stdout == "ü\na\n".encode()


def test_two_passes_over_stdin(monkeypatch, tmp_text):
    path = tmp_text("f1\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"s1\ns2\n")))
    with two_passes([path, "-"]) as (first, again):
        assert list(first) == ["f1", "s1", "s2"]
        assert list(again()) == ["f1", "s1", "s2"]


def test_io_does_not_import_torch():
    code = ("import sys, seqtool.data.io, seqtool.data.tokenizers, seqtool.data.tokenized; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False"
