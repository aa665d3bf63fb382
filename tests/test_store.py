"""The token store (seqtool/data/store.py): the same tokens as the in-memory path, parallel = serial,
reuse by key, and one clear error for a corrupt or mismatched store."""

from __future__ import annotations

import json
import random

import pytest
import torch

from seqtool.data import store, store_build
from seqtool.data.io import file_fingerprint, iter_lines
from seqtool.data.tokenizers import train_tokenizer
from seqtool.errors import InputError
from seqtool.metrics import text_size
from seqtool.training.lm import encode


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "épsilon", "ζeta", "\tx"]
    a = tmp_path / "a.txt"
    # a BOM, CRLF endings, empty lines and a last line without a newline: read as data.io reads them
    a.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
                                                 for _ in range(800)).encode() + b"\r\nlast")
    b = tmp_path / "b.txt"
    b.write_text("".join("b " * i + "\n" for i in range(200)), encoding="utf-8")
    return [str(a), str(b)]


def _build(tmp_path, files, tok, name, **kw):
    target = tmp_path / name
    store_build.build_corpus(target, files, [file_fingerprint(f) for f in files], tok, "k", **kw)
    return store.open_corpus(target)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_store_holds_the_tokens_of_the_in_memory_path(tmp_path, corpus, kind):
    lines = list(iter_lines(corpus))
    tok = train_tokenizer(kind, lines, vocab_size=60)
    stored = _build(tmp_path, corpus, tok, "s", workers=1)
    assert stored.tokens.dtype == torch.uint16
    assert stored.lines == len(lines)
    assert torch.equal(stored.tokens.long(), encode(tok, lines))
    k = len(lines) - 37  # any split into lines [0, k) and [k, L) is the stream of those lines
    assert torch.equal(stored.slice_lines(0, k).long(), encode(tok, lines[:k]))
    assert torch.equal(stored.slice_lines(k, len(lines)).long(), encode(tok, lines[k:]))


def test_the_index_holds_the_bytes_and_words_that_text_size_counts(tmp_path, corpus):
    # bits per byte and word perplexity of a stored slice, without reading the text again
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait\n\xff\xfe two  words \n")
    files = [*corpus, str(tmp_path / "bad.txt")]
    lines = list(iter_lines(files, "replace"))
    tok = train_tokenizer("char", lines)
    for workers, chunk in ((1, store_build.CHUNK_BYTES), (2, 700)):
        stored = _build(tmp_path, files, tok, f"s{workers}", workers=workers, chunk_bytes=chunk,
                        encoding_errors="replace")
        for first, last in ((0, len(lines)), (0, 1), (5, 301), (len(lines) - 2, len(lines)), (7, 7)):
            want = text_size(lines[first:last], 0)
            assert stored.text_size(first, last) == (want.bytes, want.words), (workers, first, last)


def test_parallel_encoding_equals_serial_encoding(tmp_path, corpus):
    tok = train_tokenizer("char", iter_lines(corpus))
    serial = _build(tmp_path, corpus, tok, "serial", workers=1)
    parallel = _build(tmp_path, corpus, tok, "parallel", workers=2, chunk_bytes=1000)  # many ranges
    assert torch.equal(serial.tokens, parallel.tokens)
    assert torch.equal(serial.line_ends, parallel.line_ends)
    assert torch.equal(serial.text_ends, parallel.text_ends)


def test_a_store_is_reused_by_its_key_and_rebuilt_for_another_tokenizer(tmp_path, corpus):
    sources = [file_fingerprint(f) for f in corpus]
    tok = train_tokenizer("char", iter_lines(corpus))
    first, built = store.ensure_corpus(tmp_path / "cache", corpus, sources, tok, workers=1)
    again, built_again = store.ensure_corpus(tmp_path / "cache", corpus, sources, tok, workers=1)
    assert built and not built_again and first.path == again.path
    other = train_tokenizer("char", iter_lines(corpus), lowercase=True)
    third, built_third = store.ensure_corpus(tmp_path / "cache", corpus, sources, other, workers=1)
    assert built_third and third.path != first.path


def test_a_truncated_store_is_one_clear_error(tmp_path, corpus):
    tok = train_tokenizer("char", iter_lines(corpus))
    stored = _build(tmp_path, corpus, tok, "s", workers=1)
    tokens = stored.path / store.TOKENS
    del stored
    tokens.write_bytes(tokens.read_bytes()[:-10])
    with pytest.raises(InputError, match="is corrupt: tokens.bin holds") as err:
        store.open_corpus(tmp_path / "s")
    assert err.value.exit_code == 2 and "delete" in err.value.hint


def test_a_store_of_other_data_is_refused(tmp_path, corpus):
    tok = train_tokenizer("char", iter_lines(corpus))
    _build(tmp_path, corpus, tok, "s", workers=1)
    with pytest.raises(InputError, match="other data or another tokenizer"):
        store.open_corpus(tmp_path / "s", key="0" * 64)
    manifest = tmp_path / "s" / store.MANIFEST
    manifest.write_text(json.dumps({"format": 99}))
    with pytest.raises(InputError, match="is corrupt"):
        store.open_corpus(tmp_path / "s")
    with pytest.raises(InputError, match="not a token store"):
        store.open_corpus(tmp_path)


def test_an_entry_of_an_older_format_is_one_clear_error_and_another_key(tmp_path, corpus, monkeypatch):
    tok = train_tokenizer("char", iter_lines(corpus))
    _build(tmp_path, corpus, tok, "s", workers=1)
    manifest = tmp_path / "s" / store.MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": 1}))  # before text_size.bin
    with pytest.raises(InputError, match=f"has format 1; this seqtool reads format {store.FORMAT}") as err:
        store.open_corpus(tmp_path / "s")
    assert "rebuild" in err.value.hint
    sources = [file_fingerprint(f) for f in corpus]  # in a store directory, the format is part of the key
    key = store.corpus_key(sources, "t", "strict")
    monkeypatch.setattr(store, "FORMAT", 1)
    assert store.corpus_key(sources, "t", "strict") != key  # an old entry is not found: a new one is built


def test_bad_utf8_is_reported_at_its_true_line_from_any_worker(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok line\n" * 300 + b"bad \xff here\n" + b"ok\n" * 10)
    tok = train_tokenizer("char", ["ok line bad here"])
    with pytest.raises(InputError, match=r"bad.txt:301: invalid UTF-8"):
        _build(tmp_path, [str(bad)], tok, "s", workers=2, chunk_bytes=500)
    assert not any(p.name.startswith(".s.") for p in tmp_path.iterdir())  # the temp build is gone


def test_an_empty_corpus_is_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="empty corpus"):
        _build(tmp_path, [str(empty)], train_tokenizer("char", ["a"]), "s", workers=1)
