"""seqtool/checkpoints.py (through Workspace): checkpoints verified by sha256, pruned to the last `keep`,
and trainer.pt loaded without running a pickle's code."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from seqtool.errors import InputError
from seqtool.workspace import Workspace


def test_checkpoints_verified_and_pruned(tmp_path):
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {})
    for step in (10, 20, 30, 40):
        ws.save_checkpoint(step, {"w": torch.full((3,), float(step))}, {"step": step, "rng": torch.ones(2)},
                           {"loss": 1.0}, keep=3)
    assert [p.name for p in ws.checkpoint_dirs()] == ["step-0000020", "step-0000030", "step-0000040"]
    latest = ws.latest_checkpoint()
    model, trainer, meta = ws.load_checkpoint(latest)
    assert model["w"][0] == 40 and trainer["step"] == 40 and meta["step"] == 40
    # truncate the newest: it is detected, named, and the previous one is used
    path = latest / "model.safetensors"
    path.write_bytes(path.read_bytes()[:20])
    warnings = []
    assert ws.latest_checkpoint(warnings).name == "step-0000030"
    assert "step-0000040" in warnings[0] and "sha256" in warnings[0]


def test_malicious_pickle_is_refused(tmp_path):
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {})
    ckpt = ws.save_checkpoint(1, {"w": torch.zeros(1)}, {"step": 1}, {})
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (ckpt / "trainer.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(InputError, match="refused"):
        ws.load_checkpoint(ckpt)
    assert not marker.exists()
