"""The one training loop every model shares: lr, forward, backward, clip, step; every so often
evaluate, publish the best weights, checkpoint and report. Resumable bit-for-bit on CPU.

A command hands the trainer a `TrainTask`: the model (called as `model(batch)` → `(logits, loss)`,
or with `state=` → `(logits, loss, state)` when it carries recurrent state across batches, as
truncated BPTT does), a deterministic batch source, and an `evaluate` function.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seqtool.config import OptimConfig, RunConfig, parse_duration
from seqtool.errors import EXIT_INTERRUPTED, RuntimeFailure, SeqtoolError, TemporaryFailure
from seqtool.metrics import perplexity
from seqtool.tracking import TensorBoardSink
from seqtool.training import runtime
from seqtool.training.checkpointing import Checkpointing, TrainState
from seqtool.training.distributed import Collectives
from seqtool.training.optim import lr_at, make_optimizer
from seqtool.training.tasks import TrainTask
from seqtool.workspace import Workspace

NOTHING_TO_DO = "nothing to do: the run has finished"  # its final checkpoint says so, and the limits hold


def _detach(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(_detach(s) for s in state)
    return state


class Trainer(Checkpointing, Collectives):
    """Runs one training job into a workspace. `on_event` receives every progress/validation event.
    Its checkpoint half (resume, checkpoint) is in checkpointing.py, its collectives in distributed.py."""

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
        self.optimizer = make_optimizer(params, optim)
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
        self._saved: tuple[int, str] = (-1, "")  # (step, finished) of the newest checkpoint written
        self._ended = False  # rank 0 has written the run's end (status, summary event)
        self.stopped_by = ""  # the signal that stopped the run, if one did
        self.sink = TensorBoardSink(run.tensorboard) if run.tensorboard and not ws.read_only else None
        self.time_budget = parse_duration(run.time_budget, "run.time_budget")
        steps_per_epoch = max(1, task.data.steps_per_epoch // max(1, optim.accumulate))
        epoch_steps = int(math.ceil(run.epochs * steps_per_epoch)) if run.epochs else None
        self.total_steps = run.max_steps or epoch_steps

    # -- events ---------------------------------------------------------------------------------
    def emit(self, event: dict[str, Any], report: bool = True) -> None:
        """Record an event in metrics.jsonl (ranks other than 0 train with a read-only view, which records
        nothing) and hand it to `on_event` (whose reporter knows this process's rank)."""
        event = {**event, "elapsed": round(self.state.elapsed, 3)}
        if event.get("event") in ("train", "valid", "checkpoint", "publish", "summary", "skip", "stop"):
            self.ws.append_metrics({k: v for k, v in event.items() if k != "message" or v})
            if self.sink is not None:
                self.sink.write(event)
        if report:
            self.on_event(event)

    def _note(self, kind: str, message: str) -> None:
        self.on_event({"event": kind, "message": message})

    # -- evaluation -------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad(), runtime.autocast(self.device, self.amp_dtype):
            metrics = self._mean_over_ranks(self.task.evaluate(self.model))
        self.model.train()
        value = metrics.get(self.task.metric)
        improved = value is not None and (
            self.state.best_value is None
            or (value < self.state.best_value if self.task.mode == "min" else value > self.state.best_value))
        if improved:
            self.state.best_value, self.state.best_step = float(value), self.state.step
            self.state.best_scores = {k: float(v) for k, v in metrics.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.state.evals_since_best = self.state.evals_since_decay = 0
            self.publish()
        else:
            self.state.evals_since_best += 1
            self.state.evals_since_decay += 1
            o = self.optim_cfg
            if o.schedule == "plateau" and self.state.evals_since_decay >= o.plateau_patience:
                self.state.plateau_factor *= self.optim_cfg.gamma
                self.state.evals_since_decay = 0
        self.emit({"event": "valid", "step": self.state.step, **metrics, "best": improved})
        return metrics

    def publish(self) -> None:
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
        """Train until a stop condition; returns the summary (also written as the last event).

        A run that stops early raises: TemporaryFailure (SIGTERM/SIGUSR1, exit 75), SeqtoolError with
        exit 130 (Ctrl-C), RuntimeFailure (divergence, exit 1). Each of those is preceded by a checkpoint
        where one makes sense and by a summary line in metrics.jsonl; `summary()` gives it to the CLI.
        """
        runtime.seed_everything(self.run_cfg.seed + self.dist.rank)
        if resume:
            self.resume()
        if self.state.finished and self._stop_reason():
            if self.ws.status.get("state") != "finished":
                # a kill -9 between the final checkpoint and the status write left it at "running"
                self.ws.mark_finished(self.state.finished, self.state.step)
            summary = self.summary("already-finished")
            self.emit({"event": "summary", **summary, "exit_code": 0, "message": NOTHING_TO_DO})
            return summary
        self.state.finished = ""
        self.ws.update_status(state="running", final_step=None)
        flags = runtime.StopFlags().install()
        self.model.train()
        try:
            reason = self._loop(flags)
            return self._finish(reason)
        except BaseException as err:
            self._record_end(err)
            raise
        finally:
            flags.restore()

    def _record_end(self, err: BaseException) -> None:
        """Rank 0 writes how the run ended (status, summary event), once (a view writes nothing)."""
        if self._ended:
            return
        self._ended = True
        status = _status_of(err)
        with contextlib.suppress(Exception):  # the disk may be full: the error matters more
            self.ws.update_status(state=status, step=self.state.step)
            self.emit({"event": "summary", **self.summary(status), "message": str(err)}, report=False)

    def _loop(self, flags: runtime.StopFlags) -> str:
        s, run, accum = self.state, self.run_cfg, max(1, self.optim_cfg.accumulate)
        log_loss, log_tokens, log_steps, log_start = 0.0, 0, 0, time.time()
        log_norm, log_norm_max = 0.0, 0.0  # gradient norms (before clipping) since the last train event
        segment_start, elapsed_at_start, start_step = time.time(), s.elapsed, s.step
        while True:
            batches = self.task.data.batches(s.epoch, s.index)
            if s.index == 0:
                self.carry = None  # a new epoch starts the streams over: no state from their ends
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
                loss_value, ntokens, ok, grad_norm = self._step(group, accum)
                s.index += accum
                # Ranks agree on stopping (a signal may reach one rank only, clocks differ), so that all
                # of them leave the loop after the same step and meet in the same collectives.
                signalled, rank0_elapsed = self._sum_over_ranks(
                    [1.0 if flags.signal_name else 0.0,
                     elapsed_at_start + (time.time() - segment_start) if self.dist.is_main else 0.0])
                s.elapsed = rank0_elapsed
                if ok:
                    s.bad_steps = 0
                    s.step += 1
                    s.tokens += ntokens
                    log_loss += loss_value
                    log_tokens += ntokens
                    log_steps += 1
                    log_norm += grad_norm
                    log_norm_max = max(log_norm_max, grad_norm)
                    if s.step % run.log_every == 0 or s.step == 1:
                        now = time.time()
                        avg = log_loss / log_steps
                        event = {"event": "train", "step": s.step, "epoch": s.epoch, "loss": avg,
                                 **({"ppl": perplexity(avg)} if self.task.nll else {}), "lr": lr,
                                 "grad_norm": log_norm / log_steps, "grad_norm_max": log_norm_max,
                                 "tokens_per_s": log_tokens * self.dist.world_size
                                 / max(now - log_start, 1e-9)}
                        if self.total_steps:
                            event["total_steps"] = self.total_steps
                            rate = (now - segment_start) / max(1, s.step - start_step)
                            event["eta_s"] = rate * (self.total_steps - s.step)
                        if self.time_budget is not None:
                            remaining = self.time_budget - s.elapsed
                            event["eta_s"] = min(event.get("eta_s", remaining), remaining)
                        self.emit(event)
                        log_loss, log_tokens, log_steps, log_start = 0.0, 0, 0, now
                        log_norm, log_norm_max = 0.0, 0.0
                    if s.step % run.eval_every == 0:
                        self.validate()
                    if s.step % run.checkpoint_every == 0:
                        self.checkpoint()
                else:
                    self._skip(loss_value, grad_norm)
                if signalled:
                    return "signal:" + (flags.signal_name or "SIGTERM")
            if exhausted and s.index == 0:
                raise RuntimeFailure("the training data yields no batch",
                                     hint="use more data or a smaller batch size / bptt / window")
            s.epoch += 1
            s.index = 0

    def _skip(self, loss_value: float, grad_norm: float) -> None:
        """Count a non-finite step; too many in a row is divergence (exit 1)."""
        s = self.state
        s.bad_steps += 1
        s.bad_steps_total += 1
        what = "loss" if not math.isfinite(loss_value) else "gradient"
        self.emit({"event": "skip", "step": s.step + 1, "loss": loss_value, "grad_norm": grad_norm,
                   "message": f"non-finite {what}; step skipped ({s.bad_steps} in a row)"})
        if s.bad_steps >= max(1, self.run_cfg.max_bad_steps):
            last = self.ws.latest_checkpoint()
            raise RuntimeFailure(
                f"training diverged: {s.bad_steps} non-finite steps in a row at step {s.step + 1}; "
                f"last good checkpoint: {last if last else 'none'}",
                hint="lower optim.lr or optim.clip, then --resume auto (or start a new workspace)")

    def _step(self, group: list[dict[str, Any]], accum: int) -> tuple[float, int, bool, float]:
        """Forward and backward over the micro-batches, clip, step. Returns (loss, tokens, ok, gradient
        norm): the total L2 norm of the gradients before clipping, the value clip_grad_norm_ returns.
        Under DDP the gradients are already all-reduced when it is taken, so every rank has the global
        norm. Reading it is the one device sync the finiteness check already made.

        ok is False when the loss or the gradient norm is not finite on any rank; the update is then
        skipped and a carried BPTT state rolls back. Every rank runs its backward even after a bad loss,
        so DDP's gradient all-reduce never waits for a rank that bailed out.
        """
        total_loss, ntokens, finite = 0.0, 0, True
        carry_before = self.carry
        for i, batch in enumerate(group):
            batch = runtime.move_batch(self._shard(batch), self.device)
            ntokens += int(batch.get("ntokens", 0))
            weight = float(batch.pop("loss_weight", 1.0))  # this rank's share of the tokens (DDP)
            with self._grad_sync(last=i == len(group) - 1):
                with runtime.autocast(self.device, self.amp_dtype):
                    if self.task.carries_state:
                        _, loss, carry = self.forward_model(batch, state=self.carry)
                        self.carry = _detach(carry)
                    else:
                        _, loss = self.forward_model(batch)[:2]
                loss_value = float(loss.detach()) * weight
                finite = finite and math.isfinite(loss_value)
                total_loss += loss_value / accum
                scaled = loss * (weight / accum)
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.optim_cfg.clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.optim_cfg.clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        grad_norm = float(norm)
        ok = finite and math.isfinite(grad_norm)
        loss_sum, bad = self._sum_over_ranks([total_loss, 0.0 if ok else 1.0])
        total_loss = loss_sum / self.dist.world_size
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
            self.carry = carry_before
            return total_loss, ntokens, False, grad_norm
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, ntokens, True, grad_norm

    def _finish(self, reason: str) -> dict[str, Any]:
        s = self.state
        if reason.startswith("signal:"):
            # Rank 0 writes the checkpoint and the status here, before any rank leaves: the caller's
            # shutdown_distributed(wait=True) holds every rank until rank 0 is done (and has unlocked).
            self.stopped_by = name = reason.split(":", 1)[1]
            self.checkpoint()
            last = self.ws.checkpoint_dir(s.step)
            if name == "SIGINT":
                err: SeqtoolError = SeqtoolError(
                    f"interrupted by Ctrl-C at step {s.step}; checkpoint {last} written",
                    hint="continue with --resume auto", exit_code=EXIT_INTERRUPTED)
            else:
                err = TemporaryFailure(f"stopped by {name} at step {s.step}; checkpoint {last} written",
                                       hint="continue with --resume auto")
            self._record_end(err)
            raise err
        if s.step == 0:
            raise RuntimeFailure("no training step was run",
                                 hint="check --max-steps / --time-budget / data size")
        if s.best_step != s.step and s.step % self.run_cfg.eval_every:
            self.validate()  # the loop validated already when the last step was an eval step
        s.finished = reason
        # from here on a final checkpoint at this step ends the run (finished_status)
        self.ws.update_status(final_step=s.step)
        self.checkpoint()
        self.ws.mark_finished(reason, s.step)
        self._plot()
        self._barrier()
        summary = self.summary("finished")
        self.emit({"event": "summary", **summary, "exit_code": 0})
        return summary

    def summary(self, status: str) -> dict[str, Any]:
        """The run in one dict: status, steps, best metric, workspace (the last line of every run)."""
        s = self.state
        return {"status": status, "reason": s.finished, "steps": s.step, "epoch": s.epoch,
                "best_metric": self.task.metric, "best_value": s.best_value, "best_step": s.best_step,
                "best_scores": s.best_scores,
                "tokens": s.tokens, "skipped_steps": s.bad_steps_total, "workspace": str(self.ws.path)}

    def _plot(self) -> None:
        from seqtool import viz

        grad_norm = functools.partial(viz.plot_grad_norm, clip=self.optim_cfg.clip)
        for name, draw in (("loss.png", viz.plot_loss), ("grad_norm.png", grad_norm)):
            try:  # (a read-only view draws nothing, and reads nothing)
                self.ws.draw_plot(name, lambda path, draw=draw: draw(self.ws.read_metrics(), path))
            except Exception as err:  # noqa: BLE001 - a missing plot must never fail a finished run
                self.on_event({"event": "warning", "message": f"could not draw plots/{name}: {err}"})


def _status_of(err: BaseException) -> str:
    """The summary status of a run that ended with `err`."""
    code = getattr(err, "exit_code", None)
    if isinstance(err, KeyboardInterrupt) or code == EXIT_INTERRUPTED:
        return "interrupted"
    if isinstance(err, TemporaryFailure):
        return "preempted"
    return "failed"
