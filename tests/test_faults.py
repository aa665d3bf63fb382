"""Fault injection on `seqtool train-rnn`: kill -9, SIGTERM/SIGUSR1, a second concurrent run, a stale lock,
a truncated checkpoint, a read-only or full disk, deleted data, divergence, a planted pickle.

Signals, kills and the lock use real subprocesses (`python -m seqtool`); the faults that need no
process boundary run in-process through the app, to keep the file fast on two cores. Every test checks
the exit code and that the last good model still loads and generates.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqtool.cli import COMMANDS, app
from seqtool.storage import load_tensors, sha256_file
from seqtool.workspace import Workspace

STEPS = 24
TRAIN = ["--cell", "gru", "--n-layers", "1", "--hidden", "16", "--embedding", "16", "--batch-size", "4",
         "--set", "data.bptt=16", "--eval-every", "4", "--set", "run.checkpoint_every=4",
         "--set", "run.log_every=1", "--device", "cpu", "--seed", "1", "--kind", "char"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "red", "hat", "big", "small"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    import random

    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(8)) + "\n" for _ in range(200)))
    return path


def args(corpus: Path, ws: Path, steps: int = STEPS, *extra: str) -> list[str]:
    return ["--log-format", "json", "train-rnn", str(corpus), "-w", str(ws), *TRAIN, "--max-steps",
            str(steps), *extra]


def start(argv: list[str], umask: int | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "seqtool", *argv], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, list[dict]]:
    """(exit code, the JSON lines of stderr); every stderr line must be one JSON object."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, [json.loads(line) for line in err.splitlines() if line.strip()]


def run(argv: list[str]) -> tuple[int, list[dict]]:
    return finish(start(argv))


def wait_for_step(proc: subprocess.Popen, step: int, lines: list[dict]) -> int:
    """Read stderr until a train event at `step` or later; returns the step seen."""
    for line in proc.stderr:
        event = json.loads(line)
        lines.append(event)
        if event.get("event") == "train" and event["step"] >= step:
            return event["step"]
    raise AssertionError(f"the run ended before step {step}: {lines[-3:]}")


def summary(lines: list[dict]) -> dict:
    assert lines and lines[-1]["event"] == "summary", lines[-3:]
    return lines[-1]


