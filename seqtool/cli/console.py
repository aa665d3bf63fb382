"""Consoles and reporting: data goes to stdout, messages and progress to stderr.

`Reporter` renders the core's progress events as rich progress lines (terminal), plain periodic
lines (batch jobs, cron) or one JSON object per line (`--log-format json`).
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from seqtool.errors import EXIT_FAILURE, EXIT_INTERRUPTED, SeqtoolError, out_of_memory


@dataclass
class GlobalOptions:
    """The global options, given before or after the command name (`seqtool --quiet generate ...`)."""

    workspace: str | None = None
    device: str = "auto"
    seed: int | None = None
    quiet: bool = False
    log_format: str = "auto"
    debug: bool = False
    threads: int | None = None  # --threads / SEQTOOL_THREADS: torch's CPU threads; None: torch's default


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class Reporter:
    """Turns core events (dicts with an "event" key) into stderr output in the chosen format."""

    log_format: str = "auto"
    quiet: bool = False
    console: Console = field(default_factory=stderr_console)
    rank: int = 0  # under torchrun/srun only rank 0 speaks (errors excepted)
    summarized: bool = False  # a "summary" event has been rendered (or is held back)
    held: dict[str, Any] | None = None  # inside final_summary: the summary waits to be the last line
    holding: bool = False
    _last_plain: float = 0.0
    _start: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.log_format == "auto":
            self.log_format = "rich" if self.console.is_terminal else "plain"

    # plain messages -------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if self.quiet or self.rank != 0:
            return
        if self.log_format == "json":
            self._json({"event": "info", "message": message})
        else:
            self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        if self.rank != 0:
            return
        if self.log_format == "json":
            self._json({"event": "warning", "message": message})
        elif self.log_format == "rich":
            self.console.print(f"[yellow]warning:[/yellow] {_escape(message)}")
        else:
            self.console.print(f"warning: {message}", markup=False)

    # structured events ----------------------------------------------------------------------
    def event(self, ev: dict[str, Any]) -> None:
        """Render one core event: `train`, `valid`, `checkpoint`, `summary`, ... ."""
        kind = ev.get("event", "info")
        if kind == "error":
            self.error(str(ev.get("message", "")))
            return
        if self.rank != 0:
            return
        if kind == "summary":
            self.summarized = True
            if self.holding:
                self.held = ev
                return
        if kind == "warning":
            self.warn(str(ev.get("message", "")))
            return
        if self.quiet and kind != "summary":
            return
        if self.log_format == "json":
            self._json(ev)
            return
        if kind == "info":
            self.info(str(ev.get("message", "")))
            return
        if kind == "train":
            now = time.time()
            # rich: overwrite a status line; plain: at most one line every 10 s (plus the last).
            if self.log_format == "plain" and now - self._last_plain < 10 and not ev.get("final"):
                return
            self._last_plain = now
        line = format_event(ev)
        if self.log_format == "rich" and kind == "train":
            self.console.print(line, markup=False, end="\r" if not ev.get("final") else "\n")
        else:
            self.console.print(line, markup=False)

    def error(self, message: str) -> None:
        """`error: message` (plain, rich) or {"event": "error", ...} (json); every rank reports its own."""
        if self.log_format == "json":
            self._json({"event": "error", "message": message})
        else:
            print_error(message)

    def _json(self, ev: dict[str, Any]) -> None:
        from seqtool.storage import json_line  # strict JSON: a NaN loss is null + loss_nonfinite

        ev = {"time": round(time.time(), 3), "rank": self.rank, **ev}
        sys.stderr.write(json_line(ev) + "\n")
        sys.stderr.flush()


_FORMATS = {"loss": "{:.4f}", "ppl": "{:.2f}", "bpc": "{:.3f}", "bleu": "{:.2f}", "accuracy": "{:.4f}",
            "bpb": "{:.3f}", "word_ppl": "{:.2f}", "grad_norm": "{:.3g}", "grad_norm_max": "{:.3g}",
            "mse": "{:.4g}", "rmse": "{:.4g}", "naive_mse": "{:.4g}", "skill": "{:+.3f}",  # forecasting
            "lr": "{:.2e}", "tokens_per_s": "{:.0f}",
            "macro_f1": "{:.4f}"}  # the numbers a train/valid line shows first


def format_event(ev: dict[str, Any]) -> str:
    """`train step 120/500 loss 2.31 ppl 10.1 lr 1.0e-03 tok/s 5400 eta 1m10s` style line."""
    kind = ev.get("event", "")
    parts = [str(kind)]
    if "step" in ev:
        total = ev.get("total_steps")
        parts.append(f"step {ev['step']}" + (f"/{total}" if total else ""))
    for key, fmt in _FORMATS.items():
        if ev.get(key) is not None:
            name = {"tokens_per_s": "tok/s"}.get(key, key)
            parts.append(f"{name} " + fmt.format(ev[key]))
    if ev.get("eta_s") is not None:
        parts.append(f"eta {format_seconds(ev['eta_s'])}")
    if ev.get("message"):
        parts.append(str(ev["message"]))
    for key, value in ev.items():
        if key in _FORMATS or key in {"event", "step", "total_steps", "eta_s", "message", "time", "final",
                                      "split", "elapsed"}:
            continue
        if key.startswith("loss_") and isinstance(value, float):  # a mixed corpus's (training/mixture.py)
            value = _FORMATS["loss"].format(value)
        if isinstance(value, dict):  # e.g. the summary's best_scores: its own numbers, formatted
            value = " ".join(f"{k} " + _FORMATS.get(k.partition("_")[0] if k.startswith("loss_") else k, "{}")
                             .format(v) for k, v in value.items())
            value = f"({value})"
        parts.append(f"{key} {value}")
    return "  ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_error(message: str) -> None:
    """One line on stderr, plain text so scripts can grep it."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# the last line of a run


