"""`seqtool runs`: workspaces side by side, and their metrics as CSV."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from seqtool.cli.options import Json

COLUMNS = ("workspace", "kind", "status", "parameters", "steps", "best", "tokens", "time")


def runs(
    paths: Annotated[Optional[list[Path]], typer.Argument(
        help="Workspaces, or directories holding them (default: the current directory).",
        show_default=False)] = None,
    as_json: Json = False,
    metrics: Annotated[bool, typer.Option(
        "--metrics", help="Print every train/valid event of metrics.jsonl as one CSV instead (a column per "
        "measurement, a row per event, the workspace in the first column).")] = False,
    sort: Annotated[Optional[str], typer.Option(
        help="Sort the table by a column: best, steps, time, parameters, workspace, created.",
        show_default=False)] = None,
) -> None:
    """Compare training runs: one row per workspace with its kind, status, size, steps, best validation
    metric and training time. Reads only the workspaces; nothing is sent anywhere.

    Example: seqtool runs runs/ --sort best;  seqtool runs runs/a runs/b --metrics > curves.csv
    """
    from seqtool.errors import InputError
    from seqtool.tracking import find_workspaces, run_row, write_metrics_csv

    found = find_workspaces(paths or [Path(".")])
    if metrics:
        write_metrics_csv(found, sys.stdout)
        return
    rows = [run_row(path) for path in found]
    if sort is not None:
        key = {"best": "best_value", "time": "train_seconds"}.get(sort, sort)
        if key not in rows[0]:
            raise InputError(f"cannot sort by {sort!r}",
                             hint="choose best, steps, time, parameters, workspace or created")
        rows.sort(key=lambda row: (row[key] is None, row[key] if row[key] is not None else 0))
    if as_json:
        from seqtool.storage import json_line

        sys.stdout.write(json_line(rows, indent=2) + "\n")
        return
    _table(rows)


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("workspace", "kind", "status", "best") else "right",
                         overflow="fold")  # a long path folds onto the next line, never cut
    for row in rows:
        best = "-"
        if row["best_value"] is not None:
            best = f"{row['best_metric']} {row['best_value']:.4g} @ {row['best_step']}"
        table.add_row(row["workspace"], row["kind"], row["status"], _count(row["parameters"]),
                      f"{row['steps']:,}", best, _count(row["tokens"]), _duration(row["train_seconds"]))
    Console(highlight=False, width=max(100, Console().width)).print(table)


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"
