"""Sequence forecasting (`train-rnn --task forecast`): a numeric CSV column → the training values and the
held-out tail → windows of W values → the next value, trained with the MSE on the shared run lifecycle;
scored against the naive forecast (the last value of the window) by validation and `seqtool evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from seqtool.config import DataConfig, OptimConfig, RunConfig, check_positive
from seqtool.data.series import Series, SeriesWindows, Split, read_series, tail_windows
from seqtool.errors import InputError
from seqtool.models.forecaster import Forecaster, ForecasterConfig
from seqtool.training.tasks import TrainTask
from seqtool.workspace import Workspace

HISTORY_FILE = "history.txt"  # data/history.txt: the series' last values, where `seqtool forecast` goes on


@dataclass
class SeriesDataConfig(DataConfig):
    column: str = ""  # the CSV column to forecast ("": the last one)
    window: int = 50  # values per example: W values → the next

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("data.window", self.window)
        if self.valid:
            raise InputError("forecasting holds out the end of the series, not a --valid file",
                             hint="use --valid-fraction to choose how much of the end")
        if getattr(self, "store", ""):  # DataConfig's token store: text corpora only
            raise InputError("--data-store (data.store) is for token streams; forecasting reads its CSV",
                             hint="drop --data-store")


@dataclass
class ForecastConfig:
    """`seqtool train-rnn --task forecast`: the sections of its YAML config."""

    data: SeriesDataConfig = field(default_factory=SeriesDataConfig)
    model: ForecasterConfig = field(default_factory=ForecasterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def read_split(data: SeriesDataConfig) -> tuple[Series, Split]:
    if not data.train:
        raise InputError("no series given", hint="pass a CSV file (or data.train in the --config YAML)")
    series = read_series(data.train, data.column, data.encoding_errors)
    return series, Split.of(series.values, data.valid_fraction, data.window)


def scored_part(values: list[float], held_out: list[float], window: int) -> tuple[list[float], list[float]]:
    """(context, tail): the values forecast are the held-out tail, after the training values; with
    nothing held out, every value after the first window."""
    if held_out:
        return values, held_out
    if len(values) <= window:
        raise InputError(f"the series is too short: {len(values):,} values give no window of {window} with a "
                         "value after it", hint="pass a longer series")
    return values[:window], values[window:]


def forecast_scores(model: Forecaster, context: list[float], tail: list[float], batch_size: int = 256
                    ) -> dict[str, float]:
    """Each value of `tail` predicted from the W values before it (from the end of `context` at first):
    loss = MSE of the standardised values (what training minimises), mse and rmse in the series' units,
    naive_mse of the last-value forecast x̂_t = x_{t−1}, and skill = 1 − mse / naive_mse (> 0: better
    than the naive forecast)."""
    W = model.window
    as_z = lambda values: model.standardise(torch.tensor(values, dtype=torch.float64)).float()  # noqa: E731
    device = next(model.parameters()).device
    squared, naive, n = 0.0, 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in tail_windows(as_z(context[-W:]), as_z(tail), W, batch_size):
            inputs, targets = batch["inputs"].to(device), batch["targets"].to(device)
            squared += float(((model.next_value(inputs) - targets) ** 2).sum())
            naive += float(((inputs[:, -1] - targets) ** 2).sum())
            n += targets.numel()
    model.train(was_training)
    loss, naive_loss = squared / n, naive / n
    scale = model.std ** 2  # MSE in the series' units = standardised MSE × std²
    return {"loss": loss, "mse": loss * scale, "rmse": (loss * scale) ** 0.5, "naive_mse": naive_loss * scale,
            "skill": 1.0 - loss / naive_loss if naive_loss > 0 else 0.0, "values": n}


def build(cfg: ForecastConfig, ws: Workspace, resuming: bool, device: torch.device,
          note: Callable[[str], None]) -> tuple[TrainTask, Callable[[dict], None]]:
    """The forecasting task (series, split, model, windows) and the line said after a finished run."""
    series, split = read_split(cfg.data)
    W = cfg.data.window
    ws.keep_fixed_data({HISTORY_FILE: [repr(v) for v in series.values[-W:]]})
    model = Forecaster(cfg.model, W, split.mean, split.std)
    params = sum(p.numel() for p in model.parameters())
    note(f"{cfg.model.cell} forecaster: {params:,} parameters; {series.column!r} of {series.source}: "
         f"{len(split.train):,} training values (mean {split.mean:.4g}, std {split.std:.4g}), windows of "
         f"{W}; {split.note}")
    source = SeriesWindows(split.standardised(split.train), cfg.run.batch_size, W, cfg.run.seed)

    context, tail = scored_part(split.train, split.valid, W)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        scores = forecast_scores(m, context, tail)
        del scores["values"]  # the same every time
        return scores

    task = TrainTask(model=model, data=source, evaluate=evaluate, arch=model.arch(), nll=False)

    def after(summary: dict) -> None:
        best = summary.get("best_scores") or {}
        if "mse" in best:
            note(f"held-out MSE {best['mse']:.6g} vs the naive last-value forecast's {best['naive_mse']:.6g} "
                 f"(skill {best['skill']:+.3f})")

    return task, after


# ---------------------------------------------------------------------------------------------
# after training: the series a workspace forecasts and scores


def _recorded(ws: Workspace) -> SeriesDataConfig:
    from seqtool.config import from_dict

    return from_dict(SeriesDataConfig, ws.config.get("data") or {}, "data.")


def history(ws: Workspace, path: str | None, column: str | None) -> tuple[list[float], str]:
    """The values `seqtool forecast` goes on from: the end of `path` (a CSV) or of the training series
    (WS/data/history.txt, its last W values)."""
    data = _recorded(ws)
    if path is not None:
        series = read_series([path], data.column if column is None else column, data.encoding_errors)
        return series.values, f"{series.column!r} of {series.source}"
    saved = ws.fixed_data(HISTORY_FILE)
    if not saved.is_file():
        raise InputError(f"workspace {ws.path} lacks {saved.relative_to(ws.path)}",
                         hint="pass --history FILE, or retrain into a new workspace")
    values = [float(v) for v in saved.read_text(encoding="utf-8").split()]
    return values, f"the training series ({', '.join(str(f['path']) for f in ws.meta.get('data', []))})"


def roll_forward(model: Forecaster, values: list[float], steps: int) -> list[float]:
    """The `steps` values after `values`, each predicted from the window before it (Forecaster.forecast)."""
    return [float(v) for v in model.forecast(torch.tensor(values, dtype=torch.float32), steps)]


def evaluation_split(ws: Workspace, paths: list[str] | None, column: str | None,
                     warn: Callable[[str], None]) -> tuple[tuple[list[float], list[float]], str]:
    """((context, tail), where from) that `seqtool evaluate` scores: every value of `paths` after the
    first window, or the held-out tail of the run's own series (re-read from the files it records)."""
    from pathlib import Path

    from seqtool.data.io import file_fingerprint

    data = _recorded(ws)
    if paths:
        series = read_series(paths, data.column if column is None else column, data.encoding_errors)
        return scored_part(series.values, [], data.window), f"{series.column!r} of {series.source}"
    recorded = [f for f in ws.meta.get("data", []) if f.get("role") == "train"]
    hint = "pass the series explicitly: --data FILE"
    for f in recorded:
        if f["path"] == "-" or not Path(f["path"]).is_file():
            raise InputError(f"the training series {f['path']} recorded in {ws.path}/seqtool.yaml cannot be "
                             "read again", hint=hint)
        if file_fingerprint(f["path"])["sha256"] != f.get("sha256"):
            warn(f"{f['path']} changed since training; using its current contents")
    if not recorded:
        raise InputError(f"workspace {ws.path} records no training series", hint=hint)
    data.train = [f["path"] for f in recorded]
    _, split = read_split(data)
    where = "the held-out tail of the training series" if split.valid else "the training series"
    return scored_part(split.train, split.valid, data.window), where
