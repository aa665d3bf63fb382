"""The output layer of a decoding step, read in the layout that one token at a time reads fastest.

A step multiplies a few hidden states (B, D) by the output matrix (V, D). With nn.Linear's layout the
CPU kernel for one row walks the matrix at well under the memory bandwidth; the same product against
a contiguous (D, V) copy streams it (a GPT-2-shaped head, 50,257 × 384, at batch 1 and 1 thread: about
2× faster on a 2-core CPU, benchmarks/RESULTS.md). From 4 rows on both layouts run the same kernel and give
the same bits; below that the sums are rounded in another order (differences ~1e-7 relative, as
between one row alone and the same row in a batch). The copy is made on the first step and kept
until the weight changes (an optimizer step, a load, a move to another device) or the model goes
back to training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def step_logits(layer: nn.Module, h: Tensor) -> Tensor:
    """layer(h) for h (B, D) → (B, V); through the cached (D, V) copy when `layer` is a plain
    nn.Linear on the CPU under no_grad (anything else, e.g. an int8 layer or a GPU, is simply called)."""
    if type(layer) is not nn.Linear or torch.is_grad_enabled() or h.dim() != 2 or h.device.type != "cpu":
        return layer(h)
    weight = layer.weight
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, weight.shape)
    cached = layer.__dict__.get("_step_weight")
    if cached is None or cached[0] != key:
        cached = (key, weight.t().contiguous())  # (D, V)
        layer.__dict__["_step_weight"] = cached
    return h @ cached[1] if layer.bias is None else torch.addmm(layer.bias, h, cached[1])


def drop_step_weights(model: nn.Module) -> None:
    """Free the cached copies (the model is about to train, or its weights were replaced)."""
    for module in model.modules():
        module.__dict__.pop("_step_weight", None)
