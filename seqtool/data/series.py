"""Numeric series for forecasting: one column of a CSV file read as floats, the held-out tail, the
standardisation learnt from the training part, and windows of W values → the value after them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from seqtool.data.io import describe, iter_lines
from seqtool.errors import InputError


@dataclass
class Series:
    """The values of one column (in file order), where they came from and the column's name."""

    values: list[float]
    column: str  # the header's name, or "column N" (1-based) for a file without a header
    source: str


def read_series(paths: Sequence[str], column: str = "", encoding_errors: str = "strict") -> Series:
    """The numbers in `column` of the CSV file(s) `paths`, one row after another. `column` names a
    header field (the first row is then the header); "" takes the last column, and the first row is
    a header when that cell is not a number. A file of one number per line is a one-column CSV."""
    values: list[float] = []
    name, index = column, None
    for number, row in enumerate(csv.reader(iter_lines(paths, encoding_errors)), 1):
        if not row or not any(cell.strip() for cell in row):
            continue  # blank lines, e.g. at the end
        if index is None:
            index = _column_index(row, column, paths)
            if column or _number(row[index]) is None:
                name = row[index].strip() or f"column {index + 1}"
                continue
            name = f"column {index + 1}"
        if index >= len(row):
            raise InputError(f"{describe(paths)}, row {number}: has {len(row)} fields, no {name!r}",
                             hint="every row needs the column being forecast")
        value = _number(row[index])
        if value is None:
            raise InputError(f"{describe(paths)}, row {number}: {row[index]!r} in {name!r} is not a number",
                             hint="fill or drop rows with missing values before training")
        values.append(value)
    if not values:
        raise InputError(f"{describe(paths)} holds no numbers", hint="pass a CSV file with a numeric column")
    return Series(values, name, describe(paths))


def _column_index(header: list[str], column: str, paths: Sequence[str]) -> int:
    if not column:
        return len(header) - 1
    names = [cell.strip() for cell in header]
    if column not in names:
        raise InputError(f"{describe(paths)} has no column {column!r} (its first row: {', '.join(names)})",
                         hint="pass --column with one of those names")
    return names.index(column)


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass
class Split:
    """The training values, the held-out tail, and the mean and standard deviation of the training part,
    which standardise every value the model sees: z = (x − mean) / std."""

    train: list[float]
    valid: list[float]  # empty: validate on the training part
    mean: float
    std: float
    note: str

    @classmethod
    def of(cls, values: list[float], valid_fraction: float, window: int) -> Split:
        held_out = int(len(values) * valid_fraction)
        train = values[:-held_out] if held_out else values
        if len(train) <= window:
            raise InputError(f"the series is too short: {len(train):,} training values give no window of "
                             f"{window} with a value after it",
                             hint="use a longer series or a smaller --window")
        mean = sum(train) / len(train)
        std = math.sqrt(sum((v - mean) ** 2 for v in train) / len(train)) or 1.0  # a constant series: 1
        note = (f"held out: the last {held_out:,} of {len(values):,} values (valid_fraction {valid_fraction})"
                if held_out else "nothing held out (valid_fraction 0 or too few values): validating on the "
                                 "training values")
        return cls(train, values[len(train):], mean, std, note)

    def standardised(self, values: Sequence[float]) -> Tensor:
        return (torch.tensor(values, dtype=torch.float64) - self.mean).div(self.std).float()


class SeriesWindows:
    """Training examples: every `window` consecutive values → the next, each start once per epoch,
    shuffled by a generator seeded from (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, z: Tensor, batch_size: int, window: int, seed: int):
        self.z, self.batch_size, self.window, self.seed = z, batch_size, window, seed
        self.n_examples = z.numel() - window
        if self.n_examples < batch_size:
            raise InputError(f"the series is too short: {z.numel():,} training values give "
                             f"{max(self.n_examples, 0):,} windows of {window}, fewer than one batch of "
                             f"{batch_size}",
                             hint="use a longer series, or a smaller --batch-size or --window")
        self.steps_per_epoch = self.n_examples // batch_size

    def batches(self, epoch: int, start: int) -> Iterator[dict]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n_examples, generator=generator)
        for i in range(start, self.steps_per_epoch):
            yield windows(self.z, order[i * self.batch_size:(i + 1) * self.batch_size], self.window)


def tail_windows(context: Tensor, tail: Tensor, window: int, batch_size: int) -> Iterator[dict]:
    """Every value of `tail` predicted once, in order, from the `window` values before it (taken from the
    end of `context` for the first ones): batches {"inputs" (B, W), "targets" (B,)}."""
    z = torch.cat([context[-window:], tail])
    starts = torch.arange(z.numel() - window)[-tail.numel():] if tail.numel() else torch.arange(0)
    for i in range(0, starts.numel(), batch_size):
        yield windows(z, starts[i:i + batch_size], window)


def windows(z: Tensor, starts: Tensor, window: int) -> dict:
    """Values z[s : s + window] (B, window) and the value after each, z[s + window] (B,)."""
    inputs = z[starts.unsqueeze(1) + torch.arange(window)]  # (B, W)
    targets = z[starts + window]  # (B,)
    return {"inputs": inputs, "targets": targets, "ntokens": targets.numel()}
