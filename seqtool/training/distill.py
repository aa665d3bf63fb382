"""Knowledge distillation (Hinton et al., 2015): a student trained on a teacher's soft targets.

The loss at every scored position is  alpha · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − alpha) · CE,
where CE is the student's own loss on the hard targets; T² keeps the soft term's gradients on the scale
of the hard one's as T grows (Hinton et al., §2). The teacher is any workspace of the same task (a
Transformer LM teaching an LSTM LM, ...) that uses the student's tokenizer; it runs in eval mode under
no_grad and is never part of a checkpoint: its workspace hash is recorded, and a resumed run checks it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqtool.config import check_positive
from seqtool.errors import InputError
from seqtool.kinds import KINDS
from seqtool.training.tasks import TrainTask
from seqtool.workspace import Workspace


@dataclass
class DistillConfig:
    """finetune's `distill` section: the teacher and the mix of soft and hard loss."""

    teacher: str = ""  # a workspace directory
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft (teacher) loss; 1 - alpha goes to the hard targets

    def __post_init__(self) -> None:
        check_positive("distill.temperature", self.temperature)
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"distill.alpha must be in [0, 1], got {self.alpha}")


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, scored: Tensor, hard_loss: Tensor,
                      temperature: float, alpha: float) -> Tensor:
    """alpha · T² · mean KL(teacher ‖ student) over the `scored` positions + (1 − alpha) · hard_loss.
    Logits (..., V); scored (...) bool: the positions the hard loss counts (not padding)."""
    if alpha == 0.0:
        return hard_loss  # exactly plain training
    s = student_logits[scored].float() / temperature  # (N, V)
    t = teacher_logits[scored].float() / temperature
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="sum")
    soft = kl / max(int(scored.sum()), 1) * temperature**2
    return alpha * soft + (1.0 - alpha) * hard_loss


class Distilled(nn.Module):
    """The student, called like the student, with the distillation loss. It holds the student as its one
    submodule (so the optimizer, `.train()`, `.to()` and DDP see only the student) and saves and loads
    exactly the student's state, so checkpoints and published weights are the student's. The teacher is
    kept outside the module tree. A carried state (truncated BPTT) is (student's, teacher's)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: DistillConfig, pad_id: int):
        super().__init__()
        self.student = student
        self.teachers = (teacher.eval().requires_grad_(False),)  # a tuple: not a registered submodule
        self.cfg, self.pad_id = cfg, pad_id

    def forward(self, batch: dict[str, Tensor], state: Any = None) -> tuple[Any, ...]:
        teacher = self.teachers[0]
        s_state, t_state = state if state is not None else (None, None)
        carries = state is not None or _carries(self.student, batch)
        out = self.student(batch, state=s_state) if carries else self.student(batch)
        with torch.no_grad():
            if _carries(teacher, batch):
                t_logits, _, t_state = teacher(batch, state=t_state)
            else:  # logits only: a Transformer's loss would not fit a window batch's targets
                t_logits = teacher.logits(batch) if hasattr(teacher, "logits") else teacher(batch)[0]
        if t_logits.dim() > out[0].dim():
            t_logits = t_logits[:, -1]  # a window batch: only the next token after the window counts
        targets = batch["tgt_out"] if "tgt_out" in batch else batch["targets"]
        loss = distillation_loss(out[0], t_logits, targets != self.pad_id, out[1], self.cfg.temperature,
                                 self.cfg.alpha)
        if carries:
            return out[0], loss, (out[2], t_state)
        return out[0], loss

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return self.student.state_dict(*args, **kwargs)

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.student.load_state_dict(state, strict=strict, assign=assign)


def _carries(model: nn.Module, batch: dict[str, Tensor]) -> bool:
    """An RNN LM on a stream carries its state from batch to batch (a window batch does not)."""
    targets = batch.get("targets")
    return model.arch()["model"] == "rnn-lm" and targets is not None and targets.dim() == 2


def teacher_hash(ws: Workspace) -> str:
    """sha256 over what makes the teacher: its architecture, weights and tokenizer files."""
    from seqtool.storage import sha256_file

    digest = hashlib.sha256()
    tokenizer = sorted(p for p in ws.tokenizer_dir.rglob("*") if p.is_file())
    files = [ws.path / "model.json", ws.weights_file, *tokenizer]
    for path in files:
        digest.update(f"{path.relative_to(ws.path)}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def attach(cfg: DistillConfig, task: TrainTask, ws: Workspace, kind: str, tokenizers: dict[str, Any],
           resuming: bool, device: torch.device) -> TrainTask:
    """`task` with its model replaced by the Distilled student of the teacher `cfg.teacher`; refuses a
    teacher of another task or tokenizer, and on a resumed run one whose workspace changed. The student's
    validation is unchanged (the student alone, on the hard targets)."""
    from seqtool.models import load_published
    from seqtool.source_model import _same_tokenizers

    tws = Workspace.open(cfg.teacher, kinds=tuple(KINDS), purpose="distillation (the teacher)")
    if KINDS[tws.kind].task != KINDS[kind].task:
        raise InputError(f"--distill-from {cfg.teacher} is a {tws.kind} model; the student is a {kind} one",
                         hint="the teacher must do the student's task (language model, masked LM or "
                              "translation)")
    if not _same_tokenizers(tws, tokenizers):
        raise InputError(f"--distill-from {cfg.teacher} uses another tokenizer than the student",
                         hint="teacher and student must share one tokenizer: train both with the same -t DIR")
    digest = teacher_hash(tws)
    recorded = (ws.meta.get("distill") or {}).get("teacher_sha256")
    if resuming and recorded != digest:
        raise InputError(f"the teacher {cfg.teacher} changed since this distillation run began",
                         hint="resume with the teacher it started with, or start afresh with --resume never")
    ws.meta["distill"] = {"teacher": cfg.teacher, "teacher_sha256": digest}
    ws.write_meta()
    teacher = load_published(tws, device)
    positions = getattr(getattr(teacher, "cfg", None), "max_len", 0)  # a Transformer's learned positions
    first = next(iter(task.data.batches(0, 0)))
    width = max(first[key].shape[1] for key in ("inputs", "src", "tgt_in") if key in first)
    if positions and width > positions:
        raise InputError(f"the teacher reads at most {positions} tokens, the student's rows hold {width}",
                         hint=f"pass --context {positions} or less (translation: shorter sentences)")
    pad_id = next(iter(tokenizers.values())).pad_id
    if "tgt" in tokenizers:
        pad_id = tokenizers["tgt"].pad_id
    student, evaluate = task.model, task.evaluate
    task.model = Distilled(student, teacher, cfg, pad_id)
    task.evaluate = lambda _model: evaluate(student)
    return task
