"""`seqtool build-vocab` and `seqtool tokenize` through the real app (and real pipes)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

TEXT = "The cook stirs the soup.\n  Two  spaces, café! 漢字\n\nAdd 1/2 cup--slowly.\n" * 20


@pytest.fixture
def corpus(tmp_text):
    return tmp_text(TEXT)


@pytest.fixture
def bpe(cli, corpus, tmp_path):
    result = cli(["build-vocab", corpus, "--kind", "bpe", "--vocab-size", "60", "-o", tmp_path / "bpe"])
    assert result.exit_code == 0, result.stderr
    return tmp_path / "bpe"


def one_line_error(result, *words):
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr
    return result.stderr


def test_build_vocab_every_kind_reports_stats(cli, corpus, tmp_path):
    for kind, size in (("char", None), ("word", None), ("bpe", 60), ("unigram", 40)):
        out = tmp_path / kind
        args = ["build-vocab", corpus, "--kind", kind, "-o", out, "--json"]
        result = cli(args + (["--vocab-size", size] if size else []))
        assert result.exit_code == 0, result.stderr
        stats = json.loads(result.stdout)
        assert stats["kind"] == kind and stats["output"] == str(out) and stats["lines"] == 80
        assert stats["unk"] == 0 and len(stats["top"]) == 10
        assert "<unk> rate" in result.stderr and "most frequent tokens" in result.stderr
        assert (out / "tokenizer.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bpe", "char", "corpus.txt", "unigram", "word"]


def test_tokenize_formats_keep_one_line_per_input_line(cli, bpe):
    for fmt in ("ids", "pieces", "jsonl"):
        result = cli(["tokenize", "-t", bpe, "--format", fmt], input=TEXT)
        assert result.exit_code == 0, result.stderr
        assert result.stdout.count("\n") == TEXT.count("\n"), fmt
        back = cli(["tokenize", "-t", bpe, "--decode", "--from", fmt], input=result.stdout)
        assert back.stdout == TEXT, fmt
    rows = [json.loads(line) for line in cli(["tokenize", "-t", bpe, "--format", "jsonl"],
                                             input="the soup\n\n").stdout.splitlines()]
    assert rows[1] == {"ids": [], "pieces": []} and "".join(rows[0]["pieces"]) == "the▁soup"


def test_add_bos_eos(cli, bpe):
    ids = cli(["tokenize", "-t", bpe, "--format", "ids", "--add-bos", "--add-eos"], input="soup\n\n").stdout
    first, empty = ids.splitlines()
    assert first.startswith("2 ") and first.endswith(" 3") and empty == "2 3"
    pieces = cli(["tokenize", "-t", bpe, "--add-bos"], input="soup\n").stdout
    assert pieces.startswith("<s> ")
    one_line_error(cli(["tokenize", "-t", bpe, "--decode", "--add-bos"], input="1\n"), "--add-bos")


def test_unknown_characters_are_warned_about(cli, bpe):
    result = cli(["tokenize", "-t", bpe, "--format", "ids"], input="soup ☸\n")
    assert result.exit_code == 0 and "<unk>" in result.stderr and "☸" in result.stderr
    assert result.stdout.split()[-1] == "1"


def test_pipeline_through_real_processes(bpe, tmp_text, tmp_path):
    text = tmp_text(TEXT + "the last soup stirs slowly", "x.txt")
    encode = [sys.executable, "-m", "seqtool", "tokenize", "-t", str(bpe), "--format", "ids"]
    decode = [sys.executable, "-m", "seqtool", "tokenize", "-t", str(bpe), "--decode", "--from", "ids"]
    with open(text, "rb") as stdin:
        first = subprocess.Popen(encode, stdin=stdin, stdout=subprocess.PIPE)
        second = subprocess.run(decode, stdin=first.stdout, capture_output=True)
        first.stdout.close()
    assert first.wait() == 0 and second.returncode == 0, second.stderr
    assert second.stdout.decode() == TEXT + "the last soup stirs slowly\n"


def test_word_level_pipeline_returns_normalised_text(cli, corpus, tmp_path):
    assert cli(["build-vocab", corpus, "--kind", "word", "--lowercase", "-o", tmp_path / "w"]).exit_code == 0
    ids = cli(["tokenize", "-t", tmp_path / "w", "--format", "ids"], input="The cook--slowly!\n").stdout
    assert cli(["tokenize", "-t", tmp_path / "w", "--decode"], input=ids).stdout == "the cook -- slowly !\n"


def test_inputs_files_globs_gz_and_stdin(cli, tmp_path, tmp_text):
    tmp_text("alpha beta\n", "d/a.txt")
    with gzip.open(tmp_path / "d" / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("gamma\n")
    result = cli(["build-vocab", tmp_path / "d" / "*.txt", tmp_path / "d" / "b.txt.gz", "--kind", "char",
                  "-o", tmp_path / "tok", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["lines"] == 2
    result = cli(["build-vocab", "-", "--kind", "word", "-o", tmp_path / "w", "--json"], input="a b\nb\n")
    assert result.exit_code == 0 and json.loads(result.stdout)["tokens"] == 3
    out = cli(["tokenize", "-t", tmp_path / "tok", tmp_path / "d" / "a.txt", "-"], input="ab\n").stdout
    assert out == "a l p h a ▁ b e t a\na b\n"


def test_crlf_input(cli, tmp_text, tmp_path):
    path = tmp_text(b"one two\r\nthree\r\n")
    assert cli(["build-vocab", path, "--kind", "char", "-o", tmp_path / "tok"]).exit_code == 0
    assert "\r" not in json.loads((tmp_path / "tok" / "tokenizer.json").read_text())["vocab"]
    assert cli(["tokenize", "-t", tmp_path / "tok"], input=b"one\r\n").stdout == "o n e\n"


def assert_nothing_written(tmp_path, *allowed):
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(allowed)


@pytest.mark.parametrize("content, words", [
    (b"", ["empty corpus"]),
    (b"  \n\n\t\n", ["empty corpus"]),
    (b"text\nbin\x00ary\n", ["corpus.txt:2:", "binary"]),
    (b"fine\nfine\ncaf\xe9\n", ["corpus.txt:3:", "invalid UTF-8", "--encoding-errors"]),
])
@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_bad_corpus_is_one_line_and_leaves_nothing(cli, tmp_text, tmp_path, content, words, kind):
    path = tmp_text(content)
    result = cli(["build-vocab", path, "--kind", kind, "--vocab-size", "30", "-o", tmp_path / "tok"])
    one_line_error(result, *words)
    assert_nothing_written(tmp_path, "corpus.txt")


def test_encoding_errors_replace_proceeds(cli, tmp_text, tmp_path):
    path = tmp_text(b"caf\xe9 ok\n")
    result = cli(["build-vocab", path, "--kind", "char", "--encoding-errors", "replace",
                  "-o", tmp_path / "t"])
    assert result.exit_code == 0, result.stderr
    assert cli(["tokenize", "-t", tmp_path / "t", path]).exit_code == 2
    replaced = cli(["tokenize", "-t", tmp_path / "t", path, "--encoding-errors", "replace"])
    assert replaced.stdout == "c a f \ufffd ▁ o k\n"


def test_missing_file_directory_and_long_line(cli, tmp_path, tmp_text):
    one_line_error(cli(["build-vocab", tmp_path / "nope.txt", "-o", tmp_path / "tok"]), "file not found")
    (tmp_path / "dir").mkdir()
    one_line_error(cli(["build-vocab", tmp_path / "dir", "-o", tmp_path / "tok"]), "is a directory")
    long = tmp_text("short\n" + "x" * 10_000_000 + "\n", "long.txt")
    one_line_error(cli(["build-vocab", long, "--kind", "char", "-o", tmp_path / "tok"]),
                   "long.txt:2:", "--max-line-chars")
    one_line_error(cli(["tokenize", "-t", tmp_path / "nope", long]), "does not exist")
    assert_nothing_written(tmp_path, "dir", "long.txt")


def test_unknown_kind_lists_choices(cli, corpus, tmp_path):
    one_line_error(cli(["build-vocab", corpus, "--kind", "wordpiece", "-o", tmp_path / "tok"]),
                   "'char', 'word', 'bpe', 'unigram'")
    assert_nothing_written(tmp_path, "corpus.txt")


def test_vocab_too_large_says_how_to_fix(cli, corpus, tmp_path):
    one_line_error(cli(["build-vocab", corpus, "--vocab-size", "100000", "-o", tmp_path / "tok"]),
                   "at most", "--vocab-size")
    assert_nothing_written(tmp_path, "corpus.txt")


def test_missing_and_corrupt_tokenizer(cli, bpe, tmp_path):
    one_line_error(cli(["tokenize"], input="x\n"), "no tokenizer")
    (tmp_path / "empty").mkdir()
    one_line_error(cli(["tokenize", "-t", tmp_path / "empty"], input="x\n"), "tokenizer.json")
    (bpe / "tokenizer.json").write_text("{")
    one_line_error(cli(["tokenize", "-t", bpe], input="x\n"), "corrupt")


def test_bad_ids_to_decode(cli, bpe):
    one_line_error(cli(["tokenize", "-t", bpe, "--decode"], input="5 6\nseven\n"), "input line 2")
    one_line_error(cli(["tokenize", "-t", bpe, "--decode"], input="99999\n"), "out of range")


def test_rebuild_replaces_and_refuses_other_directories(cli, corpus, bpe, tmp_path):
    assert cli(["build-vocab", corpus, "--kind", "char", "-o", bpe]).exit_code == 0
    assert json.loads((bpe / "tokenizer.json").read_text())["kind"] == "char"
    assert not (bpe / "spm.model").exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    one_line_error(cli(["build-vocab", corpus, "--kind", "char", "-o", tmp_path / "notes"]), "refusing")
    assert os.listdir(tmp_path / "notes") == ["keep.txt"]


def test_parallel_joint_and_separate_with_workspace(cli, tmp_text, tmp_path):
    src = tmp_text("the soup is hot\nadd salt\n", "train.en")
    tgt = tmp_text("la soupe est chaude\najoutez du sel\n", "train.fr")
    result = cli(["build-vocab", "--src", src, "--tgt", tgt, "--joint", "--kind", "word",
                  "-w", tmp_path / "ws", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["lines"] == 4
    assert (tmp_path / "ws" / "tokenizer" / "tokenizer.json").is_file()
    assert cli(["tokenize", "-t", tmp_path / "ws"], input="la soupe\n").stdout == "la soupe\n"

    result = cli(["build-vocab", "--src", src, "--tgt", tgt, "--kind", "char",
                  "-o", tmp_path / "sep", "--json"])
    stats = json.loads(result.stdout)
    assert stats["src"]["lines"] == stats["tgt"]["lines"] == 2
    assert "é" not in json.loads((tmp_path / "sep" / "src" / "tokenizer.json").read_text())["vocab"]
    one_line_error(cli(["tokenize", "-t", tmp_path / "sep"], input="x\n"), "--side")
    assert cli(["tokenize", "-t", tmp_path / "sep", "--side", "tgt"], input="sel\n").stdout == "s e l\n"
    assert cli(["-w", tmp_path / "ws", "tokenize"], input="sel\n").stdout == "sel\n"  # global -w
    one_line_error(cli(["build-vocab", "--src", src, "-o", tmp_path / "x"]), "--src and --tgt")


def test_sample_is_seeded_and_recorded(cli, corpus, tmp_path):
    for name in ("a", "b"):
        args = ["build-vocab", corpus, "--kind", "word", "--sample", "10", "--seed", "7",
                "-o", tmp_path / name]
        assert cli(args).exit_code == 0
    a, b = (json.loads((tmp_path / n / "tokenizer.json").read_text()) for n in ("a", "b"))
    assert a == b and a["options"]["sample"] == 10 and a["options"]["seed"] == 7


RUN = """import sys
from seqtool.cli import main
sys.argv = {argv!r}
try:
    main()
