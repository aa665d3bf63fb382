"""Translation models training from the token store: train-seq2seq and train-transformer --arch
encoder-decoder on files train exactly as on the same pairs read in memory (stdin), a resume reuses the
stored sides and continues bit-identically, a prebuilt store (tokenize --format store --src/--tgt) is used
as it is, and mismatched files or a corrupt side are one error line with exit 2."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqtool.cli import app
from seqtool.data import store
from tests.test_store_training import assert_same, messages, published

WORDS = {"the": "le", "cat": "chat", "sat": "assis", "on": "sur", "a": "un", "mat": "tapis", "and": "et",
         "dog": "chien", "ran": "couru", "to": "vers", "red": "rouge", "hat": "chapeau"}
COMMON = ["--device", "cpu", "--seed", "1", "--kind", "word", "--batch-tokens", "64", "--max-len", "8",
          "--set", "run.checkpoint_every=2", "--eval-every", "2", "--set", "valid.max_sentences=4"]
ARCHS = {
    "seq2seq": ["train-seq2seq", "--hidden", "16", "--embedding", "16", "--n-layers", "1"],
    "transformer": ["train-transformer", "--arch", "encoder-decoder", "--d-model", "16", "--n-heads", "2",
                    "--n-layers", "1", "--d-ff", "32"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = random.Random(0)
    src, tgt = [], []
    for _ in range(240):
        words = [rng.choice(list(WORDS)) for _ in range(rng.randint(1, 9))]  # some longer than --max-len
        src.append(" ".join(words))
        tgt.append(" ".join(WORDS[w] for w in words))
    src[3], tgt[8] = "  ", ""  # skipped: an empty source, an empty target
    root = tmp_path_factory.mktemp("pairs")
    (root / "train.en").write_text("\n".join(src) + "\n")
    (root / "train.fr").write_text("\n".join(tgt) + "\n")
    (root / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt, strict=True)))
    return root


def train(arch: str, ws: Path, steps: int, *data_args: str, stdin: str | None = None) -> list[dict]:
    result = CliRunner().invoke(app, ["--log-format", "json", *ARCHS[arch], "-w", str(ws), *COMMON,
                                      "--max-steps", str(steps), *data_args], input=stdin)
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 0, lines[-3:]
    return lines


def files(data: Path) -> list[str]:
    return ["--src", str(data / "train.en"), "--tgt", str(data / "train.fr")]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[str, Path]:
    """4 steps of each arch from the files (so from WS/store), uninterrupted."""
    out = {}
    for arch in ARCHS:
        ws = tmp_path_factory.mktemp(arch) / "ws"
        lines = train(arch, ws, 4, *files(data))
        assert messages(lines).count("token store: built") == 2  # the source side and the target side
        out[arch] = ws
    return out


@pytest.mark.parametrize("arch", list(ARCHS))
def test_a_store_backed_translation_run_trains_as_the_in_memory_path(arch, data, reference, tmp_path):
    # stdin is read and encoded in memory (no store): the same pairs must give the same weights
    lines = train(arch, tmp_path / "ws", 4, "--src", "-", "--tgt", str(data / "train.fr"),
                  stdin=(data / "train.en").read_text())
    assert "token store" not in messages(lines)
    assert not (tmp_path / "ws" / "store").exists()
    assert_same(published(reference[arch]), published(tmp_path / "ws"))
    def report(log: list[dict]) -> list[str]:  # what was kept and skipped, without the file names
        return [m.rsplit(": ", 1)[1] for m in messages(log).splitlines() if "pair" in m]

    assert report(train(arch, tmp_path / "again", 4, *files(data))) == report(lines)


def test_a_tsv_is_stored_as_its_two_columns(data, reference, tmp_path):
    lines = train("seq2seq", tmp_path / "ws", 4, "--tsv", str(data / "train.tsv"))
    assert messages(lines).count("token store: built") == 2
    assert_same(published(reference["seq2seq"]), published(tmp_path / "ws"))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_resume_reuses_the_stored_pairs_and_is_bit_identical(arch, data, reference, tmp_path):
    ws = tmp_path / "ws"
    train(arch, ws, 2, *files(data))
    entries = sorted((ws / "store").iterdir())
    built_at = [(e / store.TOKENS).stat().st_mtime_ns for e in entries]
    lines = train(arch, ws, 4, *files(data))  # resumes from the checkpoint at step 2
    assert messages(lines).count("token store: reusing") == 2 and "token store: built" not in messages(lines)
    assert sorted((ws / "store").iterdir()) == entries
    assert [(e / store.TOKENS).stat().st_mtime_ns for e in entries] == built_at
    assert_same(published(reference[arch]), published(ws))


def test_a_prebuilt_parallel_store_is_used_as_it_is(data, reference, tmp_path):
    runner = CliRunner()
    shared = tmp_path / "shared"
    tok = reference["seq2seq"]  # a translation workspace holds tokenizer/src and tokenizer/tgt
    result = runner.invoke(app, ["tokenize", "--src", str(data / "train.en"), "--tgt", str(data / "train.fr"),
                                 "-t", str(tok), "--format", "store", "-o", str(shared)])
    assert result.exit_code == 0 and "240 pairs" in result.stderr, result.stderr
    entries = sorted(shared.iterdir())
    assert len(entries) == 2
    lines = train("seq2seq", tmp_path / "ws", 2, *files(data), "-t", str(tok / "tokenizer"), "--data-store",
                  str(shared))
    assert messages(lines).count("token store: reusing") == 2
    assert not (tmp_path / "ws" / "store").exists() and sorted(shared.iterdir()) == entries


def error_lines(args: list[str]) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, [line for line in result.stderr.splitlines() if line.startswith("error:")], \
        result.stderr


def test_mismatched_line_counts_are_one_error_line_naming_both_files(data, tmp_path):
    short = tmp_path / "short.fr"
    short.write_text("".join(data.joinpath("train.fr").read_text().splitlines(keepends=True)[:-3]))
    code, errors, stderr = error_lines([*ARCHS["seq2seq"], "-w", str(tmp_path / "ws"), *COMMON, "--max-steps",
                                        "1", "--src", str(data / "train.en"), "--tgt", str(short)])
    assert code == 2 and len(errors) == 1, stderr
    assert "train.en has 240 lines but" in errors[0] and "short.fr has 237" in errors[0]
    assert "Traceback" not in stderr


def test_a_corrupt_stored_side_is_one_error_line_with_exit_2(data, tmp_path):
    ws = tmp_path / "ws"
    train("seq2seq", ws, 2, *files(data))
    tokens = sorted((ws / "store").iterdir())[0] / store.TOKENS
    tokens.write_bytes(tokens.read_bytes()[:50])
    code, errors, stderr = error_lines([*ARCHS["seq2seq"], "-w", str(ws), *COMMON, "--max-steps", "4",
                                        *files(data)])
    assert code == 2 and len(errors) == 1, stderr
    assert "is corrupt" in errors[0] and "Traceback" not in stderr


def test_finetune_of_a_translation_model_reads_its_pairs_from_the_store(data, reference, tmp_path):
    def finetune(ws: Path, steps: int, src: str, stdin: str | None = None) -> str:
        result = CliRunner().invoke(app, ["--log-format", "json", "finetune", "--from",
                                          str(reference["seq2seq"]), "--src", src, "--tgt",
                                          str(data / "train.fr"), "-w", str(ws),
                                          "--max-steps", str(steps), "--eval-every", "2", "--device", "cpu",
                                          "--set", "run.checkpoint_every=2"], input=stdin)
        assert result.exit_code == 0, result.stderr[-2000:]
        return result.stderr

    finetune(tmp_path / "stored", 2, str(data / "train.en"))
    finetune(tmp_path / "in-memory", 2, "-", stdin=(data / "train.en").read_text())
    assert_same(published(tmp_path / "stored"), published(tmp_path / "in-memory"))
    assert not (tmp_path / "in-memory" / "store").exists()
    entries = sorted((tmp_path / "stored" / "store").iterdir())
    built_at = [(e / store.TOKENS).stat().st_mtime_ns for e in entries]
    finetune(tmp_path / "stored", 4, str(data / "train.en"))  # resumes: the sides are read, not built again
    assert [(e / store.TOKENS).stat().st_mtime_ns for e in entries] == built_at
