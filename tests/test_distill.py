"""finetune --distill-from: the distillation loss against a hand computation, alpha 0 is plain training,
a Transformer teacher trains an LSTM student, a teacher with another tokenizer or a changed teacher is
refused, and an interrupted distillation resumes to the same weights."""

from __future__ import annotations

import math

import pytest
import torch

from seqtool.data.tokenizers import train_tokenizer
from seqtool.models.rnn_lm import RNNLM, RNNLMConfig
from seqtool.models.transformer import Transformer, TransformerConfig
from seqtool.storage import load_tensors
from seqtool.training.distill import distillation_loss
from seqtool.workspace import Workspace

TEXT = "\n".join(["beat the eggs with the sugar", "fold in the flour and bake",
                  "serve the cake warm with cream", "whisk the butter until pale"] * 12) + "\n"


def _tok(kind="char"):
    return train_tokenizer(kind, TEXT.splitlines())


def _teacher(path, kind="char"):
    tok = _tok(kind)
    torch.manual_seed(1)
    model = Transformer(TransformerConfig(arch="decoder", vocab_size=tok.vocab_size, n_layers=1, n_heads=2,
                                          d_model=16, d_ff=32, dropout=0.0, positions="learned", max_len=32))
    ws = Workspace.create(path, "transformer-lm", {"data": {"block_size": 32}})
    tok.save(ws.tokenizer_dir)
    ws.publish(model.state_dict(), model.arch())
    return ws


def _student(path):
    tok = _tok()
    torch.manual_seed(2)
    model = RNNLM(RNNLMConfig(cell="lstm", n_layers=1, hidden=16, dropout=0.0), tok.vocab_size)
    ws = Workspace.create(path, "rnn-lm", {"data": {"bptt": 16}})
    tok.save(ws.tokenizer_dir)
    ws.publish(model.state_dict(), model.arch())
    return ws


COMMON = ("--max-steps", 4, "--eval-every", 2, "--batch-size", 4, "--context", 16, "--lr", 3e-3,
          "--device", "cpu", "--seed", 3)


def _finetune(cli, *args):
    return cli(["finetune", *map(str, args)])


def _ok(result):
    assert result.exit_code == 0, result.stderr + result.stdout
    return result


def _weights(path):
    return load_tensors(Workspace.open(path).weights_file)


def test_the_loss_is_alpha_t2_kl_plus_the_hard_loss_by_hand():
    s = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])  # (B=1, T=2, V=3)
    t = torch.tensor([[[0.0, 2.0, 0.0], [9.0, 9.0, 9.0]]])
    scored = torch.tensor([[True, False]])  # the second position is padding
    hard, T, alpha = torch.tensor(1.25), 2.0, 0.3

    def softmax(z):
        e = [math.exp(v / T) for v in z]
        return [v / sum(e) for v in e]

    p, q = softmax([0.0, 2.0, 0.0]), softmax([1.0, 0.0, -1.0])
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = alpha * T * T * kl + (1 - alpha) * 1.25
    assert distillation_loss(s, t, scored, hard, T, alpha).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(s, s, scored, hard, T, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_alpha_zero_is_plain_training(cli, tmp_path, tmp_text):
    _teacher(tmp_path / "teacher")
    _student(tmp_path / "student")
    data = tmp_text(TEXT, name="new.txt")
    base = ("--from", tmp_path / "student", "--data", data, *COMMON)
    _ok(_finetune(cli, *base, "-w", tmp_path / "plain"))
    _ok(_finetune(cli, *base, "-w", tmp_path / "alpha0", "--distill-from", tmp_path / "teacher",
                  "--distill-alpha", 0))
    _ok(_finetune(cli, *base, "-w", tmp_path / "kd", "--distill-from", tmp_path / "teacher",
                  "--distill-alpha", 0.9, "--distill-temperature", 3))
    plain, alpha0, kd = (_weights(tmp_path / n) for n in ("plain", "alpha0", "kd"))
    assert plain.keys() == kd.keys()  # the published weights are the student's, nothing of the teacher
    assert all(torch.equal(plain[k], alpha0[k]) for k in plain)
    assert not all(torch.equal(plain[k], kd[k]) for k in plain)
    ws = Workspace.open(tmp_path / "kd")
    assert ws.kind == "rnn-lm" and len(ws.meta["distill"]["teacher_sha256"]) == 64
    assert _ok(cli(["generate", "-w", tmp_path / "kd", "--max-tokens", 5, "--seed", 1])).stdout


def test_a_teacher_with_another_tokenizer_or_task_is_refused(cli, tmp_path, tmp_text):
    _teacher(tmp_path / "words", kind="word")
    _student(tmp_path / "student")
    data = tmp_text(TEXT, name="new.txt")
    result = _finetune(cli, "--from", tmp_path / "student", "--data", data, "-w", tmp_path / "kd",
                       "--distill-from", tmp_path / "words", *COMMON)
    assert result.exit_code == 2 and "uses another tokenizer than the student" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    result = _finetune(cli, "--from", tmp_path / "student", "--data", data, "-w", tmp_path / "kd",
                       "--distill-alpha", 0.5, *COMMON)
    assert result.exit_code == 2 and "--distill-from" in result.stderr


def _interrupt_after_step_2(path):
    """As if the run had been stopped after its step-2 checkpoint (a preempted job): the later one gone."""
    import shutil

    ws = Workspace.open(path)
    for ckpt in ws.checkpoint_dirs():
        if not ckpt.name.endswith("0000002"):
            shutil.rmtree(ckpt)
    ws.update_status(state="preempted", final_step=None)


def _last_checkpoint(path):
    ws = Workspace.open(path)
    return ws.load_checkpoint(ws.checkpoint_dirs()[-1])[0]


def test_an_interrupted_distillation_resumes_to_the_same_weights(cli, tmp_path, tmp_text):
    teacher = _teacher(tmp_path / "teacher")
    _student(tmp_path / "student")
    data, valid = tmp_text(TEXT, name="new.txt"), tmp_text(TEXT[:200], name="valid.txt")
    args = ("--from", tmp_path / "student", "--data", data, "--valid", valid, "--distill-from",
            tmp_path / "teacher", "--checkpoint-every", 2, "-w", tmp_path / "kd", *COMMON)
    _ok(_finetune(cli, *args))
    whole = _last_checkpoint(tmp_path / "kd")
    _interrupt_after_step_2(tmp_path / "kd")
    result = _ok(_finetune(cli, *args))
    assert "resumed from step-0000002" in result.stderr
    resumed = _last_checkpoint(tmp_path / "kd")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    # the teacher is not in the checkpoint: a resumed run refuses a teacher that has changed since
    _interrupt_after_step_2(tmp_path / "kd")
    state = {k: v + 0.01 for k, v in load_tensors(teacher.weights_file).items()}
    teacher.publish(state, teacher.architecture())
    result = _finetune(cli, *args)
    assert result.exit_code == 2 and "changed since this distillation run began" in result.stderr
