"""Signals during shutdown, in real processes: once a SIGTERM has stopped a run, a second one (SLURM's
KillWait sequence, or torchrun stopping the other workers) must not turn exit 75 into 143."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from seqtool.workspace import Workspace

TESTS = Path(__file__).parent
TRAIN = ["--cell", "gru", "--n-layers", "1", "--hidden", "16", "--embedding", "16", "--batch-size", "4",
         "--set", "data.bptt=16", "--set", "run.log_every=1", "--device", "cpu", "--seed", "1",
         "--kind", "char"]


def corpus(folder: Path) -> Path:
    import random

    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "red", "hat"]
    path = folder / "train.txt"
    path.write_text("".join(" ".join(rng.choice(words) for _ in range(8)) + "\n" for _ in range(100)))
    return path


def test_a_second_sigterm_during_shutdown_still_exits_75(tmp_path):
    """The first SIGTERM comes from here; the second one the process sends itself as it releases its
    lock, after the trainer has put the previous signal handlers back."""
    ws = tmp_path / "ws"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAULT_SIGTERM_ON_UNLOCK": "1"}
    argv = ["--log-format", "json", "train-rnn", str(corpus(tmp_path)), "-w", str(ws), *TRAIN,
            "--max-steps", "100000", "--eval-every", "100000"]
    proc = subprocess.Popen([sys.executable, str(TESTS / "faulty_seqtool.py"), *argv], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines = []
    for line in proc.stderr:
        lines.append(json.loads(line))
        if lines[-1].get("event") == "train":
            break
    proc.send_signal(signal.SIGTERM)
    lines += [json.loads(line) for line in proc.stderr]
    assert proc.wait(timeout=60) == 75, lines[-3:]
    assert lines[-1]["event"] == "summary" and lines[-1]["status"] == "preempted"
    assert Workspace.open(ws).status["state"] == "preempted"
    assert Workspace.open(ws).latest_checkpoint() is not None and not (ws / ".lock").exists()
