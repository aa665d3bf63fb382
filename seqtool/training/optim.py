"""The optimizer and its learning-rate schedule: schedules are pure functions of the step (plateau decay is
a factor the trainer keeps)."""

from __future__ import annotations

import math

import torch
from torch import nn

from seqtool.config import OptimConfig
from seqtool.errors import InputError


def lr_at(step: int, base_lr: float, schedule: str, warmup_steps: int = 0, total_steps: int | None = None,
          step_size: int = 1000, gamma: float = 0.5, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (1-based).

    constant / plateau: base_lr after a linear warmup. step: base_lr * gamma^(step // step_size).
    cosine: linear warmup, then half a cosine from base_lr down to min_lr at total_steps.
    inverse-sqrt: "Attention Is All You Need" eq. 3, rescaled so the peak (at the end of warmup) is
    base_lr: base_lr * min(step / warmup, sqrt(warmup / step)).
    """
    step = max(step, 1)
    if schedule == "inverse-sqrt":
        warm = max(warmup_steps, 1)
        return base_lr * min(step / warm, math.sqrt(warm / step))
    if warmup_steps and step <= warmup_steps:
        return base_lr * step / warmup_steps
    if schedule in ("constant", "plateau"):
        return base_lr
    if schedule == "step":
        return max(min_lr, base_lr * gamma ** (step // max(step_size, 1)))
    if schedule == "cosine":
        if not total_steps:
            raise InputError("optim.schedule=cosine needs a known length",
                             hint="set run.max_steps (--max-steps) or run.epochs (--epochs)")
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    raise InputError(f"unknown schedule {schedule!r}", hint="constant, step, plateau, cosine, inverse-sqrt")


def make_optimizer(params: list[nn.Parameter], o: OptimConfig) -> torch.optim.Optimizer:
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    # On CUDA one fused kernel updates every tensor (fewer launches than foreach); the CPU keeps
    # torch's default implementation, so CPU runs and their bit-identical resume are unchanged.
    fused = True if params and all(p.is_cuda for p in params) else None
    adam = torch.optim.Adam if o.optimizer == "adam" else torch.optim.AdamW
    return adam(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, fused=fused)
