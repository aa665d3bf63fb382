"""--freeze: keep named parts of a model fixed while the rest trains (finetune, finetune --task classify).
A spec names parameters by their names: embeddings (token and position tables), encoder (a translation
model's encoder side), layers:A-B (stacked layers A to B, of a transformer or a recurrent net).
"""

from __future__ import annotations

import re

from torch import nn

from seqtool.errors import InputError


def freeze(model: nn.Module, specs: list[str]) -> None:
    """embeddings | encoder | layers:A-B (or layers:N): set requires_grad False on what they name."""
    for spec in specs:
        if spec == "embeddings":
            match = lambda name: "embed" in name or name.split(".")[-2:-1] == ["pos"]  # noqa: E731
        elif spec == "encoder":
            match = lambda name: name.startswith(("encoder.", "src_embed."))  # noqa: E731
        elif m := re.fullmatch(r"layers:(\d+)(?:-(\d+))?", spec):
            lo, hi = int(m[1]), int(m[2] or m[1])
            index = "|".join(str(i) for i in range(lo, hi + 1))
            pattern = re.compile(rf"(^|\.)layers\.({index})\.|_l({index})(_reverse)?$")
            match = lambda name, p=pattern: bool(p.search(name))  # noqa: E731
        else:
            raise InputError(f"--freeze {spec!r} is not one of embeddings, encoder, layers:A-B")
        hit = [p for name, p in model.named_parameters() if match(name)]
        if not hit:
            raise InputError(f"--freeze {spec}: this model has no such parameters",
                             hint="see `seqtool info -w WS` for its architecture")
        for param in hit:
            param.requires_grad_(False)
