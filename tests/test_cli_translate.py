"""train-seq2seq → translate → bleu → attention-map through the real app, and their errors."""

from __future__ import annotations

import json
import os
import random
import socket

import numpy as np
import pytest
import torch
import yaml

from seqtool.workspace import Workspace

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]


def write_pairs(directory, n=160, seed=0):
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
        src.append(" ".join(words))
        tgt.append(" ".join(w.upper() for w in reversed(words)))
    (directory / "train.src").write_text("\n".join(src) + "\n")
    (directory / "train.tgt").write_text("\n".join(tgt) + "\n")
    return src, tgt


TRAIN = ["--kind", "word", "--embedding", "16", "--hidden", "32", "--batch-tokens", "200", "--lr", "0.01",
         "--eval-every", "10", "--checkpoint-every", "20", "--max-steps", "20", "--dropout", "0"]


@pytest.fixture(scope="module")
def trained(one_thread, tmp_path_factory):
    """One small trained translation workspace shared by the tests below."""
    from typer.testing import CliRunner

    from seqtool.cli import app

    root = tmp_path_factory.mktemp("mt")
    write_pairs(root)
    ws = root / "ws"
    result = CliRunner().invoke(app, ["--log-format", "plain", "train-seq2seq", "-w", str(ws),
                                      "--src", str(root / "train.src"), "--tgt", str(root / "train.tgt"),
                                      "--attention", "general", "--bidirectional", "--seed", "3", *TRAIN])
    assert result.exit_code == 0, result.output
    return root, ws, result


def test_train_seq2seq_publishes_best_by_bleu(trained):
    _, ws, result = trained
    meta = yaml.safe_load((ws / "seqtool.yaml").read_text())
    assert meta["kind"] == "seq2seq" and meta["status"]["best_metric"] == "bleu"
    assert meta["config"]["model"]["attention"] == "general" and meta["config"]["model"]["bidirectional"]
    assert (ws / "model.safetensors").exists() and (ws / "tokenizer" / "src").is_dir()
    events = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    assert any(e["event"] == "valid" and "bleu" in e for e in events)
    assert "pairs kept" in result.stderr


