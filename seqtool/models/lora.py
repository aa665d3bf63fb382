"""LoRA (Hu et al. 2021, "Low-Rank Adaptation"): a frozen linear layer plus a trainable low-rank
update, after torchtune's LoRALinear. Plain functions add adapters by module name, merge them into
the base weights, and extract or load only the adapter weights.

    y = x W^T + b + (alpha / rank) · dropout(x) A^T B^T      A: (rank, in), B: (out, rank)

B starts at zero, so a model behaves exactly as before right after the adapters are added.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from seqtool.errors import InputError

# Short target names (--lora-targets q,k,v,o,mlp) → the last part of the module names they select,
# for every model family. A family's entry names its own modules; unknown short names are errors.
TARGETS: dict[str, dict[str, tuple[str, ...]]] = {
    "transformer": {"q": ("query",), "k": ("key",), "v": ("value",), "o": ("out",),
                    "mlp": ("fc", "proj")},
    "seq2seq": {"q": ("query",), "k": ("key",), "v": ("value",), "o": ("out", "output")},
}


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q", "v"])

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise InputError(f"--lora-rank must be ≥ 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"--lora-dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise InputError("--lora-targets is empty", hint="e.g. --lora-targets q,v")

    def to_dict(self) -> dict:
        return asdict(self)


class LoRALinear(nn.Module):
    """A linear layer whose `weight`/`bias` are frozen and whose low-rank update `lora_b @ lora_a` trains.

    The base parameters keep their names (`weight`, `bias`), so the base part of a state dict is the
    same with or without adapters; the adapter adds `lora_a.weight` and `lora_b.weight`.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Linear(self.in_features, rank, bias=False, **factory)
        self.lora_b = nn.Linear(rank, self.out_features, bias=False, **factory)
        # As in the paper and torchtune: A like a default nn.Linear (Kaiming uniform), B zero.
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)
        self.merged = False

    def delta(self) -> torch.Tensor:
        """The update the adapter adds to `weight`: scale · B A, shape (out, in)."""
        return (self.lora_b.weight @ self.lora_a.weight) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        return out + self.lora_b(self.lora_a(self.dropout(x))) * self.scale

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"alpha={self.alpha}, merged={self.merged}")


# ---------------------------------------------------------------------------------------------
# adding, merging, extracting


def target_suffixes(family: str, targets: list[str]) -> tuple[str, ...]:
    """Module-name endings selected by the short names `targets` for a model `family`."""
    table = TARGETS.get(family)
    if table is None:
        raise InputError(f"LoRA is not available for {family} models",
                         hint=f"LoRA works on {', '.join(TARGETS)} models; use full fine-tuning")
    suffixes: list[str] = []
    for name in targets:
        if name not in table:
            raise InputError(f"unknown LoRA target {name!r} for a {family} model",
                             hint=f"choose from {', '.join(table)}")
        suffixes.extend(table[name])
    return tuple(suffixes)


def add_lora(model: nn.Module, suffixes: tuple[str, ...], config: LoraConfig) -> list[str]:
    """Wrap every nn.Linear whose name ends in one of `suffixes`; freeze everything else.

    Returns the wrapped module names. An empty match is an error naming the linear layers there are.
    """
    linear = [(name, module) for name, module in model.named_modules() if type(module) is nn.Linear]
    chosen = [name for name, _ in linear if name.rsplit(".", 1)[-1] in suffixes]
    if not chosen:
        names = sorted({name.rsplit(".", 1)[-1] for name, _ in linear})
        raise InputError(f"no linear layer of this model matches the LoRA targets ({', '.join(suffixes)})",
                         hint=f"its linear layers are named: {', '.join(names) or 'none'}")
    for param in model.parameters():
        param.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), config.rank, config.alpha, config.dropout))
    return chosen


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight (W ← W + scale·BA); forward no longer adds it."""
    with torch.no_grad():
        for module in lora_modules(model).values():
            if not module.merged:
                module.weight += module.delta().to(module.weight.dtype)
                module.merged = True


def unmerge_lora(model: nn.Module) -> None:
    """Undo merge_lora (W ← W − scale·BA), e.g. to keep training the adapters."""
    with torch.no_grad():
        for module in lora_modules(model).values():
            if module.merged:
                module.weight -= module.delta().to(module.weight.dtype)
                module.merged = False


def strip_lora(model: nn.Module) -> nn.Module:
    """Merge the adapters and put plain nn.Linear layers back: the model a merged workspace holds."""
    merge_lora(model)
    for name, module in lora_modules(model).items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                          device=module.weight.device, dtype=module.weight.dtype)
        plain.weight, plain.bias = module.weight, module.bias
        setattr(parent, child, plain)
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def is_adapter_key(key: str) -> bool:
    return ".lora_a." in key or ".lora_b." in key or key.startswith(("lora_a.", "lora_b."))


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights (`…lora_a.weight`, `…lora_b.weight`): what adapters/NAME.safetensors holds."""
    return {k: v for k, v in model.state_dict().items() if is_adapter_key(k)}


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights without the adapters (the base, unchanged while only adapters train)."""
    if any(m.merged for m in lora_modules(model).values()):
        raise ValueError("base_state_dict of a merged model would hold merged weights; unmerge first")
    return {k: v for k, v in model.state_dict().items() if not is_adapter_key(k)}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor], where: str = "adapter") -> None:
    """Load adapter weights into a model that add_lora has prepared; every key must match exactly."""
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise InputError(f"{where} does not fit this model ({detail})",
                         hint="the adapter was trained on a different base model or targets")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise InputError(f"{where}: {key} has shape {tuple(tensor.shape)}, the model expects "
                             f"{tuple(expected[key].shape)}", hint="the adapter belongs to another base")
    model.load_state_dict(state, strict=False)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total
