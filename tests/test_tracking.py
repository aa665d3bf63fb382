"""Experiment tracking: --tensorboard event files, `seqtool runs` (table, JSON, metrics CSV)."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest

from seqtool.tracking import TensorBoardSink

CORPUS = "".join(f"line {i} of a tiny corpus, with words and more words\n" for i in range(60))
TRAIN = ["train-rnn", "--kind", "char", "--hidden", "8", "--n-layers", "1", "--bptt", "8",
         "--batch-size", "4", "--eval-every", "5", "--device", "cpu", "--seed", "1",
         "--set", "run.log_every=5"]


def scalars(log_dir, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def events(ws, kind: str) -> list[dict]:
    lines = (ws / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def test_tensorboard_gets_the_curves_of_metrics_jsonl(cli, tmp_text, tmp_path):
    pytest.importorskip("tensorboard")
    data, ws, tb = tmp_text(CORPUS), tmp_path / "ws", tmp_path / "tb" / "run1"
    result = cli([*TRAIN, data, "-w", ws, "--max-steps", "10", "--tensorboard", tb])
    assert result.exit_code == 0, result.output
    for kind in ("train", "valid"):
        want = [(e["step"], e["loss"]) for e in events(ws, kind)]
        got = scalars(tb, f"{kind}/loss")
        assert [s for s, _ in got] == [s for s, _ in want] and len(want) >= 2
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    assert scalars(tb, "train/lr")  # every measurement of an event, not only the loss


def test_a_resumed_run_hides_the_curve_past_its_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    first = TensorBoardSink(tmp_path)
    for step in range(1, 16):  # killed at step 15; its last checkpoint was at step 10
        first.write({"event": "train", "step": step, "loss": 10.0})
    first.close()
    again = TensorBoardSink(tmp_path)
    for step in range(11, 21):
        again.write({"event": "train", "step": step, "loss": 1.0})
    again.write({"event": "summary", "status": "finished"})
    got = scalars(tmp_path, "train/loss")
    assert [s for s, _ in got] == list(range(1, 21))
    assert [v for _, v in got] == [10.0] * 10 + [1.0] * 10


def test_tensorboard_missing_is_one_line_before_any_work(cli, tmp_text, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard → ImportError
    ws = tmp_path / "ws"
    result = cli([*TRAIN, tmp_text(CORPUS), "-w", ws, "--max-steps", "5", "--tensorboard", tmp_path / "tb"])
    assert result.exit_code == 2
    assert "tensorboard" in result.stderr and "pip install" in result.stderr
    assert "Traceback" not in result.output
    assert not ws.exists() and not (tmp_path / "tb").exists()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from typer.testing import CliRunner

    from seqtool.cli import app

    root = tmp_path_factory.mktemp("runs")
    data = root / "corpus.txt"
    data.write_text(CORPUS)
    for name, steps in (("short", 5), ("long", 15)):
        args = [*TRAIN, str(data), "-w", str(root / name), "--max-steps", str(steps)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    (root / "not-a-workspace").mkdir()
    return root


def test_runs_table_and_json(cli, two_runs):
    result = cli(["runs", two_runs, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["workspace"] for r in rows] == [str(two_runs / "long"), str(two_runs / "short")]
    long, short = rows
    assert (long["steps"], short["steps"]) == (15, 5)
    assert long["kind"] == "rnn-lm" and long["status"] == "finished" and long["parameters"] > 0
    assert long["best_value"] == min(e["loss"] for e in events(two_runs / "long", "valid"))
    assert long["train_seconds"] > 0

    both = [two_runs / "short", two_runs / "long"]
    by_best = json.loads(cli(["runs", *both, "--sort", "best", "--json"]).stdout)
    assert [r["best_value"] for r in by_best] == sorted(r["best_value"] for r in rows)

    table = cli(["runs", two_runs])
    assert table.exit_code == 0 and "long" in table.stdout and "short" in table.stdout
    assert "not-a-workspace" not in table.stdout


def test_runs_metrics_csv_has_every_train_and_valid_event(cli, two_runs):
    result = cli(["runs", two_runs / "long", "--metrics"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    want = [e for e in map(json.loads, (two_runs / "long" / "metrics.jsonl").read_text().splitlines())
            if e["event"] in ("train", "valid")]
    assert [(r["event"], int(r["step"])) for r in rows] == [(e["event"], e["step"]) for e in want]
    assert [float(r["loss"]) for r in rows] == pytest.approx([e["loss"] for e in want])
    assert rows[0]["workspace"] == str(two_runs / "long")


@pytest.mark.parametrize("args, says", [
    (["runs", "missing-dir"], "does not exist"),
    (["runs", "{empty}"], "no workspaces in"),
    (["runs", "{ws}", "--sort", "colour"], "cannot sort by"),
])
def test_runs_bad_input_is_one_line(cli, two_runs, tmp_path, args, says):
    args = [a.format(empty=tmp_path, ws=two_runs / "long") for a in args]
    result = cli(args)
    assert result.exit_code == 2
    assert says in result.stderr and "Traceback" not in result.output
