"""storage: atomic writes leave the old file on failure; tensors round-trip with tied weights stored once."""

from __future__ import annotations

import pytest
import torch

from seqtool.storage import atomic_write, atomic_write_with, count_parameters, load_tensors, save_tensors


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write(target, "old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_tensors_tied_weights_round_trip(tmp_path):
    emb = torch.nn.Embedding(7, 4)
    out = torch.nn.Linear(4, 7)
    out.weight = emb.weight
    state = {"emb.weight": emb.weight, "out.weight": out.weight, "out.bias": out.bias}
    save_tensors(tmp_path / "m.safetensors", state)
    back = load_tensors(tmp_path / "m.safetensors")
    assert torch.equal(back["out.weight"], emb.weight)
    assert count_parameters(tmp_path / "m.safetensors") == 7 * 4 + 7  # stored once
