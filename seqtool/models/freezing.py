"""--freeze: keep named parts of a model fixed while the rest trains (finetune, finetune --task classify).

Each model class declares its groups beside its LoRA targets, in `freeze_groups`: a regular expression
over parameter names for `embeddings` (token and position tables), `encoder` (a translation model's
source side) and `layers` (one stacked layer; `{i}` stands for its number). A spec names a group:
embeddings, encoder, or layers:A-B (layers A to B, or layers:N).
"""

from __future__ import annotations

import re

from torch import nn

from seqtool.errors import InputError


def freeze(model: nn.Module, specs: list[str]) -> None:
    """embeddings | encoder | layers:A-B (or layers:N): set requires_grad False on what they name."""
    groups: dict[str, str] = getattr(type(model), "freeze_groups", {})
    for spec in specs:
        if spec in ("embeddings", "encoder"):
            pattern = groups.get(spec)
        elif m := re.fullmatch(r"layers:(\d+)(?:-(\d+))?", spec):
            lo, hi = int(m[1]), int(m[2] or m[1])
            layer = groups.get("layers")
            pattern = layer and layer.replace("{i}", "(" + "|".join(str(i) for i in range(lo, hi + 1)) + ")")
        else:
            raise InputError(f"--freeze {spec!r} is not one of embeddings, encoder, layers:A-B")
        hit = [p for name, p in model.named_parameters() if pattern and re.search(pattern, name)]
        if not hit:
            raise InputError(f"--freeze {spec}: this model has no such parameters",
                             hint="see `seqtool info -w WS` for its architecture")
        for param in hit:
            param.requires_grad_(False)
