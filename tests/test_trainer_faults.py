"""The trainer under faults, in-process on a toy task: preemption and bit-identical resume, Ctrl-C,
non-finite steps and divergence, a finished run resumed, disk full while checkpointing."""

from __future__ import annotations

import errno
import json
import os
import signal

import pytest
import torch
from toytask import make_trainer

from seqtool.errors import EXIT_INTERRUPTED, RuntimeFailure, SeqtoolError, TemporaryFailure
from seqtool.workspace import Workspace, load_tensors


def new_ws(tmp_path, name="ws") -> Workspace:
    return Workspace.create(tmp_path / name, "rnn-lm", {})


def final_state(ws: Workspace):
    ckpt = ws.latest_checkpoint()
    model, trainer, _ = ws.load_checkpoint(ckpt)
    return model, trainer


def assert_same_run(a: Workspace, b: Workspace) -> None:
    (model_a, tr_a), (model_b, tr_b) = final_state(a), final_state(b)
    assert model_a.keys() == model_b.keys()
    for name in model_a:
        assert torch.equal(model_a[name], model_b[name]), name
    state_a, state_b = tr_a["optimizer"]["state"], tr_b["optimizer"]["state"]
    for key in state_a:
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state_a[key][field], state_b[key][field]), (key, field)
    skip = {"elapsed"}
    assert {k: v for k, v in tr_a["train_state"].items() if k not in skip} == \
        {k: v for k, v in tr_b["train_state"].items() if k not in skip}
    assert torch.equal(tr_a["rng"]["torch"], tr_b["rng"]["torch"])
    assert all(torch.equal(x, y) for x, y in zip(tr_a["carry"], tr_b["carry"], strict=True))


@pytest.mark.parametrize(("signum", "step"), [(signal.SIGTERM, 5), (signal.SIGUSR1, 10)])
def test_signal_checkpoints_exits_75_and_resumes_bit_identically(tmp_path, signum, step):
    ref = new_ws(tmp_path, "ref")
    make_trainer(ref).fit()

    ws = new_ws(tmp_path)
    with pytest.raises(TemporaryFailure, match=f"stopped by {signal.Signals(signum).name} at step {step}"):
        make_trainer(ws, signal_at=step, signum=signum).fit()
    assert ws.latest_checkpoint().name == f"step-{step:07d}"  # the current step finished first
    assert Workspace.open(ws.path).status["state"] == "preempted"
    # a fresh process: another seed for the new model, which the checkpoint overwrites
    summary = make_trainer(ws, seed=0).fit(resume=True)
    assert summary["status"] == "finished" and summary["steps"] == 12
    assert_same_run(ref, ws)
    assert torch.equal(load_tensors(ref.path / "model.safetensors")["out.weight"],
                       load_tensors(ws.path / "model.safetensors")["out.weight"])


def test_ctrl_c_checkpoints_and_exits_130(tmp_path):
    ws = new_ws(tmp_path)
    with pytest.raises(SeqtoolError, match="Ctrl-C at step 3") as err:
        make_trainer(ws, signal_at=3, signum=signal.SIGINT).fit()
    assert err.value.exit_code == EXIT_INTERRUPTED
    assert ws.latest_checkpoint().name == "step-0000003"
    last = ws.read_metrics()[-1]
    assert last["event"] == "summary" and last["status"] == "interrupted" and last["steps"] == 3


def test_finished_run_resumed_does_nothing(tmp_path):
    ws = new_ws(tmp_path)
    make_trainer(ws).fit()
    before = sorted(p.name for p in ws.checkpoint_dirs())
    summary = make_trainer(ws).fit(resume=True)
    assert summary["status"] == "already-finished" and summary["steps"] == 12
    assert sorted(p.name for p in ws.checkpoint_dirs()) == before


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    events: list = []
    ws = new_ws(tmp_path)
    summary = make_trainer(ws, poison={2, 5}, events=events).fit()
    assert summary["steps"] == 12 and summary["skipped_steps"] == 2
    skips = [e for e in events if e["event"] == "skip"]
    assert [e["step"] for e in skips] == [3, 5]  # the update numbers they would have been
    assert all(torch.isfinite(t).all() for t in final_state(ws)[0].values())


def test_too_many_bad_steps_in_a_row_is_divergence(tmp_path):
    ws = new_ws(tmp_path)
    with pytest.raises(RuntimeFailure, match="3 non-finite steps in a row at step 7") as err:
        make_trainer(ws, poison={6, 7, 8}, max_bad_steps=3).fit()
    assert err.value.exit_code == 1
    assert "step-0000004" in str(err.value)  # names the last good checkpoint
    last = ws.read_metrics()[-1]
    assert last["event"] == "summary" and last["status"] == "failed"
    model, _ = final_state(ws)
    assert all(torch.isfinite(t).all() for t in model.values())


def test_disk_full_while_checkpointing_keeps_the_previous_one(tmp_path, monkeypatch):
    ws = new_ws(tmp_path)
    make_trainer(ws, steps=4).fit()  # checkpoints/step-0000004
    real_replace = os.replace

    def full(src, dst, *args, **kwargs):
        if "step-0000008" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(RuntimeFailure, match="disk full") as err:
        make_trainer(ws, steps=12).fit(resume=True)
    assert "intact" in str(err.value)
    monkeypatch.setattr(os, "replace", real_replace)
    assert [p.name for p in ws.checkpoint_dirs()] == ["step-0000004"]
    assert not [p for p in (ws.path / "checkpoints").iterdir() if p.name.startswith(".")]
    model, trainer = final_state(ws)
    assert trainer["train_state"]["step"] == 4
    assert json.loads((ws.latest_checkpoint() / "meta.json").read_text())["step"] == 4
    # step 4 finished the shorter run; the longer one that failed has not finished
    assert ws.finished_status() is None and Workspace.open(ws.path).finished_status() is None
