"""How the Trainer saves and restores itself: beside the model weights, trainer.pt holds the TrainState (the
loop's position and counters), the optimizer, the loss scaler, every rank's random stream and carried BPTT
state. Restoring all of it is what makes a resumed run bit-identical to an uninterrupted one on CPU.
The files themselves are seqtool.checkpoints' (through Workspace.save_checkpoint / load_checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from seqtool.training import runtime
from seqtool.workspace import Workspace

if TYPE_CHECKING:
    from seqtool.config import RunConfig
    from seqtool.training.tasks import TrainTask


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    index: int = 0  # micro-batches consumed in this epoch
    elapsed: float = 0.0  # seconds of training over all runs
    best_value: float | None = None
    best_step: int = 0
    best_scores: dict[str, float] | None = None  # every validation metric at best_step (the summary's)
    evals_since_best: int = 0  # early stopping counts these
    evals_since_decay: int = 0  # schedule=plateau counts these (best or last decay)
    plateau_factor: float = 1.0
    bad_steps: int = 0  # non-finite steps skipped, in a row
    bad_steps_total: int = 0
    tokens: int = 0
    finished: str = ""  # why the run ended ("max_steps", "time_budget", ...); "" while running


class Checkpointing:
    """The Trainer's checkpoint half: resume() from the newest good checkpoint, checkpoint() at a step.
    It uses the Trainer's emit/_note and _gather (distributed.Collectives)."""

    ws: Workspace
    task: TrainTask
    run_cfg: RunConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    state: TrainState
    carry: Any
    device: torch.device
    dist: runtime.Dist
    _saved: tuple[int, str]

    def resume(self) -> bool:
        """Load the newest good checkpoint; False when there is none (a fresh start)."""
        warnings: list[str] = []
        ckpt = self.ws.latest_checkpoint(warnings)
        for w in warnings:
            self._note("warning", w)
        if ckpt is None:
            return False
        model_state, trainer_state, _meta = self.ws.load_checkpoint(ckpt)
        self.model.load_state_dict(model_state, strict=False)
        self.optimizer.load_state_dict(trainer_state["optimizer"])
        if self.scaler is not None and "scaler" in trainer_state:
            self.scaler.load_state_dict(trainer_state["scaler"])
        self.state = TrainState(**trainer_state["train_state"])
        self._saved = (self.state.step, self.state.finished)
        # Each rank continues its own random stream (dropout differs per rank) and its own carried BPTT
        # state (its rows of the batch). A checkpoint written by a different number of processes falls
        # back to rank 0's stream, and the carried state starts from zeros: its rows no longer match.
        world, rank = self.dist.world_size, self.dist.rank
        per_rank = trainer_state.get("rng_ranks") or []
        runtime.set_rng_state(per_rank[rank] if len(per_rank) == world else trainer_state["rng"])
        carries = trainer_state.get("carry_ranks", [trainer_state.get("carry")])
        self.carry = _to_device(carries[rank], self.device) if len(carries) == world else None
        self._note("info", f"resumed from {ckpt.name} (step {self.state.step})")
        return True

    def checkpoint(self) -> None:
        """Write checkpoints/step-N with every rank's RNG and carried state: a DDP collective, so every
        rank comes here; the workspace of rank 0 alone writes (the others hold a read-only view)."""
        if self._saved == (self.state.step, self.state.finished):
            return  # e.g. a signal right after a scheduled checkpoint
        ranks = self._gather((runtime.rng_state(), _to_cpu(self.carry)))
        rng_ranks, carry_ranks = [r[0] for r in ranks], [r[1] for r in ranks]
        rewrite = self._saved[0] == self.state.step  # the same step again, now marked finished
        self._saved = (self.state.step, self.state.finished)
        trainer_state = {
            "optimizer": self.optimizer.state_dict(),
            "train_state": vars(self.state).copy(),
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
            "carry": carry_ranks[0],
            "carry_ranks": carry_ranks,
        }
        if self.scaler is not None:
            trainer_state["scaler"] = self.scaler.state_dict()
        path = self.ws.save_checkpoint(self.state.step, self._model_state(), trainer_state,
                                       {"best_value": self.state.best_value, "metric": self.task.metric,
                                        "finished": self.state.finished},  # Workspace.finished_status
                                       keep=self.run_cfg.keep_checkpoints)
        self.ws.update_status(step=self.state.step, last_checkpoint=path.name)
        if not rewrite:
            self.emit({"event": "checkpoint", "step": self.state.step, "path": path.name})

    def _model_state(self) -> dict[str, Any]:
        """What checkpoints and publishing save: the whole model, or only its LoRA adapter weights."""
        if self.task.adapter:
            from seqtool.models.lora import adapter_state_dict

            return adapter_state_dict(self.model)
        return self.model.state_dict()


def _to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, (tuple, list)):
        return [_to_cpu(s) for s in state]
    return state


def _to_device(state: Any, device: torch.device, like_tuple: bool = True) -> Any:
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, (tuple, list)):
        return tuple(_to_device(s, device) for s in state)
    return state
