"""Recurrent language models: embedding → stacked RNN (tanh or ReLU) / GRU / LSTM / UGRNN → dropout → output
layer.

Training runs PyTorch's fused nn.RNN/GRU/LSTM (cuDNN on GPU, oneDNN on CPU). Decoding steps one token
at a time through the same weights with torch's single-step cell kernels (`torch.lstm_cell` …), which
skip the fused kernels' per-call set-up: a 2×256 char LSTM samples several times faster that way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqtool.config import MAX_LAYERS, check_between
from seqtool.decoding import reorder_state
from seqtool.errors import InputError
from seqtool.models.stepping import drop_step_weights, step_logits

CELLS = ("rnn", "rnn-relu", "gru", "lstm", "ugrnn")
State = tuple[Tensor, ...]  # (h,) or (h, c) for the LSTM, each (L, B, H)


@dataclass
class RNNLMConfig:
    cell: str = "lstm"  # rnn (Elman, tanh) | rnn-relu (Elman, ReLU) | gru | lstm | ugrnn (Collins et al.
    # 2017)
    n_layers: int = 2  # stacked recurrent layers
    hidden: int = 256
    embedding: int = 0  # 0: the same as hidden, so the output layer can share the embedding (tie)
    dropout: float = 0.2  # on the embeddings, between layers and on the last layer's outputs
    residual: bool = False  # x + layer(x) between stacked layers (from the second layer on)
    tie: bool = True  # share the input embedding with the output layer when embedding == hidden

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise InputError(f"model.cell must be one of {', '.join(CELLS)}; got {self.cell!r}",
                             hint="e.g. --cell lstm")
        check_between("model.n_layers", self.n_layers, 1, MAX_LAYERS)
        if self.hidden <= 0:
            raise InputError(f"model.hidden must be > 0, got {self.hidden}")
        if self.embedding < 0:
            raise InputError(f"model.embedding must be ≥ 0 (0: same as hidden), got {self.embedding}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"model.dropout must be in [0, 1), got {self.dropout}")

    @property
    def embedding_size(self) -> int:
        return self.embedding or self.hidden


# ---------------------------------------------------------------------------------------------
# the update-gate RNN


def ugrnn_cell(x_proj: Tensor, h: Tensor, weight_hh: Tensor) -> Tensor:
    """One UGRNN step (Collins, Sohl-Dickstein & Sussillo 2017, "Capacity and trainability in RNNs"):
        c = tanh(W_cx x + W_ch h + b_c),  g = σ(W_gx x + W_gh h + b_g),  h' = g ⊙ h + (1 − g) ⊙ c
    x_proj (B, 2H) holds the input part W_x x + b of both; h (B, H)."""
    candidate, gate = (x_proj + h @ weight_hh.t()).chunk(2, dim=-1)  # (B, H) each
    gate = torch.sigmoid(gate)
    return gate * h + (1.0 - gate) * torch.tanh(candidate)


class UGRNN(nn.Module):
    """One UGRNN layer with nn.GRU's call signature (batch_first); parameters named like nn.GRU's."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(2 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(2 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(2 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, I), h (1, B, H) → outputs (B, T, H), last state (1, B, H)."""
        x_proj = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # (B, T, 2H): all steps at once
        h_t, outputs = h[0], []
        for t in range(x.size(1)):
            h_t = ugrnn_cell(x_proj[:, t], h_t, self.weight_hh_l0)
            outputs.append(h_t)
        return torch.stack(outputs, dim=1), h_t.unsqueeze(0)


def _make_rnn(cell: str, input_size: int, hidden: int, layers: int = 1, dropout: float = 0.0) -> nn.Module:
    if cell == "ugrnn":
        return UGRNN(input_size, hidden)
    kwargs = {"batch_first": True, "num_layers": layers, "dropout": dropout if layers > 1 else 0.0}
    if cell in ("rnn", "rnn-relu"):  # Elman's RNN; ReLU as in Le et al. 2015 (fused kernels have both)
        return nn.RNN(input_size, hidden, nonlinearity="relu" if cell == "rnn-relu" else "tanh", **kwargs)
    return (nn.GRU if cell == "gru" else nn.LSTM)(input_size, hidden, **kwargs)


# ---------------------------------------------------------------------------------------------
# the model


