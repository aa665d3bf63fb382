"""Parallel text in the token store (data/stored_pairs.py): the same kept pairs, ids, skips and batches
as the in-memory path (parallel.encode_pairs), the batch cut equal to the pair-by-pair rule, and one clear
error for mismatched files or a bad TSV line found by any worker."""

from __future__ import annotations

import random

import pytest
import torch

from seqtool.data import store_build, stored_pairs
from seqtool.data.io import file_fingerprint
from seqtool.data.parallel import ParallelBatches, cut, encode_pairs, read_parallel, sides
from seqtool.data.tokenizers import train_tokenizer
from seqtool.errors import InputError

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "red", "hat", "é", "\u200b"]


@pytest.fixture
def files(tmp_path):
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 9))) for _ in range(400)]
    src = [f"  {line} " for line in lines]  # stripped when read
    tgt = [line.upper() for line in reversed(lines)]
    src[0] = tgt[7] = src[30] = "   "  # blank sides, the very first line among them
    src[50] = "\u200b"  # text that a tokenizer may encode as nothing: still a kept pair, not a blank
    (tmp_path / "a.src").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "a.tgt").write_text("\n".join(tgt), encoding="utf-8")  # no newline after the last line
    (tmp_path / "a.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt, strict=True)),
                                    encoding="utf-8")
    return tmp_path


def stored(root, src=None, tgt=None, tsv=None, toks=None, **kw):
    pair_sides = sides(src, tgt, tsv)
    sources = [file_fingerprint(p) for p, _ in pair_sides]
    return stored_pairs.ensure_sides(root, pair_sides, sources, toks, **kw)


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("layout", ["files", "tsv"])
def test_stored_pairs_equal_the_in_memory_pairs(files, kind, layout):
    text = read_parallel(str(files / "a.src"), str(files / "a.tgt"))
    src_tok = train_tokenizer(kind, text.src, vocab_size=40)
    tgt_tok = train_tokenizer(kind, text.tgt, vocab_size=40)
    paths = ({"src": str(files / "a.src"), "tgt": str(files / "a.tgt")} if layout == "files"
             else {"tsv": str(files / "a.tsv")})
    src, tgt = stored(files / "store", toks=(src_tok, tgt_tok), **paths)
    assert src.lines == tgt.lines == 400
    for first, last, max_len in ((0, 400, 0), (0, 380, 25), (380, 400, 25)):
        part = type(text)(text.src[first:last], text.tgt[first:last], "t")
        want = encode_pairs(part, src_tok, tgt_tok, max_len)
        got = stored_pairs.select(src, tgt, first, last, max_len, src_tok.eos_id)
        assert got.skipped.keys() == want.skipped.keys()  # the same reasons, in the same order
        assert {k: v.tolist() for k, v in got.skipped.items()} == want.skipped
        assert got.report("t") == want.report("t")
        assert got.rows(range(len(got))) == (want.src, want.tgt)
        for a, b in zip(got.lengths(), want.lengths(), strict=True):
            assert torch.equal(a, b)
        assert got.longest() == want.longest()
        budget = 4 * got.longest() + 1
        a = ParallelBatches(got, budget, 0, 1, 2, seed=3)
        b = ParallelBatches(want, budget, 0, 1, 2, seed=3)
        for x, y in zip(a.batches(1, 0), b.batches(1, 0), strict=True):
            assert all(torch.equal(x[k], y[k]) for k in ("src", "tgt_in", "tgt_out"))


def test_the_cut_by_runs_equals_the_pair_by_pair_rule():
    def pair_by_pair(sizes, batch_tokens, max_batch_size):  # the rule ParallelBatches applied per pair
        rows, current, longest = [], 0, 0
        for s in sizes:
            size = max(longest, s)
            full = max_batch_size and current >= max_batch_size
            if current and (size * (current + 1) > batch_tokens or full):
                rows.append(current)
                current, size = 0, s
            current += 1
            longest = size
        return rows + [current]

    rng = random.Random(1)
    for _ in range(200):
        keys = sorted((rng.randint(1, 12), rng.randint(0, 12)) for _ in range(rng.randint(1, 80)))
        sizes = [max(s, t + 1) for s, t in keys]
        runs = {}
        for key, size in zip(keys, sizes, strict=True):
            runs.setdefault(key, [size, 0])[1] += 1
        budget, most = rng.randint(13, 60), rng.choice([0, 1, 3])
        assert cut([r[0] for r in runs.values()], [r[1] for r in runs.values()], budget, most) == \
            pair_by_pair(sizes, budget, most)


def test_mismatched_files_are_one_error_naming_both(files):
    (files / "b.tgt").write_text("x\n" * 399, encoding="utf-8")
    tok = train_tokenizer("char", ["abc"])
    with pytest.raises(InputError, match=r"a.src has 400 lines but .*b.tgt has 399") as err:
        stored(files / "store", str(files / "a.src"), str(files / "b.tgt"), toks=(tok, tok))
    assert err.value.exit_code == 2
    assert not (files / "store").exists() or not any((files / "store").iterdir())  # nothing encoded


def test_a_bad_tsv_line_is_reported_at_its_true_line_from_any_worker(tmp_path):
    (tmp_path / "p.tsv").write_text("a\tb\n" * 3000 + "no tab\n" + "c\td\n" * 10, encoding="utf-8")
    tok = train_tokenizer("char", ["abcd"])
    pair_sides = sides(None, None, str(tmp_path / "p.tsv"))
    source = file_fingerprint(str(tmp_path / "p.tsv"))
    with pytest.raises(InputError, match=r"p.tsv:3001: no tab"):
        store_build.build_corpus(tmp_path / "s", [pair_sides[0][0]], [source], tok, workers=2,
                                 chunk_bytes=1000, reading=pair_sides[0][1])
