"""A recurrent forecaster: W standardised values → stacked RNN / GRU / LSTM → the last state → a linear
layer → the next value, trained with the mean squared error (the lectures' time-series example).

It knows the standardisation of its training data (model.json's mean and std), so `predict` and
`forecast` take and return values in the series' own units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqtool.config import MAX_LAYERS, check_between
from seqtool.errors import InputError
from seqtool.models.rnn_lm import _make_rnn

CELLS = ("rnn", "rnn-relu", "gru", "lstm")  # the fused cells of rnn_lm (the UGRNN has no fused kernel)


@dataclass
class ForecasterConfig:
    cell: str = "lstm"
    n_layers: int = 2
    hidden: int = 256
    dropout: float = 0.2  # between stacked layers and on the last state (never on the input values)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise InputError(f"model.cell must be one of {', '.join(CELLS)} for forecasting; "
                             f"got {self.cell!r}", hint="e.g. --cell lstm")
        check_between("model.n_layers", self.n_layers, 1, MAX_LAYERS)
        if self.hidden <= 0:
            raise InputError(f"model.hidden must be > 0, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"model.dropout must be in [0, 1), got {self.dropout}")


class Forecaster(nn.Module):
    """`model(batch)` with batch {"inputs": (B, W) standardised values, "targets": (B,)} → (predictions
    (B,), mean squared error); both on the standardised scale."""

    lora_targets: dict = {}
    vocab_keys: dict = {}  # no tokens

    def __init__(self, cfg: ForecasterConfig, window: int, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        if window < 1 or not std > 0:
            raise InputError(f"a forecaster needs window ≥ 1 and std > 0; got {window} and {std}")
        self.cfg, self.window, self.mean, self.std = cfg, window, float(mean), float(std)
        self.rnn = _make_rnn(cfg.cell, 1, cfg.hidden, cfg.n_layers, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, 1)

    @classmethod
    def from_arch(cls, arch: dict) -> Forecaster:
        names = {f.name for f in fields(ForecasterConfig)}
        cfg = ForecasterConfig(**{k: v for k, v in arch.items() if k in names})
        return cls(cfg, int(arch["window"]), float(arch["mean"]), float(arch["std"]))

    def arch(self) -> dict:
        """The architecture for model.json, with the standardisation of the training values."""
        return {"model": "forecaster", **asdict(self.cfg), "window": self.window, "mean": self.mean,
                "std": self.std}

    def next_value(self, z: Tensor) -> Tensor:
        """z (B, T) standardised values → the standardised value after each row (B,)."""
        h, _ = self.rnn(z.unsqueeze(-1))  # (B, T, H)
        return self.out(self.drop(h[:, -1])).squeeze(-1)  # (B,)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        prediction = self.next_value(batch["inputs"])
        return prediction, F.mse_loss(prediction.float(), batch["targets"].float())

    # -- in the series' units ----------------------------------------------------------------------
    def standardise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forecast(self, history: Tensor, steps: int) -> Tensor:
        """The `steps` values after `history` (T,) (T ≥ 1), each predicted from the last `window` values
        (fewer at the start of a short history), then appended to them: the model rolls forward on its
        own predictions, reading windows as it was trained to."""
        device = next(self.parameters()).device
        z = self.standardise(history.to(device, torch.float32)).view(1, -1)  # (1, T)
        out = []
        for _ in range(steps):
            following = self.next_value(z[:, -self.window:])  # (1,)
            out.append(following)
            z = torch.cat([z, following.view(1, 1)], dim=1)
        return (torch.cat(out) * self.std + self.mean).cpu() if out else torch.zeros(0)
