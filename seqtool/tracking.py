"""Experiment tracking without a network: TensorBoard event files written beside training
(`--tensorboard DIR`), and what `seqtool runs` reads — one row per workspace, and metrics.jsonl as CSV.

TensorBoard is optional (`pip install 'seqtool[tensorboard]'`); everything else needs only the workspace.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from seqtool.errors import InputError

SCALAR_EVENTS = ("train", "valid")  # the events whose numbers are curves
NOT_CURVES = {"step", "epoch", "total_steps", "eta_s", "elapsed"}  # bookkeeping, not a measurement
INSTALL_HINT = "pip install 'seqtool[tensorboard]', or drop --tensorboard"


def require_tensorboard() -> None:
    """Fail before any work when --tensorboard is asked for and the package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise InputError("--tensorboard needs the tensorboard package, which is not installed",
                         hint=INSTALL_HINT) from None


class TensorBoardSink:
    """Mirrors the train/valid numbers of each metrics event into TensorBoard scalars `event/key` (e.g.
    train/loss, valid/ppl) at the event's step. The writer opens at the first event: its step is the
    purge step, so the curves a killed run wrote past its last checkpoint are hidden on resume."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def write(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind in SCALAR_EVENTS and isinstance(event.get("step"), int):
            if self.writer is None:
                self._open(purge_step=event["step"])
            for key, value in curves(event):
                self.writer.add_scalar(f"{kind}/{key}", value, event["step"])
        elif kind in ("checkpoint", "stop") and self.writer is not None:
            self.writer.flush()  # what a resume keeps is on disk
        elif kind == "summary":
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _open(self, purge_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot write TensorBoard events to {self.log_dir}: {err.strerror}",
                             hint="give --tensorboard a writable directory") from None
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step, flush_secs=30)


def curves(event: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """The finite numbers of an event that are measurements (booleans and bookkeeping left out)."""
    for key, value in event.items():
        if key in NOT_CURVES or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            yield key, float(value)


# -- seqtool runs -----------------------------------------------------------------------------
def find_workspaces(paths: Iterable[Path]) -> list[Path]:
    """Each path that is a workspace, or else the workspaces directly inside it (sorted by name)."""
    from seqtool.workspace import is_workspace

    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise InputError(f"{path} does not exist", hint="give workspace directories or their parent")
        if is_workspace(path):
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_dir() and is_workspace(p))
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise InputError(f"no workspaces in {where}", hint="give workspace directories (-w of a train-* "
                         "command) or a directory that holds them")
    return found


def run_row(path: Path) -> dict[str, Any]:
    """One workspace in a few numbers: kind, status, size, steps, best metric, training time."""
    from seqtool.storage import count_parameters
    from seqtool.workspace import Workspace

    ws = Workspace.open(path)
    status = ws.status
    last = _last_events(ws.path / "metrics.jsonl")
    summary = last.get("summary", {})
    row: dict[str, Any] = {
        "workspace": str(path),
        "kind": ws.kind,
        "status": status.get("state", "trained" if ws.weights_file.exists() else "untrained"),
        "parameters": count_parameters(ws.weights_file) if ws.weights_file.exists() else None,
        "steps": status.get("step", summary.get("steps", 0)),
        "best_metric": status.get("best_metric"),
        "best_value": status.get("best_value"),
        "best_step": status.get("best_step"),
        "tokens": summary.get("tokens"),
        "train_seconds": max((e.get("elapsed", 0) for e in last.values()), default=None),
        "created": ws.meta.get("created"),
    }
    if (ws.config.get("data") or {}).get("mix"):  # several corpora by weight: "web 0.7, domain 0.3"
        from seqtool.data.mixing import describe_mix

        row["mix"] = ", ".join(f"{p['name']} {p['weight']:g}" for p in describe_mix(ws.config["data"]["mix"]))
    return row


def _last_events(path: Path, tail_bytes: int = 65536) -> dict[str, dict[str, Any]]:
    """The last event of each kind among the final lines of metrics.jsonl (a long run's file is not
    read whole)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    if size > tail_bytes:
        lines = lines[1:]  # the first may be cut
    last: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill -9
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            last[event["event"]] = event
    return last


def metrics_rows(workspaces: list[Path], events: tuple[str, ...] = SCALAR_EVENTS) -> Iterator[dict[str, Any]]:
    """Every event of the given kinds of each workspace's metrics.jsonl, with the workspace beside it."""
    for path in workspaces:
        file = path / "metrics.jsonl"
        if not file.exists():
            continue
        with open(file, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("event") in events:
                    yield {"workspace": str(path), **event}


def write_metrics_csv(workspaces: list[Path], out: IO[str]) -> int:
    """metrics.jsonl of each workspace as one wide CSV (workspace, event, step, elapsed, then each
    measurement in name order; empty where an event lacks it); returns the number of rows."""
    rows = list(metrics_rows(workspaces))
    keys = sorted({key for row in rows for key, _ in curves(row)})
    columns = ["workspace", "event", "step", "epoch", "elapsed", *keys]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items() if k in columns})
    return len(rows)


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value