class RNNLM(nn.Module):
    """Called on a batch {"inputs": (B, T), "targets": (B, T)} with `state` → (logits (B, T, V), loss,
    state) for truncated BPTT; on a window batch with "targets" (B,) → (logits (B, V), loss)."""

    lora_targets: dict = {}  # no LoRA: the recurrent weights are not nn.Linear layers
    vocab_keys = {"": ("vocab_size",)}  # --extend-vocab: arch keys sized by its one tokenizer
    # --freeze (models/freezing.py): layer N is the fused rnn's _lN weights, or a UGRNN's layers.N
    freeze_groups = {"embeddings": r"^embed\.", "layers": r"^rnn\.\w+_l{i}(_reverse)?$|^layers\.{i}\."}

    def __init__(self, cfg: RNNLMConfig, vocab_size: int):
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        E, H, L = cfg.embedding_size, cfg.hidden, cfg.n_layers
        self.embed = nn.Embedding(vocab_size, E)
        self.drop = nn.Dropout(cfg.dropout)
        # One fused multi-layer module, unless the layers must be visited one by one (residual
        # connections, or the UGRNN, which has no fused kernel).
        self.fused = cfg.cell != "ugrnn" and not cfg.residual
        if self.fused:
            self.rnn = _make_rnn(cfg.cell, E, H, L, cfg.dropout)
        else:
            self.layers = nn.ModuleList(_make_rnn(cfg.cell, E if i == 0 else H, H) for i in range(L))
        self.out = nn.Linear(H, vocab_size)
        self.tied = cfg.tie and E == H
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        nn.init.zeros_(self.out.bias)
        if self.tied:
            self.out.weight = self.embed.weight

    def train(self, mode: bool = True) -> RNNLM:
        if mode:
            drop_step_weights(self)  # the decoding copy of the output layer (stepping.py)
        return super().train(mode)

    @classmethod
    def from_arch(cls, arch: dict) -> RNNLM:
        names = {f.name for f in fields(RNNLMConfig)}
        return cls(RNNLMConfig(**{k: v for k, v in arch.items() if k in names}), int(arch["vocab_size"]))

    def arch(self) -> dict:
        """The architecture for model.json."""
        return {"model": "rnn-lm", **asdict(self.cfg), "vocab_size": self.vocab_size, "tied": self.tied}

    # -- training -------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        zeros = torch.zeros(self.cfg.n_layers, batch_size, self.cfg.hidden, device=device)
        return (zeros, zeros.clone()) if self.cfg.cell == "lstm" else (zeros,)

    def hidden_states(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """inputs (B, T) → the last layer's outputs (B, T, H) after dropout, and the new state."""
        if state is None:
            state = self.init_state(inputs.size(0), inputs.device)
        x = self.drop(self.embed(inputs))  # (B, T, E)
        if self.fused:
            x, new = self.rnn(x, state if self.cfg.cell == "lstm" else state[0])
            return self.drop(x), (new if isinstance(new, tuple) else (new,))
        per_layer = []
        for i, layer in enumerate(self.layers):
            layer_state = tuple(s[i:i + 1] for s in state)  # (1, B, H) each
            y, new = layer(x, layer_state if self.cfg.cell == "lstm" else layer_state[0])
            per_layer.append(new if isinstance(new, tuple) else (new,))
            if i > 0 and self.cfg.residual:
                y = y + x
            x = self.drop(y) if i < len(self.layers) - 1 else y
        return self.drop(x), tuple(torch.cat(parts) for parts in zip(*per_layer, strict=True))

    def forward(self, batch: dict[str, Tensor], state: State | None = None):
        inputs, targets = batch["inputs"], batch["targets"]
        h, state = self.hidden_states(inputs, state)
        if targets.dim() == 1:  # the window objective: only the token after the window counts
            logits = self.out(h[:, -1])  # (B, V)
            return logits, F.cross_entropy(logits.float(), targets)
        logits = self.out(h)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss, state

    # -- decoding: the step interface (eval mode: no dropout) -------------------------------------
    # The decoding state holds each layer's (h,) or (h, c), each (B, H): stepping reads and writes
    # them without slicing or stacking (L, B, H) tensors at every token.
    def start(self, src_ids: Tensor | None = None, src_mask: Tensor | None = None) -> None:
        """A language model has no source: the state starts empty (zeros on the first step)."""
        return None

    def step(self, next_ids: Tensor, state: tuple[State, ...] | None) -> tuple[Tensor, tuple[State, ...]]:
        """next_ids (B, t) → logits (B, V) after the last of them, and the state after all of them.
        A prompt (t > 1) runs the fused layers once; single tokens take the cell kernels."""
        if next_ids.size(1) > 1 or self.training:
            stacked = None if state is None else tuple(torch.stack(s) for s in zip(*state, strict=True))
            h, stacked = self.hidden_states(next_ids, stacked)  # (L, B, H) each
            return step_logits(self.out, h[:, -1]), tuple(zip(*(s.unbind(0) for s in stacked), strict=True))
        if state is None:
            zeros = self.init_state(next_ids.size(0), next_ids.device)
            state = tuple(zip(*(s.unbind(0) for s in zeros), strict=True))
        x = F.embedding(next_ids.view(-1), self.embed.weight)  # (B, E)
        new = []
        for i, layer in enumerate(state):
            w_ih, w_hh, b_ih, b_hh = self._layer_weights(i)
            if self.cfg.cell == "lstm":
                layer = torch.lstm_cell(x, layer, w_ih, w_hh, b_ih, b_hh)
            elif self.cfg.cell == "gru":
                layer = (torch.gru_cell(x, layer[0], w_ih, w_hh, b_ih, b_hh),)
            elif self.cfg.cell == "rnn":
                layer = (torch.rnn_tanh_cell(x, layer[0], w_ih, w_hh, b_ih, b_hh),)
            elif self.cfg.cell == "rnn-relu":
                layer = (torch.rnn_relu_cell(x, layer[0], w_ih, w_hh, b_ih, b_hh),)
            else:
                layer = (ugrnn_cell(F.linear(x, w_ih, b_ih), layer[0], w_hh),)
            new.append(layer)
            x = layer[0] + x if i > 0 and self.cfg.residual else layer[0]
        return step_logits(self.out, x), tuple(new)  # an int8 `out` (--quantize int8) is called as it is

    def reorder(self, state: tuple[State, ...] | None, index: Tensor) -> tuple[State, ...] | None:
        """Keep/duplicate batch rows (beam search, several samples of one prompt)."""
        return reorder_state(state, index)

    def _layer_weights(self, i: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        module, suffix = (self.rnn, f"l{i}") if self.fused else (self.layers[i], "l0")
        return (getattr(module, f"weight_ih_{suffix}"), getattr(module, f"weight_hh_{suffix}"),
                getattr(module, f"bias_ih_{suffix}", None), getattr(module, f"bias_hh_{suffix}", None))
