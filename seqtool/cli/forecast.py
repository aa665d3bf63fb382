"""`seqtool forecast`: the next values of a series from a forecasting workspace; what `evaluate` prints for
one; and how train-rnn's options become a forecasting config with `--task forecast`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Optional

import typer

from seqtool.cli.options import Device, Json, Workspace, pick, reporter, require_workspace

Opt = typer.Option
KIND = "rnn-forecast"  # kinds.KINDS

Column = Annotated[Optional[str], Opt(
    help="--task forecast: the CSV column to forecast, by its header name (default: the last column). "
    "[data.column]", show_default=False)]


def forecast_options(task: str, command: Any, options: dict[str, Any], column: str | None) -> dict[str, Any]:
    """train-rnn's {config key: value} for --task forecast: --column added as data.column; an option given
    that forecasting has no use for (a tokenizer's, --tie, --bptt, ...) is an error naming it. Other tasks
    get `options` back, and an error for --column."""
    import dataclasses

    from seqtool.cli.options import config_keys
    from seqtool.errors import InputError

    if task != "forecast":
        if column is not None:
            raise InputError("--column applies to --task forecast only",
                             hint="add --task forecast, or drop --column")
        return options
    from seqtool.training.forecast import ForecastConfig

    sections = {f.name: {g.name for g in dataclasses.fields(f.default_factory())}  # type: ignore[misc]
                for f in dataclasses.fields(ForecastConfig)}
    for name, key in config_keys(command).items():
        section, _, field = key.partition(".")
        if options.get(key) is not None and field not in sections.get(section, ()):
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} does not apply to --task forecast", hint=f"drop {flag}")
    return {key: value for key, value in options.items() if key.partition(".")[0] in sections} | (
        {"data.column": column} if column is not None else {})


def forecast_job() -> Any:
    """The training.run.Job of train-rnn --task forecast."""
    from seqtool.data.io import data_fingerprints
    from seqtool.training import forecast
    from seqtool.training.run import Job

    return Job(KIND, forecast.ForecastConfig, lambda cfg, known: data_fingerprints(cfg.data, known=known),
               forecast.build, fixed=("data", "model", "run.batch_size", "run.seed"))


def forecast(
    ctx: typer.Context,
    workspace: Workspace = None,
    steps: Annotated[int, Opt("--steps", "-n", help="Values to forecast.")] = 20,
    history: Annotated[Optional[str], Opt(help="Go on from the end of this CSV series ('-': stdin) instead "
                                          "of the end of the training series.", show_default=False)] = None,
    column: Annotated[Optional[str], Opt(help="--history's column (default: the one the model was trained "
                                         "on, else the last).", show_default=False)] = None,
    as_json: Json = False,
    device: Device = None,
) -> None:
    """Forecast the next values of a series with a workspace of train-rnn --task forecast, one per line.

    The model predicts a value from the --window values before it, appends it, and goes on from there
    (its own predictions become its input): errors grow with the horizon.

    Example: seqtool forecast -w runs/sines --steps 50
    """
    from seqtool.errors import InputError
    from seqtool.models import load_published
    from seqtool.training import forecast as core
    from seqtool.training import runtime
    from seqtool.workspace import Workspace as Ws

    if steps < 1:
        raise InputError(f"--steps must be ≥ 1, got {steps}")
    ws = Ws.open(require_workspace(workspace, ctx), kinds=(KIND,), purpose="forecasting")
    model = load_published(ws, runtime.pick_device(pick(device, ctx, "device")))
    values, source = core.history(ws, history, column)
    reporter(ctx).info(f"forecasting {steps} values after the {len(values):,} values of {source}")
    out = core.roll_forward(model, values, steps)
    if as_json:
        sys.stdout.write(json.dumps({"source": source, "steps": steps, "forecast": out}) + "\n")
        return
    for v in out:
        sys.stdout.write(f"{v:.6g}\n")


def evaluate_forecast(ctx: typer.Context, ws: Any, data: list[str] | None, column: str | None, as_json: bool,
                      device: Any) -> None:
    """`seqtool evaluate` of a forecasting workspace: MSE on the held-out tail (or the whole of --data
    FILE), beside the naive last-value forecast."""
    from seqtool.models import load_published
    from seqtool.storage import json_line
    from seqtool.training import forecast as core

    model = load_published(ws, device)
    (context, tail), source = core.evaluation_split(ws, data, column, reporter(ctx).warn)
    scores = core.forecast_scores(model, context, tail)
    if as_json:
        sys.stdout.write(json_line({"data": source, "model": scores}, indent=2) + "\n")
        return
    sys.stdout.write(f"{'data':<14}{source} ({scores['values']:,} values forecast, one step ahead)\n")
    sys.stdout.write(f"{'model':<14}mse {scores['mse']:.6g}  rmse {scores['rmse']:.6g}  "
                     f"(standardised mse {scores['loss']:.4f})\n")
    sys.stdout.write(f"{'naive':<14}mse {scores['naive_mse']:.6g}  (the last value of each window)\n")
    sys.stdout.write(f"{'skill':<14}{scores['skill']:+.4f}  (1 − mse / naive mse; > 0: better than naive)\n")

