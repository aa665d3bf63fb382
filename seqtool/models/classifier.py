"""A text classifier: a sequence model's body (an RNN LM, a Transformer encoder or decoder, GPT-2) with
its output layer taken off, a pooling of its hidden states into one vector per text, and a linear head
over the labels (the many-to-one RNN; BERT's [CLS] head, Devlin et al. 2019; GPT-1's task head on the
last token, Radford et al. 2018).

Poolings (hidden states h (B, T, D) of the tokens newline + text + newline, data/labelled.py):
  last       the last real token's state: what an RNN or a causal decoder has read everything by
  first      the first token's state, [CLS]-style: only a bidirectional encoder sees the text from there
  mean       the mean over the real tokens
  attention  a learned softmax over the tokens, score_t = vᵀ tanh(W h_t) (Yang et al. 2016)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqtool.config import check_choice
from seqtool.errors import InputError

POOLINGS = ("last", "first", "mean", "attention")


@dataclass
class HeadConfig:
    """head: how the body's states become label scores. pooling "": last for RNNs and decoders, first
    for encoders."""

    pooling: str = ""
    dropout: float = 0.1  # on the pooled vector

    def __post_init__(self) -> None:
        if self.pooling:
            check_choice("head.pooling", self.pooling, POOLINGS)
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"head.dropout must be in [0, 1), got {self.dropout}")


def body_kind(body: nn.Module) -> str:
    """rnn | encoder | decoder: how a body reads a text."""
    cfg = getattr(body, "cfg", None)
    arch = getattr(cfg, "arch", None)
    if arch is None:
        return "rnn"
    if arch not in ("encoder", "decoder"):
        raise InputError(f"a {arch} Transformer cannot be a classifier's body",
                         hint="use a decoder (language model) or an encoder (masked language model)")
    return str(arch)


def resolve_pooling(body: nn.Module, pooling: str) -> str:
    kind = body_kind(body)
    if not pooling:
        return "first" if kind == "encoder" else "last"
    if pooling == "first" and kind != "encoder":
        body = "an RNN" if kind == "rnn" else "a causal decoder"
        raise InputError(f"--pooling first reads the first token, which has seen nothing else in {body}",
                         hint="use last, mean or attention (first suits a bidirectional encoder)")
    return pooling


class Classifier(nn.Module):
    """`model(batch)` with batch {"inputs" (B, T), "lengths" (B,), "labels" (B,)} → (logits (B, C), loss)."""

    lora_targets: dict = {}  # LoRA goes into the body (finetune --task classify --lora-rank), by its family
    vocab_keys: dict = {}

    def __init__(self, body: nn.Module, labels: list[str], head: HeadConfig, lora: dict | None = None):
        super().__init__()
        self.labels, self.head_cfg, self.lora = list(labels), head, lora
        self.kind = body_kind(body)
        self.pooling = resolve_pooling(body, head.pooling)
        self.body_arch = body.arch()
        # The LM output layer predicts tokens, not labels: off with it (DDP must see no unused weights).
        if self.kind == "rnn":
            body.out = None
            width = body.cfg.hidden
        else:
            body.head = None
            width = body.cfg.d_model
        if lora is not None:
            from seqtool.models.lora import LoraConfig, add_lora, resolve_targets

            config = LoraConfig(**lora)
            add_lora(body, resolve_targets(self.body_arch["model"], config.targets), config)
        self.body = body
        if self.pooling == "attention":
            self.attn_proj = nn.Linear(width, width)
            self.attn_score = nn.Linear(width, 1, bias=False)
        self.drop = nn.Dropout(head.dropout)
        self.head = nn.Linear(width, len(labels))

    @classmethod
    def from_arch(cls, arch: dict) -> Classifier:
        from seqtool.models import load_model

        body = load_model(arch["body"])
        return cls(body, arch["labels"], HeadConfig(**arch["head"]), arch.get("lora"))

    def arch(self) -> dict:
        """The architecture for model.json: the body's own, the labels, the head and any LoRA."""
        head = {**asdict(self.head_cfg), "pooling": self.pooling}
        return {"model": "classifier", "labels": self.labels, "head": head, "lora": self.lora,
                "body": self.body_arch}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def states(self, inputs: Tensor, mask: Tensor) -> Tensor:
        """inputs (B, T), mask (B, T) True on real tokens → the body's hidden states (B, T, D)."""
        if self.kind == "rnn":
            return self.body.hidden_states(inputs)[0]  # right padding never reaches a real token's state
        if self.kind == "encoder":
            key_mask = None if bool(mask.all()) else mask[:, None, None, :]  # (B, 1, 1, T)
            return self.body.encoder(inputs, mask=key_mask)
        return self.body.decoder(inputs)  # causal: padding on the right is never attended to

    def features(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """One vector per text (B, D), pooled from the body's states."""
        T = inputs.size(1)
        mask = torch.arange(T, device=inputs.device)[None, :] < lengths[:, None]  # (B, T)
        h = self.states(inputs, mask)  # (B, T, D)
        if self.pooling == "last":
            return h[torch.arange(h.size(0), device=h.device), lengths - 1]
        if self.pooling == "first":
            return h[:, 0]
        if self.pooling == "mean":
            weights = mask.to(h.dtype) / lengths[:, None].to(h.dtype)  # (B, T)
        else:
            scores = self.attn_score(torch.tanh(self.attn_proj(h))).squeeze(-1)  # (B, T)
            weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        return torch.einsum("bt,btd->bd", weights, h)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits = self.head(self.drop(self.features(batch["inputs"], batch["lengths"])))  # (B, C)
        return logits, F.cross_entropy(logits.float(), batch["labels"])


def new_classifier(body: nn.Module, labels: list[str], head: HeadConfig, lora: Any = None) -> Classifier:
    """A classifier over `body` (trained or not) with a fresh head; `lora` a LoraConfig or None."""
    return Classifier(body, labels, head, None if lora is None else lora.to_dict())