except SystemExit:
    pass
print('torch' in sys.modules, file=sys.stderr)
"""


def test_help_tokenize_and_build_vocab_do_not_import_torch(bpe, corpus, tmp_path):
    for argv in (["seqtool", "--help"], ["seqtool", "tokenize", "-t", str(bpe), str(corpus)],
                 ["seqtool", "build-vocab", str(corpus), "--kind", "char", "-o", str(tmp_path / "c")]):
        proc = subprocess.run([sys.executable, "-c", RUN.format(argv=argv)], capture_output=True, text=True)
        assert proc.stderr.strip().endswith("False"), (argv, proc.stderr)


def test_build_vocab_measures_its_statistics_on_a_bounded_seeded_sample(cli, tmp_text, tmp_path, monkeypatch):
    from seqtool.data import tokenized

    encoded = []  # every line each call encodes

    def recorded(tok, lines):
        lines = list(lines)
        encoded.extend(lines)
        return real(tok, lines)

    real = tokenized.corpus_stats
    monkeypatch.setattr(tokenized, "corpus_stats", recorded)
    words = tmp_text("".join(f"line {i} of {'ab' * (i % 7)}\n" for i in range(500)))
    runs = [json.loads(cli(["build-vocab", words, "--kind", "word", "-o", tmp_path / f"t{i}", "--json",
                            "--stats-lines", "40"]).stdout) for i in range(2)]
    assert runs[0] == {**runs[1], "output": runs[0]["output"]}  # seeded: the same sample each time
    assert (runs[0]["lines"], runs[0]["measured_lines"]) == (500, 40) and len(encoded) == 80  # 40 per run
    assert runs[0]["tokens"] == sum(len(line.split()) for line in encoded[:40])

    encoded.clear()
    every = json.loads(cli(["build-vocab", words, "--kind", "word", "-o", tmp_path / "all", "--json",
                            "--stats-lines", "0"]).stdout)
    assert every["lines"] == 500 and "measured_lines" not in every and len(encoded) == 500
    bad = cli(["build-vocab", words, "-o", tmp_path / "bad", "--stats-lines", "-3"])
    one_line_error(bad, "--stats-lines")