@dataclass
class RunOutcome:
    """What a run's final summary says if it ends early; the command fills it in as the run proceeds."""

    workspace: str | None = None
    summary: Callable[[str], dict[str, Any]] | None = None  # the trainer's, once there is one


_STATUS = {0: "finished", EXIT_FAILURE: "failed", 2: "usage-error", 75: "tempfail",
           EXIT_INTERRUPTED: "interrupted"}


@contextlib.contextmanager
def final_summary(reporter: Reporter, workspace: Any = None) -> Iterator[RunOutcome]:
    """Guarantee one summary event as the last line on every exit path of a training command.

    A SeqtoolError or Ctrl-C is reported here (error line, then summary) and leaves as its exit code;
    any other exception gets its summary and travels on to the app's internal-error handler.
    """
    import click

    outcome = RunOutcome(workspace=str(workspace) if workspace is not None else None)

    def summarize(code: int, message: str) -> None:
        held, reporter.held, reporter.holding = reporter.held, None, False
        if held is not None and code == 0:
            reporter.event(held)  # the trainer's own summary, now that nothing else will be printed
            return
        if reporter.summarized and held is None:
            return
        status = _STATUS.get(code, "failed")
        if code == 75 and outcome.summary is not None:
            status = "preempted"  # a signal stopped a running trainer (the lock fails before one exists)
        base = outcome.summary(status) if outcome.summary else {"status": status, "steps": 0,
                                                                   "workspace": outcome.workspace}
        reporter.event({"event": "summary", **base, "exit_code": code, "message": message})

    reporter.holding = True
    try:
        with warnings.catch_warnings():
            # library warnings become warning events, so --log-format json stays one object per line
            warnings.showwarning = lambda message, category, *_a, **_k: reporter.warn(
                f"{category.__name__}: {message}")
            yield outcome
    except SeqtoolError as err:
        reporter.error(str(err))
        summarize(err.exit_code, err.message)
        raise click.exceptions.Exit(err.exit_code) from None
    except click.exceptions.Exit as done:
        summarize(done.exit_code, "")
        raise
    except click.ClickException as err:
        summarize(err.exit_code, err.format_message())
        raise
    except KeyboardInterrupt:
        reporter.error("interrupted by Ctrl-C")
        summarize(EXIT_INTERRUPTED, "interrupted by Ctrl-C")
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except Exception as err:
        if (known := out_of_memory(err)) is None:
            summarize(EXIT_FAILURE, f"internal error: {type(err).__name__}: {err}")
            raise
        reporter.error(str(known))
        summarize(known.exit_code, known.message)
        raise click.exceptions.Exit(known.exit_code) from None
    summarize(0, "")
