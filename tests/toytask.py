"""A toy TrainTask for the trainer's fault, resume and distributed tests (no tokenizer, no CLI).

The model is a tiny GRU language model over random tokens; it can carry its hidden state from batch
to batch (truncated BPTT) and has dropout, so resuming must restore RNG streams and the carried state.
Two test hooks live here and nowhere in seqtool: a batch can be poisoned (its loss becomes NaN), and
the model can send its own process a signal on a chosen forward call, the way SLURM would.

Run as a script under torchrun it trains into a workspace and is the worker of tests/test_distributed.py:
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/toytask.py WS STEPS
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqtool.config import OptimConfig, RunConfig
from seqtool.training import runtime
from seqtool.training.tasks import TrainTask
from seqtool.training.trainer import Trainer
from seqtool.workspace import Workspace

VOCAB, WIDTH, SEQ = 13, 16, 6


class ToyLM(nn.Module):
    def __init__(self, dropout: float = 0.0, signal_at: int = 0, signum: int = signal.SIGTERM):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.rnn = nn.GRU(WIDTH, WIDTH, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(WIDTH, VOCAB)
        self.calls = 0
        self.signal_at, self.signum = signal_at, signum

    def forward(self, batch: dict[str, Any], state: Any = None):
        self.calls += self.training
        if self.training and self.calls == self.signal_at:
            os.kill(os.getpid(), self.signum)  # arrives mid-step, as a scheduler's signal would
        h = None if state is None else state[0]
        if h is not None and h.shape[1] != batch["x"].shape[0]:
            h = None
        hidden, h = self.rnn(self.drop(self.embed(batch["x"])), h)  # (B, T, D)
        logits = self.out(self.drop(hidden))  # (B, T, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch["y"].reshape(-1))
        if batch.get("poison"):
            loss = loss * float("nan")
        return logits, loss, (h,)


@dataclass
class ToyData:
    """Deterministic batches: epoch e is a fixed permutation of fixed random sequences."""

    batch_size: int = 4
    n_seqs: int = 32
    seed: int = 0
    poison: set[int] = field(default_factory=set)  # global micro-batch numbers whose loss is NaN

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        self.tokens = torch.randint(0, VOCAB, (self.n_seqs, SEQ + 1), generator=g)
        self.steps_per_epoch = self.n_seqs // self.batch_size

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        order = torch.randperm(self.n_seqs, generator=torch.Generator().manual_seed(1000 + epoch))
        for i in range(start, self.steps_per_epoch):
            rows = self.tokens[order[i * self.batch_size:(i + 1) * self.batch_size]]
            yield {"x": rows[:, :-1], "y": rows[:, 1:], "ntokens": rows[:, 1:].numel(),
                   "poison": epoch * self.steps_per_epoch + i in self.poison}


def make_task(model: ToyLM, data: ToyData, carries_state: bool = True) -> TrainTask:
    valid = ToyData(batch_size=8, n_seqs=16, seed=99)

    def evaluate(m: nn.Module) -> dict[str, float]:
        losses = [float(m(b)[1]) for b in valid.batches(0, 0)]
        return {"loss": sum(losses) / len(losses)}

    return TrainTask(model=model, data=data, evaluate=evaluate, arch={"kind": "toy"},
                     carries_state=carries_state)


def make_trainer(ws: Workspace, *, steps: int = 12, seed: int = 0, dropout: float = 0.1,
                 signal_at: int = 0, signum: int = signal.SIGTERM, poison: set[int] | None = None,
                 max_bad_steps: int = 10, batch_size: int = 4, carries_state: bool = True,
                 schedule: str = "plateau", events: list | None = None,
                 dist: runtime.Dist | None = None) -> Trainer:
    torch.manual_seed(seed)
    model = ToyLM(dropout=dropout, signal_at=signal_at, signum=signum)
    data = ToyData(batch_size=batch_size, poison=poison or set())
    optim = OptimConfig(optimizer="adam", lr=0.01, schedule=schedule, plateau_patience=1, gamma=0.5,
                        clip=1.0)
    run = RunConfig(max_steps=steps, eval_every=3, checkpoint_every=4, log_every=1, seed=seed,
                    max_bad_steps=max_bad_steps, keep_checkpoints=3)
    sink = events if events is not None else []
    return Trainer(ws, make_task(model, data, carries_state), optim, run, sink.append,
                   torch.device("cpu"), dist=dist)


def main(argv: list[str]) -> None:
    """torchrun worker: rank 0 creates and locks the workspace; every rank trains; rank 0 writes."""
    path, steps = Path(argv[0]), int(argv[1])
    dist = runtime.dist_from_env()
    runtime.init_distributed(dist, torch.device("cpu"))
    import torch.distributed as tdist

    lock = None
    if dist.is_main:
        ws = Workspace.create(path, "rnn-lm", {})
        lock = ws.lock().acquire()
    tdist.barrier()
    if not dist.is_main:
        ws = Workspace.open(path).view()  # as training/run.py hands it out: the trainer writes through ws
    trainer = make_trainer(ws, steps=steps, dropout=0.0, batch_size=8, dist=dist)
    try:
        trainer.fit()
    finally:
        if lock is not None:
            lock.release()
        runtime.shutdown_distributed(wait=bool(trainer.stopped_by))


if __name__ == "__main__":
    main(sys.argv[1:])
