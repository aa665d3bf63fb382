"""`python -m seqtool ARGS` with fault hooks, for the signal and distributed tests (not part of seqtool).

Hooks, chosen by environment variables:
  FAULT_SIGTERM_AT_STEP=N   the process sends itself SIGTERM as its N-th training step starts, the way
                            `srun --signal` reaches every task
  FAULT_SLOW_STATUS=S       rank 0 sleeps S seconds before it writes a preempted/interrupted status, which
                            widens the window in which another rank could exit before it
  FAULT_SIGTERM_ON_UNLOCK=1 the process sends itself SIGTERM as it releases the workspace lock (shutting down)
  FAULT_REPORT=DIR          at exit, each rank writes DIR/rank<R>.json: its exit code, and the workspace's
                            status and lock as it saw them then

Run as: python tests/faulty_seqtool.py --log-format json train-rnn ... (or as torchrun's script).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from seqtool.lock import WorkspaceLock
from seqtool.training.trainer import Trainer
from seqtool.workspace import Workspace

ENV = os.environ
RANK = int(ENV.get("RANK", 0))


def hook_steps(at: int) -> None:
    step = Trainer._step
    calls = [0]

    def counted(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, *args, **kwargs)

    Trainer._step = counted


def hook_status(seconds: float) -> None:
    update = Workspace.update_status

    def slow(self, **values):
        if values.get("state") in ("preempted", "interrupted"):
            time.sleep(seconds)
        return update(self, **values)

    Workspace.update_status = slow


def hook_unlock() -> None:
    release = WorkspaceLock.release

    def signalled(self):
        if self.held:
            os.kill(os.getpid(), signal.SIGTERM)
        return release(self)

    WorkspaceLock.release = signalled


def workspace_of(argv: list[str]) -> Path:
    flag = next(i for i, a in enumerate(argv) if a in ("-w", "--workspace"))
    return Path(argv[flag + 1])


def report(folder: Path, code: object, ws: Path) -> None:
    status = Workspace.open(ws).status.get("state") if (ws / "seqtool.yaml").exists() else None
    (folder / f"rank{RANK}.json").write_text(json.dumps(
        {"code": code, "status": status, "lock": (ws / ".lock").exists()}))


def main() -> None:
    from seqtool.cli import main as seqtool

    if "FAULT_SIGTERM_AT_STEP" in ENV:
        hook_steps(int(ENV["FAULT_SIGTERM_AT_STEP"]))
    if "FAULT_SLOW_STATUS" in ENV and RANK == 0:
        hook_status(float(ENV["FAULT_SLOW_STATUS"]))
    if ENV.get("FAULT_SIGTERM_ON_UNLOCK"):
        hook_unlock()
    sys.argv = ["seqtool", *sys.argv[1:]]
    try:
        seqtool()
    except SystemExit as done:
        if "FAULT_REPORT" in ENV:
            report(Path(ENV["FAULT_REPORT"]), done.code, workspace_of(sys.argv))
        raise


if __name__ == "__main__":
    main()
