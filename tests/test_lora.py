"""LoRA on a toy attention-shaped module: unchanged output at start, only adapters train, merge."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqtool.errors import InputError
from seqtool.models import lora
from seqtool.workspace import load_tensors, save_tensors


class Block(nn.Module):
    def __init__(self, d: int = 16):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)  # fused, as the Transformer's self-attention
        self.out = nn.Linear(d, d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
        x = x + self.out(att @ v)
        return x + self.down(torch.relu(self.up(x)))


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.layers = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(16, 20)

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def _toy():
    torch.manual_seed(0)
    return Toy(), torch.randint(0, 20, (3, 7))


def _add(model, targets=("q", "v"), rank=4):
    cfg = lora.LoraConfig(rank=rank, alpha=8.0, targets=list(targets))
    return lora.add_lora(model, lora.resolve_targets("transformer", cfg.targets), cfg)


def test_identical_output_right_after_adding():
    model, ids = _toy()
    before = model(ids)
    names = _add(model, ("q", "k", "v", "o", "mlp"))
    assert len(names) == 2 * 4
    torch.testing.assert_close(model(ids), before, rtol=0, atol=0)


def test_only_adapter_parameters_change_after_a_step():
    model, ids = _toy()
    _add(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # B starts at zero: A gets no gradient on step 1, so take two steps
        loss = nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(lora.is_adapter_key(k) for k in changed)
    assert any(k.endswith(".lora_a") for k in changed) and any(k.endswith(".lora_b") for k in changed)
    trainable, total = lora.count_parameters(model)
    assert trainable == sum(v.numel() for v in lora.adapter_state_dict(model).values())
    assert trainable < total


def _trained(model, ids):
    with torch.no_grad():
        for module in lora.lora_modules(model).values():
            module.lora_b.normal_(0, 0.1)
    return model


def test_merged_equals_unmerged_and_strip_gives_plain_model():
    model, ids = _toy()
    _add(model, ("q", "v", "mlp"))
    _trained(model, ids)
    model.eval()
    unmerged = model(ids)
    lora.merge_lora(model)
    torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)
    lora.unmerge_lora(model)
    torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)
    lora.strip_lora(model)
    assert not lora.lora_modules(model)
    plain = Toy()
    plain.load_state_dict(model.state_dict())  # same keys as a model that never had adapters
    torch.testing.assert_close(plain.eval()(ids), unmerged, rtol=1e-5, atol=1e-5)


def test_adapter_round_trip_and_file_size(tmp_path):
    model, ids = _toy()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    _add(model)
    _trained(model, ids)
    expected = model.eval()(ids)
    save_tensors(tmp_path / "a.safetensors", lora.adapter_state_dict(model))
    save_tensors(tmp_path / "base.safetensors", lora.base_state_dict(model))
    size_adapter = (tmp_path / "a.safetensors").stat().st_size
    assert size_adapter < (tmp_path / "base.safetensors").stat().st_size / 5

    fresh = Toy()
    fresh.load_state_dict(base)
    _add(fresh)
    lora.load_adapter_state(fresh, load_tensors(tmp_path / "a.safetensors"))
    torch.testing.assert_close(fresh.eval()(ids), expected)


def test_mismatched_adapter_and_unknown_target_are_errors():
    model, _ = _toy()
    _add(model, ("q",))
    other, _ = _toy()
    _add(other, ("o",))
    with pytest.raises(InputError, match="does not fit"):
        lora.load_adapter_state(model, lora.adapter_state_dict(other))
    with pytest.raises(InputError, match="unknown LoRA target"):
        lora.resolve_targets("transformer", ["zz"])
    with pytest.raises(InputError, match="no linear layer"):
        lora.add_lora(Toy(), (("nothing", 0, 1),), lora.LoraConfig())


def test_fused_projection_adapts_only_the_chosen_chunks():
    model, ids = _toy()
    _add(model, ("q", "v"), rank=2)
    module = model.layers[0].qkv
    assert tuple(module.lora_a.shape) == (2, 2, 16) and tuple(module.lora_b.shape) == (2, 16, 2)
    _trained(model, ids)
    delta = module.delta()  # (48, 16): query rows and value rows move, key rows do not
    assert delta[:16].abs().sum() > 0 and delta[32:].abs().sum() > 0
    assert delta[16:32].abs().sum() == 0
