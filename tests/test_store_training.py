"""Training from the token store: a store-backed run trains on exactly the batches of the in-memory path,
a resume reuses the store and continues bit-identically, a prebuilt shared store (tokenize --format
store) is used as it is, and a corrupt or mismatched store is one clear error."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seqtool.cli import app
from seqtool.data import store
from seqtool.storage import load_tensors

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "red", "hat"]
TRAIN = ["--cell", "gru", "--n-layers", "1", "--hidden", "16", "--embedding", "16", "--batch-size", "4",
         "--bptt", "16", "--eval-every", "3", "--set", "run.checkpoint_every=3", "--device", "cpu",
         "--seed", "1", "--kind", "char", "--set", "run.eval_batches=4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(8)) + "\n" for _ in range(200)))
    return path


def train(files: list[str], ws: Path, steps: int, *extra: str, stdin: str | None = None) -> list[dict]:
    result = CliRunner().invoke(app, ["--log-format", "json", "train-rnn", *files, "-w", str(ws), *TRAIN,
                                      "--max-steps", str(steps), *extra], input=stdin)
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 0, lines[-3:]
    return lines


def messages(lines: list[dict]) -> str:
    return "\n".join(str(line.get("message", "")) for line in lines)


def published(ws: Path) -> dict[str, torch.Tensor]:
    return load_tensors(ws / "model.safetensors")


def validations(ws: Path) -> list[dict]:
    """The validation scores in WS/metrics.jsonl (times aside)."""
    rows = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    drop = ("time", "elapsed")
    return [{k: v for k, v in row.items() if k not in drop} for row in rows if row.get("event") == "valid"]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """6 steps from the file (so from WS/store), uninterrupted."""
    ws = tmp_path_factory.mktemp("ref") / "ws"
    lines = train([str(corpus)], ws, 6)
    assert "token store: built" in messages(lines)
    return ws


def test_a_store_backed_run_trains_as_the_in_memory_path(corpus, reference, tmp_path):
    # stdin is read and encoded in memory (no store): the same tokens must give the same weights
    lines = train(["-"], tmp_path / "ws", 6, stdin=corpus.read_text())
    assert "token store" not in messages(lines)
    assert not (tmp_path / "ws" / "store").exists()
    assert_same(published(reference), published(tmp_path / "ws"))
    # bits per byte and word perplexity: the store's counts of the held-out text = counting the lines
    stored, in_memory = validations(reference), validations(tmp_path / "ws")
    assert stored == in_memory and all(v["bpb"] > 0 and v["word_ppl"] > 1 for v in stored)


def test_resume_reuses_the_store_and_is_bit_identical(corpus, reference, tmp_path):
    ws = tmp_path / "ws"
    train([str(corpus)], ws, 3)
    entry = next((ws / "store").iterdir())
    built_at = (entry / store.TOKENS).stat().st_mtime_ns
    lines = train([str(corpus)], ws, 6)  # resumes from the checkpoint at step 3
    assert "token store: reusing" in messages(lines)
    assert (entry / store.TOKENS).stat().st_mtime_ns == built_at
    assert_same(published(reference), published(ws))


def test_a_prebuilt_shared_store_is_used_by_every_run(corpus, reference, tmp_path):
    runner = CliRunner()
    tok = tmp_path / "tok"
    result = runner.invoke(app, ["build-vocab", str(corpus), "-o", str(tok), "--kind", "char"])
    assert result.exit_code == 0, result.output
    shared = tmp_path / "shared"
    result = runner.invoke(app, ["tokenize", str(corpus), "-t", str(tok), "--format", "store", "-o",
                                 str(shared)])
    assert result.exit_code == 0 and "built" in result.stderr, result.stderr
    entries = list(shared.iterdir())
    for name in ("a", "b"):
        lines = train([str(corpus)], tmp_path / name, 3, "-t", str(tok), "--data-store", str(shared))
        assert "token store: reusing" in messages(lines)
        assert not (tmp_path / name / "store").exists()
    assert list(shared.iterdir()) == entries


def test_a_corrupt_store_is_one_error_line_with_exit_2(corpus, tmp_path):
    ws = tmp_path / "ws"
    train([str(corpus)], ws, 3)
    tokens = next((ws / "store").iterdir()) / store.TOKENS
    tokens.write_bytes(tokens.read_bytes()[:100])
    result = CliRunner().invoke(app, ["train-rnn", str(corpus), "-w", str(ws), *TRAIN, "--max-steps", "6"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.stderr
    assert "is corrupt" in errors[0] and "Traceback" not in result.stderr


def test_a_store_entry_of_other_data_is_refused(corpus, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("a different text\n" * 50)
    ws = tmp_path / "ws"
    train([str(other)], ws, 1)
    entry = next((ws / "store").iterdir())  # an entry passed as the store itself
    result = CliRunner().invoke(app, ["train-rnn", str(corpus), "-w", str(tmp_path / "ws2"), *TRAIN,
                                      "--max-steps", "1", "--data-store", str(entry)])
    assert result.exit_code == 2, result.stderr
    assert "built from other data or another tokenizer" in result.stderr


def test_finetune_reads_its_training_text_from_the_store(corpus, reference, tmp_path):
    def finetune(data: str, ws: Path, steps: int, stdin: str | None = None) -> None:
        result = CliRunner().invoke(app, ["finetune", "--from", str(reference), "--data", data, "-w", str(ws),
                                          "--max-steps", str(steps), "--eval-every", "2", "--batch-size", "4",
                                          "--context", "16", "--device", "cpu", "--set",
                                          "run.checkpoint_every=2"], input=stdin)
        assert result.exit_code == 0, result.stderr

    finetune(str(corpus), tmp_path / "stored", 2)
    finetune("-", tmp_path / "in-memory", 2, stdin=corpus.read_text())
    assert_same(published(tmp_path / "stored"), published(tmp_path / "in-memory"))
    assert not (tmp_path / "in-memory" / "store").exists()
    entry = next((tmp_path / "stored" / "store").iterdir())
    built_at = (entry / store.TOKENS).stat().st_mtime_ns
    finetune(str(corpus), tmp_path / "stored", 4)  # resumes: the store is read, not built again
    assert (entry / store.TOKENS).stat().st_mtime_ns == built_at


def test_the_held_out_size_comes_from_the_store_without_reading_the_text(corpus, tmp_path, monkeypatch):
    from seqtool.config import TokenizerConfig
    from seqtool.data import io
    from seqtool.data.tokenizers import train_tokenizer
    from seqtool.metrics import TextSize, text_size
    from seqtool.training import streams
    from seqtool.training.transformer import TransformerDataConfig
    from seqtool.workspace import Workspace

    lines = corpus.read_text().splitlines()
    tok = train_tokenizer("char", lines)
    tok.save(tmp_path / "tok")
    data = TransformerDataConfig(train=[str(corpus)])
    ws = Workspace.create(tmp_path / "ws", "transformer-lm", {})
    streams.token_streams(data, TokenizerConfig(path=str(tmp_path / "tok")), ws, False, 1, lambda m: None)

    def no_reading(*args, **kwargs):
        raise AssertionError("the text was read again")

    monkeypatch.setattr(io, "iter_lines", no_reading)
    monkeypatch.setattr(streams, "iter_lines", no_reading)
    again = streams.token_streams(data, TokenizerConfig(), ws, True, 1, lambda m: None)  # a resume
    held_out = lines[len(lines) - int(len(lines) * data.valid_fraction):]
    assert isinstance(again.valid_text, TextSize)
    assert again.valid_text == text_size(held_out, again.valid_ids.numel() - 1)


def test_a_start_reads_an_unchanged_data_file_no_more_and_sees_a_changed_one(corpus, tmp_path, monkeypatch):
    import os

    from seqtool import storage

    data = tmp_path / "train.txt"
    data.write_bytes(corpus.read_bytes())
    settled = 10**18  # an mtime long past (a file written this instant is read again, whatever its stat)
    os.utime(data, ns=(settled, settled))
    shared = tmp_path / "shared"
    train([str(data)], tmp_path / "ws", 3, "--data-store", str(shared))
    reads: list[str] = []
    real = storage.sha256_file
    monkeypatch.setattr(storage, "sha256_file", lambda p: reads.append(str(p)) or real(p))
    data_reads = lambda: [p for p in reads if p == str(data.resolve())]  # noqa: E731 (checkpoints are hashed too)
    lines = train([str(data)], tmp_path / "ws", 6, "--data-store", str(shared))  # a resume
    assert "token store: reusing" in messages(lines) and data_reads() == []
    lines = train([str(data)], tmp_path / "fresh", 3, "--data-store", str(shared))  # a new run, same store
    assert "token store: reusing" in messages(lines) and data_reads() == []
    # a change of size (or of mtime) is seen: the file is read again, the run warns and trains on it
    data.write_bytes(corpus.read_bytes() + b"the cat sat\n")
    os.utime(data, ns=(settled + 1, settled + 1))
    lines = train([str(data)], tmp_path / "ws", 9, "--data-store", str(shared))
    assert "changed since this run began" in messages(lines) and "token store: built" in messages(lines)
    assert len(data_reads()) == 1


def test_the_workspace_store_keeps_only_the_entries_its_latest_run_used(corpus, tmp_path):
    import os

    data, ws = tmp_path / "train.txt", tmp_path / "ws"
    data.write_bytes(corpus.read_bytes())
    train([str(data)], ws, 3)
    first = next((ws / "store").iterdir())
    killed = ws / "store" / f".{'0' * 32}.abcd1234.tmp"  # a build a kill cut short
    killed.mkdir()
    (killed / store.TOKENS).write_bytes(b"\0" * 100)
    long_ago = lambda entry: os.utime(entry / store.MANIFEST, ns=(10**18, 10**18))  # noqa: E731
    long_ago(first)  # as if the last run were long ago: a run keeps what it uses (it stamps it)
    lines = train([str(data)], ws, 6)  # a resume on the same data: its entry is kept
    assert list((ws / "store").iterdir()) == [first] and "removed" not in messages(lines)
    long_ago(first)
    data.write_bytes(corpus.read_bytes() + b"the cat sat\n")  # new contents: a new entry, the old one goes
    lines = train([str(data)], ws, 9)
    entries = list((ws / "store").iterdir())
    assert len(entries) == 1 and entries[0] != first
    assert f"token store: removed 1 entry ({first.name[:12]};" in messages(lines)


def test_tokenize_prune_removes_older_entries_of_these_files_only(corpus, tmp_path):
    runner = CliRunner()
    shared = tmp_path / "shared"
    other = tmp_path / "other.txt"
    other.write_text("another corpus\n" * 20)
    toks = []
    for name, extra in (("tok", []), ("lower", ["--lowercase"])):
        result = runner.invoke(app, ["build-vocab", str(corpus), str(other), "-o", str(tmp_path / name),
                                     "--kind", "char", *extra])
        assert result.exit_code == 0, result.output
        toks.append(str(tmp_path / name))

    def tokenize(files: list[str], tok: str, *extra: str) -> str:
        result = runner.invoke(app, ["tokenize", *files, "-t", tok, "--format", "store", "-o", str(shared),
                                     *extra])
        assert result.exit_code == 0, result.stderr
        return result.stderr

    tokenize([str(corpus)], toks[0])
    tokenize([str(other)], toks[0])
    assert len(list(shared.iterdir())) == 2
    out = tokenize([str(corpus)], toks[1], "--prune")  # the corpus with a new tokenizer: its old entry goes
    assert "removed 1 entry" in out
    kept = {json.loads((e / store.MANIFEST).read_text())["sources"][0]["path"] for e in shared.iterdir()}
    assert kept == {str(corpus.resolve()), str(other.resolve())} and len(list(shared.iterdir())) == 2
    assert "no other entry" in tokenize([str(corpus)], toks[1], "--prune")
    result = runner.invoke(app, ["tokenize", str(corpus), "-t", toks[0], "--prune"])
    assert result.exit_code == 2 and "--prune goes with --format store" in result.stderr