def test_translate_keeps_line_alignment(cli, trained, tmp_path):
    root, ws, _ = trained
    text = "a b c\n\nd e\n   \nh\n"
    (tmp_path / "in.txt").write_text(text)
    result = cli(["translate", "-w", ws, tmp_path / "in.txt"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.split("\n")[:-1]
    assert len(lines) == 5 and lines[1] == "" and lines[3] == ""
    assert all(lines[i] for i in (0, 2, 4))
    stdin = cli(["translate", "-w", ws, "-", "--batch-size", "2"], input=text)
    assert stdin.stdout == result.stdout  # batching does not change the output
    greedy_scored = cli(["translate", "-w", ws, "--scores"], input="a b c\n")
    beam_one = cli(["translate", "-w", ws, "--beam", "1", "--no-repeat-ngram", "9", "--scores"],
                   input="a b c\n")
    assert greedy_scored.stdout == beam_one.stdout  # the beam-search path with beam 1 is greedy


def test_translate_beam_nbest_formats(cli, trained):
    _, ws, _ = trained
    args = ["translate", "-w", ws, "--beam", "4", "--nbest", "3", "--length-penalty", "0.6",
            "--max-len-a", "1", "--max-len-b", "3", "--no-repeat-ngram", "3"]
    tsv = cli(args, input="a b\n\nc d e\n")
    assert tsv.exit_code == 0, tsv.stderr
    rows = [line.split("\t") for line in tsv.stdout.splitlines()]
    assert [r[:2] for r in rows if r[0] == "1"] == [["1", "1"], ["1", "2"], ["1", "3"]]
    assert rows[3] == ["2", "1", "0.0000", ""]  # the empty line keeps its place
    scores = [float(r[2]) for r in rows if r[0] == "3"]
    assert scores == sorted(scores, reverse=True)
    assert all(len(r[3].split()) <= 1 * 4 + 3 for r in rows)  # a·|source + </s>| + b
    jsonl = cli([*args, "--nbest-format", "jsonl"], input="a b\n\nc d e\n")
    objs = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [o["line"] for o in objs] == [1, 2, 3] and len(objs[0]["nbest"]) == 3


def test_translate_help_explains_the_length_penalty(cli):
    text = " ".join(cli(["translate", "--help"]).stdout.split())  # undo the help's line wrapping
    assert "((5 + |Y|) / 6)^α" in text and "Larger α favours longer outputs" in text


def test_bleu_on_translations(cli, trained, tmp_path):
    root, ws, _ = trained
    hyp = cli(["translate", "-w", ws, root / "train.src"]).stdout
    (tmp_path / "hyp.txt").write_text(hyp)
    result = cli(["bleu", tmp_path / "hyp.txt", root / "train.tgt", "--json"])
    assert result.exit_code == 0 and 0.0 <= json.loads(result.stdout)[0]["score"] <= 100.0


def test_attention_map_outputs(cli, trained, tmp_path):
    _, ws, _ = trained
    for suffix in ("png", "svg", "pdf"):
        out = tmp_path / f"map.{suffix}"
        result = cli(["attention-map", "-w", ws, "--source", "a b c d", "-o", out])
        assert result.exit_code == 0, result.stderr
        assert out.stat().st_size > 0
    result = cli(["attention-map", "-w", ws, "--source", "a b c", "--target", "C B A", "--format", "terminal",
                  "--dump", "json", "-o", tmp_path / "forced.png"])
    assert result.exit_code == 0, result.stderr
    assert "</s>" in result.stdout and "C" in result.stdout
    dumped = json.loads((tmp_path / "forced.json").read_text())
    weights = np.array(dumped["weights"])  # (layers, heads, target, source)
    assert weights.shape == (1, 1, 4, 4) and dumped["target_tokens"] == ["C", "B", "A", "</s>"]
    assert np.allclose(weights.sum(-1), 1.0, atol=1e-4)
    (tmp_path / "two.txt").write_text("a b\n\nc d\n")
    result = cli(["attention-map", "-w", ws, "--input", tmp_path / "two.txt", "--dump", "npy"])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (ws / "attention").iterdir()) == [
        "attention-001.npy", "attention-001.png", "attention-002.npy", "attention-002.png"]
    assert np.load(ws / "attention" / "attention-002.npy").shape[:2] == (1, 1)


def test_resume_and_config_round_trip(cli, trained, tmp_path):
    root, ws, _ = trained
    again = cli(["train-seq2seq", "-w", ws, "--config", ws / "seqtool.yaml", "--resume", "auto",
                 "--max-steps", "26"])
    assert again.exit_code == 0, again.stderr
    assert "resumed from step-0000020" in again.stderr
    assert yaml.safe_load((ws / "seqtool.yaml").read_text())["status"]["step"] == 26


def test_shared_plumbing_resume_json_summary_and_divergence(cli, tmp_path):
    from seqtool.workspace import load_tensors

    write_pairs(tmp_path, n=60)

    def train(ws, steps, *extra):
        result = cli(["--log-format", "json", "train-seq2seq", "-w", tmp_path / ws,
                      "--src", tmp_path / "train.src", "--tgt", tmp_path / "train.tgt", "--kind", "word",
                      "--embedding", "8", "--hidden", "16", "--batch-tokens", "120", "--eval-every", "3",
                      "--checkpoint-every", "3", "--seed", "5", "--set", "valid.max_sentences=4",
                      "--max-steps", str(steps), *extra])
        return result.exit_code, [json.loads(line) for line in result.stderr.splitlines()]

    code, lines = train("whole", 6)
    assert code == 0 and lines[-1]["event"] == "summary" and lines[-1]["status"] == "finished"
    assert lines[-1]["steps"] == 6 and lines[-1]["best_metric"] == "bleu"
    assert any(e["event"] == "info" and "translate with" in e["message"] for e in lines)
    assert train("whole", 6)[1][-1]["status"] == "already-finished"  # re-running a finished run: a no-op
    assert train("parts", 3)[0] == 0 and train("parts", 6)[0] == 0  # --resume auto (the default)
    whole, parts = load_tensors(tmp_path / "whole" / "model.safetensors"), load_tensors(
        tmp_path / "parts" / "model.safetensors")
    assert all(torch.equal(whole[k], parts[k]) for k in whole)  # resumed == uninterrupted
    code, lines = train("whole", 3, "--resume", "never")
    assert code == 0 and any("starting afresh" in e.get("message", "") for e in lines)
    assert lines[-1]["steps"] == 3
    code, lines = train("blowup", 30, "--optimizer", "sgd", "--lr", "1e38", "--max-bad-steps", "2")
    assert code == 1 and lines[-1]["event"] == "summary" and lines[-1]["status"] == "failed"
    assert "2 non-finite steps in a row" in next(e["message"] for e in lines if e["event"] == "error")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    code, lines = train("locked", 3)
    assert code == 75 and lines[-1]["event"] == "summary" and lines[-1]["exit_code"] == 75


def test_train_options_tsv_joint_and_variants(cli, tmp_path):
    src, tgt = write_pairs(tmp_path, n=60)
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt, strict=True)))
    (tmp_path / "valid.src").write_text("a b\n\nc\n")
    (tmp_path / "valid.tgt").write_text("B A\nX\nC\n")
    result = cli(["train-seq2seq", "-w", tmp_path / "ws", "--tsv", tmp_path / "pairs.tsv",
                  "--valid-src", tmp_path / "valid.src", "--valid-tgt", tmp_path / "valid.tgt",
                  "--joint", "--kind", "char", "--attention", "none", "--encoder-cell", "gru",
                  "--decoder-cell", "lstm", "--n-layers", "2", "--reverse-source", "--teacher-forcing", "0.5",
                  "--teacher-forcing-decay", "linear", "--label-smoothing", "0.1", "--clip", "0.5",
                  "--max-len", "9", "--embedding", "8", "--hidden", "16", "--batch-tokens", "120",
                  "--max-steps", "4", "--eval-every", "2", "--checkpoint-every", "4", "--device", "cpu",
                  "--set", "valid.max_sentences=2"])
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 pair(s) with an empty source (lines 2)" in result.stderr
    assert "more than 9 tokens" in result.stderr
    assert (tmp_path / "ws" / "tokenizer" / "tokenizer.json").exists()  # joint
    result = cli(["attention-map", "-w", tmp_path / "ws", "--source", "a b"])
    assert result.exit_code == 2 and "no attention" in result.stderr
    # -t reuses a tokenizer directory; --epochs and --time-budget end a run too
    result = cli(["train-seq2seq", "-w", tmp_path / "ws2", "--src", tmp_path / "train.src", "--tgt",
                  tmp_path / "train.tgt", "-t", tmp_path / "ws" / "tokenizer", "--attention", "location",
                  "--embedding", "8", "--hidden", "16", "--epochs", "0.5", "--time-budget", "1m",
                  "--lr", "0.005", "--batch-tokens", "150", "--separate", "--unidirectional",
                  "--forward-source"])
    assert result.exit_code == 0, result.stderr