def weights(ws: Path) -> dict[str, torch.Tensor]:
    return load_tensors(Workspace.open(ws).latest_checkpoint() / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    """The newest checkpoints and the published weights of two workspaces are bit-identical."""
    for wa, wb in ((weights(a), weights(b)),
                   (load_tensors(a / "model.safetensors"), load_tensors(b / "model.safetensors"))):
        assert wa.keys() == wb.keys()
        for name in wa:
            assert torch.equal(wa[name], wb[name]), name


def assert_generates(ws: Path) -> None:
    """The published model loads and produces tokens (`seqtool generate` once it exists)."""
    if any(name == "generate" for name, _ in COMMANDS):
        from typer.testing import CliRunner

        result = CliRunner().invoke(app, ["generate", "-w", str(ws), "--max-tokens", "5", "--seed", "1"])
        assert result.exit_code == 0, result.output
        return
    from seqtool.models import load_published

    model = load_published(Workspace.open(ws))
    state = model.start()
    ids = torch.zeros(1, 1, dtype=torch.long)
    for _ in range(5):
        logits, state = model.step(ids, state)
        ids = logits.argmax(-1, keepdim=True)
    assert torch.isfinite(logits).all()


def cli(argv: list[str]) -> tuple[int, list[dict]]:
    """The app in this process (for faults that need no process boundary); stderr parsed as JSON."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, argv)
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    return result.exit_code, lines


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """An uninterrupted run, written under umask 027."""
    ws = tmp_path_factory.mktemp("ref") / "ws"
    code, lines = finish(start(args(corpus, ws), umask=0o027))
    assert code == 0, lines[-3:]
    assert summary(lines)["status"] == "finished" and summary(lines)["steps"] == STEPS
    return ws


def copy_of(ws: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(ws, target)
    return target


# ---------------------------------------------------------------------------------------------
# real processes: kill -9, signals, the lock


def test_kill_9_twice_then_resume_gives_the_same_weights(corpus, reference, tmp_path):
    ws = tmp_path / "ws"
    for step in (3, 11):  # before the first checkpoint, and between two
        proc, lines = start(args(corpus, ws)), []
        wait_for_step(proc, step, lines)
        proc.kill()
        proc.wait()
    code, lines = run(args(corpus, ws))
    assert code == 0 and summary(lines)["steps"] == STEPS
    assert_same_weights(reference, ws)
    assert_generates(ws)


def test_sigterm_and_sigusr1_exit_75_and_resume_bit_identically(corpus, reference, tmp_path):
    ws = tmp_path / "ws"
    for signum, step in ((signal.SIGTERM, 5), (signal.SIGUSR1, 14)):
        proc, lines = start(args(corpus, ws)), []
        wait_for_step(proc, step, lines)
        proc.send_signal(signum)
        code, rest = finish(proc)
        end = summary(rest)
        assert code == 75, rest[-3:]
        assert end["status"] == "preempted" and end["exit_code"] == 75
        assert any(e["event"] == "error" and signal.Signals(signum).name in e["message"] for e in rest)
        # the step under way was finished and checkpointed
        assert Workspace.open(ws).latest_checkpoint().name == f"step-{end['steps']:07d}"
        assert_generates(ws)
    code, lines = run(args(corpus, ws))
    assert code == 0 and summary(lines)["status"] == "finished"
    assert_same_weights(reference, ws)


def test_second_concurrent_run_exits_75_naming_the_holder(corpus, tmp_path):
    ws = tmp_path / "ws"
    first, lines = start(args(corpus, ws, 100_000)), []
    wait_for_step(first, 1, lines)
    code, second = run(args(corpus, ws, 100_000))
    assert code == 75
    error = next(e for e in second if e["event"] == "error")
    assert f"locked by pid {first.pid} on host {socket.gethostname()}" in error["message"]
    assert summary(second)["status"] == "tempfail"
    first.send_signal(signal.SIGTERM)
    code, rest = finish(first)
    assert code == 75 and summary(rest)["status"] == "preempted"
    assert not (ws / ".lock").exists()
    assert_generates(ws)


# seqtool, but it kill -9s itself where a run writes its `finished` status: after the final checkpoint,
# before the status (sys.argv[1:] are seqtool's arguments).
KILL_BEFORE_FINISHED_STATUS = """
import os, signal, sys
from seqtool import workspace
from seqtool.cli import main
write = workspace.Workspace.update_status
def update_status(self, **values):
    if values.get("state") == "finished":
        os.kill(os.getpid(), signal.SIGKILL)
    write(self, **values)
workspace.Workspace.update_status = update_status
sys.argv[0] = "seqtool"
main()
"""


def run_killed_before_finished_status(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", KILL_BEFORE_FINISHED_STATUS, *argv], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def test_kill_9_between_final_checkpoint_and_status_then_the_same_command_settles_it(
        corpus, reference, tmp_path):
    ws = tmp_path / "ws"
    run_killed_before_finished_status(args(corpus, ws))
    assert Workspace.open(ws).status["state"] == "running"
    assert Workspace.open(ws).latest_checkpoint().name == f"step-{STEPS:07d}"
    code, lines = run(args(corpus, ws))
    assert code == 0 and summary(lines)["status"] == "already-finished", lines[-3:]
    status = Workspace.open(ws).status
    assert status["state"] == "finished" and status["finished"] == "max_steps" and status["step"] == STEPS
    assert_same_weights(reference, ws)
    # and more steps train on from there, as after any finished run
    code, lines = run(args(corpus, ws, STEPS + 4))
    assert code == 0 and summary(lines)["status"] == "finished" and summary(lines)["steps"] == STEPS + 4


# ---------------------------------------------------------------------------------------------
# in-process: stale lock, corrupt checkpoints, disks, data, divergence, pickles


def test_finished_run_with_resume_auto_does_nothing(corpus, reference, tmp_path):
    ws = copy_of(reference, tmp_path)
    before = sorted(p.name for p in Workspace.open(ws).checkpoint_dirs())
    code, lines = cli(args(corpus, ws))
    assert code == 0 and summary(lines)["status"] == "already-finished"
    assert sorted(p.name for p in Workspace.open(ws).checkpoint_dirs()) == before
    # ... even when the training data are gone by now (a nightly job whose input was cleaned up)
    away = corpus.with_name(corpus.name + ".away")
    corpus.rename(away)
    try:
        code, lines = cli(args(corpus, ws))
    finally:
        away.rename(corpus)
    assert code == 0 and summary(lines)["status"] == "already-finished"


def test_stale_lock_is_taken_over_with_a_warning(corpus, reference, tmp_path):
    ws = copy_of(reference, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (ws / ".lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    code, lines = cli(args(corpus, ws))
    assert code == 0
    assert any(e["event"] == "warning" and "stale lock" in e["message"] for e in lines)
    assert not (ws / ".lock").exists()


def test_truncated_checkpoint_is_named_and_the_previous_one_used(corpus, reference, tmp_path):
    ws = copy_of(reference, tmp_path)
    newest = Workspace.open(ws).latest_checkpoint()
    blob = newest / "model.safetensors"
    blob.write_bytes(blob.read_bytes()[:100])
    code, lines = cli(args(corpus, ws, STEPS + 4))
    assert code == 0, lines[-3:]
    warning = next(e["message"] for e in lines if e["event"] == "warning")
    assert newest.name in warning and "sha256" in warning
    assert any(e["event"] == "info" and "resumed from step-0000020" in e["message"] for e in lines)
    assert summary(lines)["steps"] == STEPS + 4
    assert_generates(ws)


@pytest.mark.parametrize(("code", "words"), [(errno.EROFS, "cannot write"), (errno.ENOSPC, "disk full")])
def test_read_only_or_full_disk_while_saving_keeps_the_previous_checkpoint(
        corpus, reference, tmp_path, monkeypatch, code, words):
    ws = copy_of(reference, tmp_path)
    real_replace = os.replace

    def failing(src, dst, *a, **k):  # what a read-only or full file system does, even for root
        if "step-0000028" in str(dst):
            raise OSError(code, os.strerror(code))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", failing)
    exit_code, lines = cli(args(corpus, ws, STEPS + 8))
    monkeypatch.setattr(os, "replace", real_replace)
    assert exit_code == 1
    error = next(e["message"] for e in lines if e["event"] == "error")
    assert words in error and "intact" in error
    assert summary(lines)["status"] == "failed"
    assert Workspace.open(ws).latest_checkpoint().name == "step-0000024"
    assert_generates(ws)


@pytest.mark.parametrize("fault", ["torch.save", "safetensors", "lock"])
def test_disk_full_or_read_only_inside_torch_or_safetensors_is_one_clear_line(
        corpus, reference, tmp_path, monkeypatch, fault):
    """The libraries do not raise OSError: torch.save on a full disk raises RuntimeError without an errno,
    safetensors a SafetensorError naming the OS error (the messages below are the ones they gave on a
    full and on a read-only tmpfs); a read-only workspace already fails to create .lock."""
    from safetensors import SafetensorError

    ws = copy_of(reference, tmp_path)
    if fault == "torch.save":
        real_save = torch.save

        def save(obj, f, *a, **k):
            if "step-0000028" in str(f):
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
            return real_save(obj, f, *a, **k)

        monkeypatch.setattr(torch, "save", save)
    elif fault == "safetensors":
        import safetensors.torch

        real_file = safetensors.torch.save_file

        def save_file(tensors, filename, *a, **k):
            if "step-0000028" in str(filename):
                raise SafetensorError("Error while serializing: I/O error: No space left on device "
                                      "(os error 28)")
            return real_file(tensors, filename, *a, **k)

        monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    else:
        real_open = os.open

        def open_(path, flags, *a, **k):
            if str(path).endswith(".lock") and flags & os.O_CREAT:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", open_)
    exit_code, lines = cli(args(corpus, ws, STEPS + 8))
    monkeypatch.undo()
    assert exit_code == 1, lines[-3:]
    error = next(e["message"] for e in lines if e["event"] == "error")
    assert "internal error" not in error and "intact" in error
    assert ("Read-only file system" in error) if fault == "lock" else ("disk full" in error)
    assert summary(lines)["status"] == "failed"
    assert Workspace.open(ws).latest_checkpoint().name == "step-0000024"
    assert not list((ws / "checkpoints").glob(".*"))
    assert_generates(ws)


def test_temp_files_of_killed_writers_are_removed_under_the_lock(corpus, reference, tmp_path):
    """A kill -9 mid-write leaves seqtool's temp names behind; the next run holding the lock removes them,
    and puts back what a kill between two renames had moved aside (a checkpoint, the tokenizer)."""
    ws = copy_of(reference, tmp_path)
    ckpts = ws / "checkpoints"
    os.rename(ckpts / "step-0000024", ckpts / ".step-0000024.k1ll3d_x.tmp.old")  # moved aside, not back
    (ckpts / ".step-0000024.b2ttt_yz.tmp").mkdir()  # the new copy, cut short
    os.rename(ws / "tokenizer", ws / ".tokenizer.abc_1234.tmp.old")
    temps = [ws / ".model.safetensors.a1b2c3d4.tmp", ws / ".seqtool.yaml.zz_9y8x7.tmp",
             ws / "plots" / ".loss.png.q1w2e3r4.tmp"]
    for path in temps:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    mine = [ws / "notes.tmp", ws / ".seqtool.yaml.backup", ws / "plots" / "my.png"]  # not seqtool's
    for path in mine:
        path.write_text("keep")
    code, lines = cli(args(corpus, ws))
    assert code == 0 and summary(lines)["status"] == "already-finished", lines[-3:]
    assert not [p for p in temps if p.exists()]
    assert all(p.read_text() == "keep" for p in mine)
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000016", "step-0000020", "step-0000024"]
    assert Workspace.open(ws).latest_checkpoint().name == "step-0000024"
    assert not list(ws.glob(".tokenizer*")) and (ws / "tokenizer").is_dir()
    assert any(e["event"] == "warning" and "step-0000024" in e["message"] for e in lines)
    assert_generates(ws)


def test_non_finite_numbers_are_null_in_json_logs_and_metrics(corpus, reference, tmp_path):
    """Bare NaN/Infinity is not JSON: a strict parser must read every line of the log and of metrics.jsonl."""
    def strict(line: str) -> dict:
        def refuse(name):
            raise ValueError(f"not JSON: {name}")

        return json.loads(line, parse_constant=refuse)

    from typer.testing import CliRunner

    ws = copy_of(reference, tmp_path)
    result = CliRunner().invoke(app, args(corpus, ws, STEPS + 20, "--lr", "1e38", "--max-bad-steps", "3"))
    assert result.exit_code == 1
    lines = [strict(line) for line in result.stderr.splitlines()]
    events = [strict(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    skips = [e for e in lines + events if e["event"] == "skip"]
    assert skips and all(
        (e["loss"] is None) == (e.get("loss_nonfinite") in ("nan", "inf", "-inf")) for e in skips)
    assert any(e["loss"] is None for e in skips)
    # the same rule for any event and any number in it
    from seqtool.cli.console import Reporter

    Workspace.open(ws).append_metrics({"event": "valid", "loss": float("inf"), "ppl": float("nan"),
                                       "step": 1})
    last = strict((ws / "metrics.jsonl").read_text().splitlines()[-1])
    assert last == {"event": "valid", "loss": None, "loss_nonfinite": "inf", "ppl": None,
                    "ppl_nonfinite": "nan", "step": 1}
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        Reporter(log_format="json").event({"event": "train", "loss": float("-inf"), "step": 2})
    line = strict(err.getvalue())
    assert line["loss"] is None and line["loss_nonfinite"] == "-inf"
    # and info --json, where a first validation that gave NaN stays the best value
    Workspace.open(ws).update_status(best_value=float("nan"))
    shown = CliRunner().invoke(app, ["info", "-w", str(ws), "--json"])
    assert shown.exit_code == 0
    best = strict(shown.stdout)["best"]
    assert best["value"] is None and best["value_nonfinite"] == "nan"
    # and evaluate --json on weights that went NaN
    from seqtool.storage import load_tensors, save_tensors

    weights = Workspace.open(ws).weights_file
    save_tensors(weights, {k: torch.full_like(v, float("nan")) for k, v in load_tensors(weights).items()})
    scored = CliRunner().invoke(app, ["evaluate", "-w", str(ws), "--json", "--data", str(corpus)])
    assert scored.exit_code == 0, scored.stderr
    result = strict(scored.stdout)
    assert result["model"]["loss"] is None and result["model"]["loss_nonfinite"] == "nan"


def test_data_deleted_between_runs_is_a_clear_error(reference, corpus, tmp_path):
    ws = copy_of(reference, tmp_path)
    gone = tmp_path / "gone.txt"
    shutil.copy(corpus, gone)
    code, _ = cli(args(gone, ws, STEPS))  # the finished run, now reading gone.txt
    gone.unlink()
    code, lines = cli(args(gone, ws, STEPS + 4))  # more steps need the data
    assert code == 2
    error = next(e["message"] for e in lines if e["event"] == "error")
    assert "gone.txt" in error
    assert summary(lines)["exit_code"] == 2
    assert_generates(ws)


def test_divergence_stops_with_exit_1_naming_the_last_good_checkpoint(corpus, reference, tmp_path):
    ws = copy_of(reference, tmp_path)
    code, lines = cli(args(corpus, ws, STEPS + 20, "--lr", "1e38", "--max-bad-steps", "3"))
    assert code == 1, lines[-3:]
    error = next(e["message"] for e in lines if e["event"] == "error")
    assert "3 non-finite steps in a row" in error and "step-00000" in error
    skips = [e for e in lines if e["event"] == "skip"]
    assert len(skips) >= 3
    assert summary(lines)["status"] == "failed" and summary(lines)["exit_code"] == 1
    assert_generates(ws)  # the published weights are the best ones, from before the blow-up


def test_planted_pickle_is_refused_without_running_code(corpus, reference, tmp_path):
    ws = copy_of(reference, tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = Workspace.open(ws).latest_checkpoint()
    (ckpt / "trainer.pt").write_bytes(pickle.dumps(Evil()))
    meta = json.loads((ckpt / "meta.json").read_text())  # a careful attacker fixes the checksum too
    meta["sha256"]["trainer.pt"] = sha256_file(ckpt / "trainer.pt")
    (ckpt / "meta.json").write_text(json.dumps(meta))
    code, lines = cli(args(corpus, ws, STEPS + 4))
    assert code == 2
    error = next(e["message"] for e in lines if e["event"] == "error")
    assert "refused" in error and "trainer.pt" in error
    assert not marker.exists()
    assert_generates(ws)


def test_workspace_files_follow_the_umask(reference):
    for path in (reference / "model.safetensors", reference / "seqtool.yaml",
                 Workspace.open(reference).latest_checkpoint() / "trainer.pt"):
        assert path.stat().st_mode & 0o777 == 0o640, path
    assert Workspace.open(reference).latest_checkpoint().stat().st_mode & 0o777 == 0o750


def test_json_log_lines_carry_the_fields_machines_need(corpus, tmp_path):
    code, lines = cli(args(corpus, tmp_path / "ws", 2))
    assert code == 0
    train = next(e for e in lines if e["event"] == "train")
    assert {"event", "step", "loss", "lr", "tokens_per_s", "elapsed", "rank"} <= train.keys()
    assert {"status", "steps", "best_metric", "best_value", "workspace"} <= summary(lines).keys()
