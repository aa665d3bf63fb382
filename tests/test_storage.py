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


def test_temp_dir_beside_has_a_plain_mode_and_the_name_the_lock_cleans(tmp_path):
    """Stores, tokenizers, checkpoints and exports are built in it and renamed into place: they must not
    keep mkdtemp's private 0700 mode, and a kill leaves a name lock.remove_temp_files recognises."""
    import os

    from seqtool.lock import TEMP_NAME
    from seqtool.storage import temp_dir_beside

    umask = os.umask(0o022)
    try:
        tmp = temp_dir_beside(tmp_path / "deep" / "store")
    finally:
        os.umask(umask)
    assert tmp.parent == tmp_path / "deep" and tmp.is_dir() and not any(tmp.iterdir())
    assert TEMP_NAME.fullmatch(tmp.name)["name"] == "store"
    assert tmp.stat().st_mode & 0o777 == 0o755
