"""The one training loop every model shares: lr, forward, backward, clip, step; every so often
evaluate, publish the best weights, checkpoint and report. Resumable bit-for-bit on CPU.

A command hands the trainer a `TrainTask`: the model (called as `model(batch)` → `(logits, loss)`,
or with `state=` → `(logits, loss, state)` when it carries recurrent state across batches, as
truncated BPTT does), a deterministic batch source, and an `evaluate` function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from seqtool.config import OptimConfig, RunConfig, parse_duration
from seqtool.errors import EXIT_INTERRUPTED, RuntimeFailure, SeqtoolError, TemporaryFailure
from seqtool.training import runtime
from seqtool.training.schedules import lr_at
from seqtool.workspace import Workspace


class BatchSource(Protocol):
    """Deterministic batches: the same (epoch, start) always yields the same batches, so a resumed run
    continues from the exact data position. Batches are dicts of tensors plus `ntokens`."""

    steps_per_epoch: int

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]: ...


@dataclass
class TrainTask:
    model: nn.Module
    data: BatchSource
    evaluate: Callable[[nn.Module], dict[str, float]]  # validation metrics; must include "loss"
    arch: dict[str, Any]  # written to model.json beside the published weights
    metric: str = "loss"  # the validation metric that picks the published weights
    mode: str = "min"  # "min" for loss/perplexity, "max" for BLEU/accuracy
    carries_state: bool = False  # truncated BPTT: hidden state flows from one batch to the next
    adapter: str = ""  # LoRA (finetune): checkpoints hold and publishing writes only adapters/NAME
    trainable: Callable[[nn.Module], list[nn.Parameter]] | None = None  # default: all requiring grad


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    index: int = 0  # micro-batches consumed in this epoch
    elapsed: float = 0.0  # seconds of training over all runs
    best_value: float | None = None
    best_step: int = 0
    evals_since_best: int = 0
    plateau_factor: float = 1.0
    bad_steps: int = 0  # non-finite steps skipped, in a row
    bad_steps_total: int = 0
    tokens: int = 0
    finished: str = ""  # why the run ended ("max_steps", "time_budget", ...); "" while running


def _move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def _detach(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(_detach(s) for s in state)
    return state


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


class Trainer:
    """Runs one training job into a workspace. `on_event` receives every progress/validation event."""

    def __init__(self, ws: Workspace, task: TrainTask, optim: OptimConfig, run: RunConfig,
                 on_event: Callable[[dict[str, Any]], None], device: torch.device,
                 dist: runtime.Dist | None = None):
        self.ws, self.task, self.optim_cfg, self.run_cfg = ws, task, optim, run
        self.on_event = on_event
        self.device = device
        self.dist = dist or runtime.Dist()
        self.model = task.model.to(device)
        self.amp_dtype = runtime.resolve_precision(run.precision, device)
        params = task.trainable(self.model) if task.trainable else [
            p for p in self.model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = _make_optimizer(params, optim)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.forward_model: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if run.compile:
            self.forward_model = torch.compile(self.forward_model)  # type: ignore[assignment]
        self.state = TrainState()
        self.carry: Any = None
        self.time_budget = parse_duration(run.time_budget, "run.time_budget")
        steps_per_epoch = max(1, task.data.steps_per_epoch // max(1, optim.accumulate))
        self.total_steps = run.max_steps or (int(math.ceil(run.epochs * steps_per_epoch)) if run.epochs else None)

    # -- events ---------------------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        event = {**event, "elapsed": round(self.state.elapsed, 3)}
        if event.get("event") in ("train", "valid", "checkpoint", "publish", "summary", "skip", "stop"):
            self.ws.append_metrics({k: v for k, v in event.items() if k != "message" or v})
        self.on_event(event)

    # -- resume ---------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the newest good checkpoint; False when there is none (a fresh start)."""
        warnings: list[str] = []
        ckpt = self.ws.latest_checkpoint(warnings)
        for w in warnings:
            self.on_event({"event": "warning", "message": w})
        if ckpt is None:
            return False
        model_state, trainer_state, _meta = self.ws.load_checkpoint(ckpt)
        self.model.load_state_dict(model_state, strict=False)
        self.optimizer.load_state_dict(trainer_state["optimizer"])
        if self.scaler is not None and "scaler" in trainer_state:
            self.scaler.load_state_dict(trainer_state["scaler"])
        self.state = TrainState(**trainer_state["train_state"])
        self.carry = _to_device(trainer_state.get("carry"), self.device)
        runtime.set_rng_state(trainer_state["rng"])
        self.on_event({"event": "info", "message": f"resumed from {ckpt.name} (step {self.state.step})"})
        return True

    def checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        trainer_state = {
            "optimizer": self.optimizer.state_dict(),
            "train_state": vars(self.state).copy(),
            "rng": runtime.rng_state(),
            "carry": _to_cpu(self.carry),
        }
        if self.scaler is not None:
            trainer_state["scaler"] = self.scaler.state_dict()
        path = self.ws.save_checkpoint(self.state.step, self._model_state(), trainer_state,
                                       {"best_value": self.state.best_value, "metric": self.task.metric},
                                       keep=self.run_cfg.keep_checkpoints)
        self.ws.update_status(step=self.state.step, last_checkpoint=path.name)
        self.emit({"event": "checkpoint", "step": self.state.step, "path": path.name})

    # -- evaluation -------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad(), runtime.autocast(self.device, self.amp_dtype):
            metrics = self.task.evaluate(self.model)
        self.model.train()
        value = metrics.get(self.task.metric)
        improved = value is not None and (
            self.state.best_value is None
            or (value < self.state.best_value if self.task.mode == "min" else value > self.state.best_value))
        if improved:
            self.state.best_value, self.state.best_step = float(value), self.state.step
            self.state.evals_since_best = 0
            self.publish()
        else:
            self.state.evals_since_best += 1
            if self.optim_cfg.schedule == "plateau" and self.state.evals_since_best >= self.optim_cfg.plateau_patience:
                self.state.plateau_factor *= self.optim_cfg.gamma
                self.state.evals_since_best = 0
        self.emit({"event": "valid", "step": self.state.step, **metrics, "best": improved})
        return metrics

    def _model_state(self) -> dict[str, Any]:
        """What checkpoints and publishing save: the whole model, or only its LoRA adapter weights."""
        if self.task.adapter:
            from seqtool.models.lora import adapter_state_dict

            return adapter_state_dict(self.model)
        return self.model.state_dict()

    def publish(self) -> None:
        if not self.dist.is_main:
            return
        note = {"step": self.state.step, "metric": self.task.metric, "value": self.state.best_value}
        if self.task.adapter:  # the base weights stay as they are; arch is the adapter's config
            self.ws.publish_adapter(self.task.adapter, self._model_state(), self.task.arch, note)
        else:
            self.ws.publish(self.model.state_dict(), self.task.arch, note)
        self.ws.update_status(best_metric=self.task.metric, best_value=self.state.best_value,
                              best_step=self.state.step)

    # -- the loop ---------------------------------------------------------------------------------
    def _stop_reason(self) -> str:
        s, run = self.state, self.run_cfg
        if run.max_steps and s.step >= run.max_steps:
            return "max_steps"
        if self.total_steps and not run.max_steps and s.step >= self.total_steps:
            return "epochs"
        if self.time_budget is not None and s.elapsed >= self.time_budget:
            return "time_budget"
        if run.patience and s.evals_since_best >= run.patience and s.best_value is not None:
            return "early_stopping"
        return ""

    def _lr(self) -> float:
        o = self.optim_cfg
        lr = lr_at(self.state.step + 1, o.lr, o.schedule, o.warmup_steps, self.total_steps, o.step_size,
                   o.gamma, o.min_lr)
        return max(lr * self.state.plateau_factor, o.min_lr if o.schedule == "plateau" else 0.0)

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train until a stop condition; returns the summary (also written as the last event)."""
        runtime.seed_everything(self.run_cfg.seed + self.dist.rank)
        if resume:
            self.resume()
        if self.state.finished and self._stop_reason():
            summary = self._summary("already-finished")
            self.emit({"event": "summary", **summary, "message": "nothing to do: the run has finished"})
            return summary
        self.state.finished = ""
        flags = runtime.StopFlags().install()
        self.model.train()
        try:
            reason = self._loop(flags)
        finally:
            flags.restore()
        return self._finish(reason)

    def _loop(self, flags: runtime.StopFlags) -> str:
        s, run, accum = self.state, self.run_cfg, max(1, self.optim_cfg.accumulate)
        log_loss, log_tokens, log_steps, log_start = 0.0, 0, 0, time.time()
        segment_start, elapsed_at_start = time.time(), s.elapsed
        while True:
            batches = self.task.data.batches(s.epoch, s.index)
            exhausted = True
            while True:
                if reason := self._stop_reason():
                    return reason
                group = []
                for batch in batches:
                    group.append(batch)
                    if len(group) == accum:
                        break
                if len(group) < accum:
                    break  # end of epoch (a partial accumulation group is dropped)
                exhausted = False
                lr = self._lr()
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                loss_value, ntokens, ok = self._step(group, accum)
                s.index += accum
                s.elapsed = elapsed_at_start + (time.time() - segment_start)
                if not ok:
                    s.bad_steps += 1
                    s.bad_steps_total += 1
                    self.emit({"event": "skip", "step": s.step, "message": "non-finite loss or gradient; "
                               f"step skipped ({s.bad_steps} in a row)"})
                    if s.bad_steps >= run.max_bad_steps:
                        last = self.ws.latest_checkpoint()
                        raise RuntimeFailure(
                            f"training diverged: {s.bad_steps} non-finite steps in a row at step {s.step}",
                            hint=f"last good checkpoint: {last.name if last else 'none'}; lower optim.lr "
                                 "or raise optim.clip's strength (smaller clip)")
                    continue
                s.bad_steps = 0
                s.step += 1
                s.tokens += ntokens
                log_loss += loss_value
                log_tokens += ntokens
                log_steps += 1
                if s.step % run.log_every == 0 or s.step == 1:
                    now = time.time()
                    avg = log_loss / log_steps
                    event = {"event": "train", "step": s.step, "epoch": s.epoch, "loss": avg,
                             "ppl": math.exp(min(avg, 50.0)), "lr": lr,
                             "tokens_per_s": log_tokens * self.dist.world_size / max(now - log_start, 1e-9)}
                    if self.total_steps:
                        event["total_steps"] = self.total_steps
                        rate = (now - segment_start) / max(1, s.step - 0)
                        event["eta_s"] = rate * (self.total_steps - s.step)
                    if self.time_budget is not None:
                        remaining = self.time_budget - s.elapsed
                        event["eta_s"] = min(event.get("eta_s", remaining), remaining)
                    self.emit(event)
                    log_loss, log_tokens, log_steps, log_start = 0.0, 0, 0, now
                if s.step % run.eval_every == 0:
                    self.validate()
                if s.step % run.checkpoint_every == 0:
                    self.checkpoint()
                if flags.signal_name:
                    return "signal:" + flags.signal_name
            if exhausted and s.index == 0:
                raise RuntimeFailure("the training data yields no batch",
                                     hint="use more data or a smaller batch size / bptt / window")
            s.epoch += 1
            s.index = 0

    def _step(self, group: list[dict[str, Any]], accum: int) -> tuple[float, int, bool]:
        total_loss, ntokens = 0.0, 0
        for batch in group:
            batch = _move(self._shard(batch), self.device)
            ntokens += int(batch.get("ntokens", 0))
            with runtime.autocast(self.device, self.amp_dtype):
                if self.task.carries_state:
                    _, loss, carry = self.forward_model(batch, state=self.carry)
                    self.carry = _detach(carry)
                else:
                    _, loss = self.forward_model(batch)[:2]
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                self.optimizer.zero_grad(set_to_none=True)
                return loss_value, ntokens, False
            total_loss += loss_value / accum
            scaled = loss / accum
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.optim_cfg.clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.optim_cfg.clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if not torch.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
            return total_loss, ntokens, False
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, ntokens, True

    def _shard(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Under DDP each rank takes its contiguous slice of the global batch (batch-major tensors), so
        N processes see exactly the rows one process would, and DDP's gradient average matches."""
        if not self.dist.enabled:
            return batch
        out = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                rows = value.shape[0]
                per = rows // self.dist.world_size
                lo = self.dist.rank * per
                out[key] = value[lo:lo + per]
            else:
                out[key] = value
        if "ntokens" in out and isinstance(out["ntokens"], int):
            out["ntokens"] = out["ntokens"] // self.dist.world_size
        return out

    def _finish(self, reason: str) -> dict[str, Any]:
        s = self.state
        if reason.startswith("signal:"):
            self.checkpoint()
            name = reason.split(":", 1)[1]
            summary = self._summary("interrupted")
            self.emit({"event": "summary", **summary, "signal": name})
            if name == "SIGINT":
                raise SeqtoolError(f"interrupted by Ctrl-C at step {s.step}; checkpoint written",
                                   hint="continue with --resume auto", exit_code=EXIT_INTERRUPTED)
            raise TemporaryFailure(f"stopped by {name} at step {s.step}; checkpoint written",
                                   hint="continue with --resume auto")
        if s.step == 0:
            raise RuntimeFailure("no training step was run", hint="check --max-steps / --time-budget / data size")
        if reason != "early_stopping" or s.best_step != s.step:
            metrics = self.validate() if s.best_step != s.step else {}
            del metrics
        s.finished = reason
        self.checkpoint()
        if self.dist.is_main:
            self.ws.update_status(state="finished", finished=reason, step=s.step)
            self._plot()
        summary = self._summary("finished")
        self.emit({"event": "summary", **summary})
        return summary

    def _summary(self, status: str) -> dict[str, Any]:
        s = self.state
        return {"status": status, "reason": s.finished, "step": s.step, "epoch": s.epoch,
                "best_metric": self.task.metric, "best_value": s.best_value, "best_step": s.best_step,
                "tokens": s.tokens, "skipped_steps": s.bad_steps_total, "workspace": str(self.ws.path)}

    def _plot(self) -> None:
        try:
            from seqtool.viz import plot_loss

            plot_loss(self.ws.read_metrics(), self.ws.path / "plots" / "loss.png")
        except Exception as err:  # noqa: BLE001 - a missing plot must never fail a finished run
            self.on_event({"event": "warning", "message": f"could not draw plots/loss.png: {err}"})


def _make_optimizer(params: list[nn.Parameter], o: OptimConfig) -> torch.optim.Optimizer:
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