def test_errors_are_one_line_exit_2(cli, trained, tmp_path):
    root, ws, _ = trained
    (tmp_path / "short.tgt").write_text("A\n")
    cases = [
        ["train-seq2seq", "-w", tmp_path / "w1", "--src", root / "train.src", "--tgt", tmp_path / "short.tgt",
         "--max-steps", "1"],
        ["train-seq2seq", "-w", tmp_path / "w2", "--src", root / "train.src", "--tgt", root / "train.tgt"],
        ["train-seq2seq", "-w", tmp_path / "w3", "--src", root / "train.src", "--tgt", root / "train.tgt",
         "--set", "model.attention=magic", "--max-steps", "1"],
        ["translate", "-w", tmp_path / "missing"],
        ["translate", "-w", ws, "--beam", "0"],
        ["translate", "-w", ws, "--beam", "2", "--nbest", "3"],
        ["translate", "-w", ws, tmp_path / "nope.txt"],
        ["attention-map", "-w", ws],
        ["attention-map", "-w", ws, "--source", "a", "--format", "gif"],
        ["attention-map", "-w", ws, "--source", "  "],
        ["attention-map", "-w", ws, "--source", "a", "--head", "3"],
    ]
    for args in cases:
        result = cli(args)
        assert result.exit_code == 2, (args, result.stderr)
        lines = result.stderr.splitlines()
        if args[0] == "train-seq2seq":  # a training command ends every run with its summary line
            assert lines[-1].startswith("summary") and "usage-error" in lines[-1], (args, result.stderr)
            lines = lines[:-1]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    mismatch = cli(cases[0])
    assert "160 lines" in mismatch.stderr and "1" in mismatch.stderr
    Workspace.create(tmp_path / "lm", "rnn-lm", {})
    lm = cli(["translate", "-w", tmp_path / "lm"], input="a\n")
    assert lm.exit_code == 2 and "rnn-lm" in lm.stderr and "translation" in lm.stderr
    (tmp_path / "empty.src").write_text("")
    (tmp_path / "empty.tgt").write_text("")
    empty = cli(["train-seq2seq", "-w", tmp_path / "w4", "--src", tmp_path / "empty.src", "--tgt",
                 tmp_path / "empty.tgt", "--max-steps", "1"])
    assert empty.exit_code == 2 and [line[:7] for line in empty.stderr.splitlines()] == ["error: ", "summary"]
    assert cli(["translate", "-w", ws], input="").stdout == ""  # no input: no output, no error
