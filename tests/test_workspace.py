"""Workspace: metadata, versions, kinds, layout, the read-only view (the lock: test_lock.py; checkpoint
files: test_checkpoints.py)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from seqtool.errors import InputError, RuntimeFailure
from seqtool.kinds import KINDS
from seqtool.lock import WorkspaceLock
from seqtool.storage import atomic_write, save_tensors
from seqtool.workspace import FORMAT_VERSION, Workspace, is_workspace


def test_create_and_open(tmp_path):
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {"optim": {"lr": 1.0}})
    again = Workspace.open(tmp_path / "ws", kinds=("rnn-lm",))
    assert again.kind == "rnn-lm" and again.config == {"optim": {"lr": 1.0}}
    assert again.meta["format_version"] == FORMAT_VERSION
    with pytest.raises(InputError, match="holds a rnn-lm model"):
        Workspace.open(ws.path, kinds=("seq2seq",), purpose="translate")


def test_layout_is_the_documented_one(tmp_path):
    """DESIGN.md's layout, spelled by the Workspace alone (every command finds its files through it)."""
    ws = Workspace.create(tmp_path / "ws", "seq2seq", {})
    root = ws.path
    assert (ws.tokenizer_dir, ws.weights_file, ws.checkpoints_dir) == (
        root / "tokenizer", root / "model.safetensors", root / "checkpoints")
    assert ws.checkpoint_dir(42) == root / "checkpoints" / "step-0000042"
    assert ws.fixed_data("valid.src") == root / "data" / "valid.src"
    assert ws.sample_file(7) == root / "samples" / "step-0000007.txt"
    assert (ws.plot_file("loss.png"), ws.attention_dir) == (root / "plots" / "loss.png", root / "attention")
    assert ws.adapter_file("a", ".json") == root / "adapters" / "a.json"
    assert ws.lock().path == WorkspaceLock.of(root).path == root / ".lock"
    assert is_workspace(root) and not is_workspace(tmp_path)
    ws.save_checkpoint(1, {"w": torch.zeros(1)}, {}, {})
    ws.clear_checkpoints()
    assert ws.checkpoint_dirs() == [] and ws.has_weights() is False


def test_a_view_reads_the_workspace_and_writes_nothing(tmp_path):
    """What ranks other than 0 train with: every writing method returns without touching the disk."""
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {})
    ws.append_metrics({"event": "train", "step": 1})
    ws.save_checkpoint(1, {"w": torch.zeros(1)}, {}, {})

    def files():
        return {p: p.read_bytes() for p in ws.path.rglob("*") if p.is_file()}

    before, view = files(), ws.view()
    view.write_meta()
    view.update_status(state="running")
    view.mark_finished("max_steps", 2)
    view.append_metrics({"event": "train", "step": 2})
    view.publish({"w": torch.ones(1)}, {"model": "rnn-lm"})
    view.publish_adapter("a", {"w": torch.ones(1)}, {})
    assert view.save_checkpoint(2, {"w": torch.ones(1)}, {}, {}) == ws.checkpoint_dir(2)
    assert view.save_tokenizers({}) is False
    view.keep_fixed_data({"valid.txt": ["a line"]})
    view.draw_plot("loss.png", lambda path: path.write_text("drawn"))
    assert view.clear_checkpoints() is False and view.clear_run() is False
    assert files() == before and ws.status == {} and not ws.read_only
    assert view.read_metrics() == ws.read_metrics() and view.checkpoint_dirs() == ws.checkpoint_dirs()


def test_every_kind_names_a_model_family():
    from seqtool.models import MODELS

    assert {kind.family for kind in KINDS.values()} <= set(MODELS)
    assert {kind.task for kind in KINDS.values()} == {"lm", "mlm", "translation", "classify", "forecast"}


def test_open_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        Workspace.open(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a seqtool workspace"):
        Workspace.open(tmp_path / "plain")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        Workspace.open(tmp_path / "file")
    (tmp_path / "plain" / "seqtool.yaml").write_text(": : :\n\t-")
    with pytest.raises(InputError, match="corrupt"):
        Workspace.open(tmp_path / "plain")


def test_newer_format_names_both_versions(tmp_path):
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {})
    ws.meta["format_version"] = FORMAT_VERSION + 1
    ws.meta["seqtool_version"] = "9.9.9"
    ws.write_meta()
    with pytest.raises(InputError, match=r"format version 2 \(written by seqtool 9\.9\.9\).*reads format 1"):
        Workspace.open(ws.path)


def test_renamed_keys_of_an_older_workspace_read_under_their_new_names(tmp_path):
    """The RNN LM's model.layers (seqtool.yaml) and "layers" (model.json) are n_layers now, also in the
    source config a fine-tuned workspace keeps; the order of the keys stays."""
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {"finetune": {"lr": 0.1}, "source_config": {
        "model": {"cell": "gru", "layers": 3, "hidden": 8}}})
    (ws.path / "model.json").write_text(json.dumps({"model": "rnn-lm", "cell": "gru", "layers": 3}))
    save_tensors(ws.path / "model.safetensors", {"w": torch.zeros(1)})
    again = Workspace.open(ws.path)
    assert again.config["source_config"]["model"] == {"cell": "gru", "n_layers": 3, "hidden": 8}
    assert list(again.architecture().items()) == [("model", "rnn-lm"), ("cell", "gru"), ("n_layers", 3)]
    assert again.load_published()[1] == again.architecture()


def test_read_only_workspace_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions")
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {})
    os.chmod(ws.path, 0o555)
    try:
        with pytest.raises(RuntimeFailure, match="cannot write"):
            atomic_write(ws.path / "x", "y")
    finally:
        os.chmod(ws.path, 0o755)


def test_missing_weights_message(tmp_path):
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {})
    with pytest.raises(InputError, match="no trained model yet"):
        ws.load_published()
