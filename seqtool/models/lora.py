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

# Each model class names its LoRA targets in `lora_targets`: short names (--lora-targets q,k,v,o,mlp) →
# the linear layers they select, as (module-name ending, chunk, chunks). A fused projection holds several
# outputs side by side (the Transformer's self-attention `qkv` is query, key, value: chunk 0, 1, 2 of 3,
# as GPT-2's c_attn), so "q" adapts only the query rows of it and "q,v" gives query and value their own
# adapters.
Target = tuple[str, int, int]


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q", "v"])

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise InputError(f"--lora-rank must be ≥ 1, got {self.rank}")
        if not math.isfinite(self.alpha):
            raise InputError(f"--lora-alpha must be a finite number, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"--lora-dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise InputError("--lora-targets is empty", hint="e.g. --lora-targets q,v")

    def to_dict(self) -> dict:
        return asdict(self)


class LoRALinear(nn.Module):
    """A linear layer whose `weight`/`bias` are frozen and whose low-rank update B·A trains.

    The output may be `parts` equal chunks side by side (a fused q/k/v projection); each chunk listed
    in `chunks` gets its own pair A (rank, in), B (out/parts, rank), stored stacked as `lora_a`
    (G, rank, in) and `lora_b` (G, out/parts, rank). The base parameters keep their names, so the
    base part of a state dict is the same with or without adapters.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, parts: int = 1,
                 chunks: tuple[int, ...] = (0,)):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        if self.out_features % parts:
            raise ValueError(f"{self.out_features} outputs do not split into {parts} chunks")
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha, self.parts = rank, alpha, parts
        self.register_buffer("chunks", torch.tensor(sorted(chunks)), persistent=False)
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        groups, chunk_size = len(chunks), self.out_features // parts
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(groups, rank, self.in_features, **factory))
        self.lora_b = nn.Parameter(torch.zeros(groups, chunk_size, rank, **factory))
        # As in the paper and torchtune: A like a default nn.Linear (Kaiming uniform), B zero.
        for g in range(groups):
            nn.init.kaiming_uniform_(self.lora_a[g], a=math.sqrt(5))
        self.merged = False

    def delta(self) -> torch.Tensor:
        """The update the adapters add to `weight`: scale · B_g A_g in the rows of chunk g, (out, in)."""
        per_chunk = torch.einsum("gor,gri->goi", self.lora_b, self.lora_a) * self.scale  # (G, O, in)
        full = per_chunk.new_zeros(self.parts, per_chunk.size(1), self.in_features)  # (P, O, in)
        full[self.chunks] = per_chunk
        return full.flatten(0, 1)  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)  # (..., out)
        if self.merged:
            return out
        G, r = self.lora_a.shape[:2]
        a = F.linear(self.dropout(x), self.lora_a.reshape(G * r, -1)).unflatten(-1, (G, r))  # (..., G, r)
        update = torch.einsum("...gr,gor->...go", a, self.lora_b) * self.scale  # (..., G, O)
        if self.parts == 1:
            return out + update.flatten(-2)
        out = out.unflatten(-1, (self.parts, -1))  # (..., P, O)
        return out.index_add(-2, self.chunks, update.to(out.dtype)).flatten(-2)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"alpha={self.alpha}, chunks={self.chunks.tolist()}/{self.parts}, merged={self.merged}")


# ---------------------------------------------------------------------------------------------
# adding, merging, extracting


def resolve_targets(family: str, targets: list[str]) -> tuple[Target, ...]:
    """The (module-name ending, chunk, chunks) selected by the short names `targets` in a `family`."""
    from seqtool.models import MODELS

    table = getattr(MODELS.get(family), "lora_targets", None)
    if not table:
        able = ", ".join(name for name, model in MODELS.items() if model.lora_targets)
        raise InputError(f"LoRA is not available for {family} models",
                         hint=f"LoRA works on {able} models; use full fine-tuning")
    chosen: list[Target] = []
    for name in targets:
        if name not in table:
            raise InputError(f"unknown LoRA target {name!r} for a {family} model",
                             hint=f"choose from {', '.join(table)}")
        chosen.extend(table[name])
    return tuple(chosen)


def add_lora(model: nn.Module, targets: tuple[Target, ...], config: LoraConfig) -> list[str]:
    """Wrap every nn.Linear that `targets` select; freeze everything else.

    Returns the wrapped module names. An empty match is an error naming the linear layers there are.
    """
    linear = [(name, module) for name, module in model.named_modules() if type(module) is nn.Linear]
    plan: dict[str, tuple[int, set[int]]] = {}
    for name, _ in linear:
        for ending, chunk, parts in targets:
            if name.rsplit(".", 1)[-1] == ending:
                plan.setdefault(name, (parts, set()))[1].add(chunk)
    if not plan:
        names = sorted({name.rsplit(".", 1)[-1] for name, _ in linear})
        endings = sorted({t[0] for t in targets})
        raise InputError(f"no linear layer of this model matches the LoRA targets ({', '.join(endings)})",
                         hint=f"its linear layers are named: {', '.join(names) or 'none'}")
    for param in model.parameters():
        param.requires_grad_(False)
    for name, (parts, chunks) in plan.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), config.rank, config.alpha, config.dropout,
                                          parts, tuple(chunks)))
    return list(plan)


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
    return key.rsplit(".", 1)[-1] in ("lora_a", "lora_b")


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights (`…lora_a`, `…lora_b`): what adapters/NAME.safetensors holds."""
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


def attach_adapter(model: nn.Module, state: dict[str, torch.Tensor], config: dict, where: str) -> None:
    """Add the adapters that `config` (adapters/NAME.json) describes and load their weights `state`."""
    cfg = LoraConfig(**{k: config[k] for k in ("rank", "alpha", "dropout", "targets")})
    add_lora(model, resolve_targets(config["family"], cfg.targets), cfg)
    load_adapter_state(model, state, where)


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
