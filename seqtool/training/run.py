"""One training run for every job: rank and device, the workspace lock, the resume / nothing-to-do /
new-round decision, seeding, building the task, the Trainer, and the shutdown order after a stop signal.

A job (train-rnn, train-seq2seq, train-transformer, finetune) is data: its workspace kind, config class,
data fingerprints, task builder and the settings a resume must keep. Finetune adds its round rule
(`Rounds`): it decides itself whether a run continues, and sets up its workspace from a source model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqtool.config import check_choice, first_difference, resolve, to_dict
from seqtool.errors import InputError
from seqtool.lock import WorkspaceLock, lock_workspace
from seqtool.tracking import require_tensorboard
from seqtool.training import runtime
from seqtool.training.tasks import TrainTask
from seqtool.training.trainer import NOTHING_TO_DO, Trainer
from seqtool.workspace import Workspace, is_workspace

Report = Callable[[dict[str, Any]], None]
After = Callable[[dict[str, Any]], None]  # rank 0, once a run has finished (a sample, a promotion)
Summary = Callable[[str], dict[str, Any]]


@dataclass
class Prepared:
    """A workspace ready to train in, and the task to train."""

    ws: Workspace
    task: TrainTask
    resuming: bool
    after: After | None = None
    best_value: float | None = None  # what a new round must beat to publish (finetune --promote-if-better)


@dataclass(frozen=True)
class Rounds:
    """The round rule of a job that starts from a source model (finetune). `check` refuses a target
    before anything is locked; `continues` decides whether this run continues the round in the
    workspace (else a new round starts); `prepare` sets up the workspace and builds the task."""

    check: Callable[[Any, Path], None]  # (cfg, path)
    continues: Callable[[Any, Workspace | None, list[dict], str, Report], bool]
    prepare: Callable[..., Prepared]  # (cfg, path, previous, data_files, resuming, device, dist, report)


@dataclass(frozen=True)
class Job:
    """What a training command runs; see the module docstring."""

    kind: str  # the workspace kind, e.g. rnn-lm (a Rounds job takes its source's)
    config_cls: type  # the command's config dataclass (sections data, ..., optim, run)
    # (config, fingerprints recorded earlier) → the data files to record (data.io.data_fingerprints)
    fingerprints: Callable[[Any, list[dict]], list[dict]]
    # (cfg, ws, resuming, device, note) → (task, after); ws is read-only on ranks other than 0 (it writes
    # nothing there); a Rounds job builds in its prepare
    build: Callable[..., tuple[TrainTask, After | None]] | None = None
    fixed: tuple[str, ...] = ("data", "tokenizer", "model", "run.batch_size", "run.seed")  # resume must match
    rounds: Rounds | None = None


@dataclass(frozen=True)
class Settings:
    """Where the config comes from: defaults < file < options < --set (config.resolve)."""

    config_file: Path | None
    options: dict[str, Any] = field(default_factory=dict)
    sets: list[str] | None = None


def run(job: Job, path: Path, settings: Settings, resume: str, report: Report,
        on_rank: Callable[[int], None] = lambda rank: None,
        on_summary: Callable[[Summary], None] = lambda summary: None) -> dict[str, Any]:
    """Resolve the config, lock the workspace, train, and return the summary. `on_rank` learns this
    process's rank before anything is reported; `on_summary` gets what the summary would say if the
    run ended now (the CLI's last line on every exit path). Under torchrun/srun every rank trains its
    slice of each batch and rank 0 alone writes."""
    dist = runtime.dist_from_env()
    on_rank(dist.rank)
    check_choice("--resume", resume, ("auto", "never"))
    saved = _saved_config(path, job.kind) if resume == "auto" and job.rounds is None else None
    cfg = resolve(job.config_cls, settings.config_file, settings.options, settings.sets, base=saved)
    cfg.run.require_end()
    if cfg.run.tensorboard:
        require_tensorboard()
    device = runtime.pick_device(cfg.run.device)
    data_files: list[dict] = []
    if job.rounds is not None:
        job.rounds.check(cfg, path)
        data_files = job.fingerprints(cfg, _known_data(path, cfg))  # for the round rule and seqtool.yaml
    runtime.init_distributed(dist, device)
    runtime.configure_cuda()
    lock = WorkspaceLock.of(path)
    trainer = None
    try:
        if dist.is_main:  # the one writer; the lock comes before the workspace (and its views) exists
            lock = lock_workspace(path, lambda message: report({"event": "warning", "message": message}))
        if job.rounds is None:
            if (done := _finished(path, cfg, saved, dist)) is not None:
                report({"event": "info", "message": f"{NOTHING_TO_DO} (change a setting, or --resume never "
                        "to train afresh)"})
                on_summary(lambda status: {"status": "already-finished", "steps": done.get("step", 0),
                                           "best_value": done.get("best_value"), "workspace": str(path)})
                return {"status": "already-finished"}
            data_files = job.fingerprints(cfg, _known_data(path, cfg))  # a finished run needs no data
        # before the task is built: the model's initial weights, LoRA matrices, grown vocabulary rows
        runtime.seed_everything(cfg.run.seed)
        started = time.time_ns()  # the token store entries this run uses are stamped from now on
        if job.rounds is not None:
            previous = _for_rank(Workspace.open(path), dist) if is_workspace(path) else None
            resuming = job.rounds.continues(cfg, previous, data_files, resume, report)
            prep = job.rounds.prepare(cfg, path, previous, data_files, resuming, device, dist, report)
        else:
            prep = _open_run(job, cfg, path, data_files, resume, device, dist, report)
        if dist.is_main and not prep.ws.read_only:
            _prune_store(prep.ws, started, report)
        trainer = Trainer(prep.ws, prep.task, cfg.optim, cfg.run, report, device, dist)
        on_summary(trainer.summary)
        if prep.best_value is not None and not prep.resuming:
            trainer.state.best_value = prep.best_value
        summary = trainer.fit(resume=prep.resuming)
        if prep.after is not None and not prep.ws.read_only and summary.get("status") == "finished":
            prep.after(summary)
        return summary
    finally:
        lock.release()
        # after a stop signal no rank exits before rank 0 has written and unlocked (runtime explains)
        runtime.shutdown_distributed(wait=trainer is not None and bool(trainer.stopped_by))


def _prune_store(ws: Workspace, since_ns: int, report: Report) -> None:
    """Remove the entries of the workspace's own token store (WS/store) that this run did not use
    (built for its earlier data or tokenizer; data/store_prune.py). Never a --data-store directory."""
    from seqtool.data.store_prune import describe_removed, prune_unused

    if removed := prune_unused(ws.store_dir, since_ns):
        why = "not used by this run (built for other data or another tokenizer)"
        report({"event": "info", "message": describe_removed(removed, why)})


def _known_data(path: Path, cfg: Any) -> list[dict]:
    """The data fingerprints recorded earlier, whose sha256 an unchanged file reuses instead of being
    read again (data.io.file_fingerprint): the workspace's seqtool.yaml, and the manifests of its token
    store (WS/store, and --data-store DIR). So a start or resume costs a stat per data file, not a read."""
    from seqtool.data.store import known_sources

    known: list[dict] = []
    stores = [Path(store)] if (store := getattr(getattr(cfg, "data", None), "store", None)) else []
    if is_workspace(path):
        ws = Workspace.open(path)
        known += ws.meta.get("data") or []
        stores.append(ws.store_dir)
    for root in stores:
        known += known_sources(root)
    return known


def _for_rank(ws: Workspace, dist: runtime.Dist) -> Workspace:
    """The workspace as this rank uses it: rank 0 writes, the others train with a read-only view."""
    return ws if dist.is_main else ws.view()


def new_workspace(path: Path, dist: runtime.Dist) -> Callable[[str, dict, list[dict]], Workspace]:
    """How this rank starts a new workspace of (kind, config, data files) in `path`: rank 0 creates it,
    the others get a read-only view of the metadata it writes."""
    if dist.is_main:
        return lambda kind, config, data_files: Workspace.create(path, kind, config, data_files)
    return lambda kind, config, data_files: Workspace(path, {"kind": kind, "config": config, "status": {}},
                                                      read_only=True)


def _saved_config(path: Path, kind: str) -> dict[str, Any] | None:
    """The config of the run in `path` to continue, or None when there is none to resume."""
    if not is_workspace(path):
        return None
    ws = Workspace.open(path, kinds=(kind,), purpose=f"training a {kind} model (use a new -w)")
    return ws.config if ws.checkpoint_dirs() else None


def _finished(path: Path, cfg: Any, saved: dict[str, Any] | None,
              dist: runtime.Dist) -> dict[str, Any] | None:
    """The status of the finished run in `path` when this is the same command again (cron, a requeued
    job: nothing to do, even when its data are gone), else None. Its final checkpoint decides, as it does
    for the Trainer (which also sees a raised limit); a status a kill -9 left behind is settled here by
    rank 0 (the others hold a view)."""
    if saved is None or to_dict(cfg) != with_defaults(type(cfg), saved):
        return None
    return _for_rank(Workspace.open(path), dist).finished_status(settle=True)


def with_defaults(config_cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """A recorded config as this seqtool reads it: a key added since it was written (e.g. data.mix) has
    its default, so that it does not count as a changed setting when the run is continued."""
    try:
        return to_dict(resolve(config_cls, base=config))
    except InputError:  # a config this seqtool cannot read: compared as it is, key by key
        return config


def _open_run(job: Job, cfg: Any, path: Path, data_files: list[dict], resume: str, device: torch.device,
              dist: runtime.Dist, report: Report) -> Prepared:
    """The run in `path` reopened (resume auto and a checkpoint exists), or a new workspace (an
    earlier run's results removed first); then the job's task."""
    assert job.build is not None
    config = to_dict(cfg)
    old = _for_rank(Workspace.open(path, kinds=(job.kind,)), dist) if is_workspace(path) else None
    resuming = old is not None and resume == "auto" and bool(old.checkpoint_dirs())
    if resuming:
        assert old is not None
        if changed := first_difference(with_defaults(job.config_cls, old.config), config, job.fixed):
            raise InputError(f"workspace {path} holds a run with {changed}",
                             hint="continue it with the same settings, start afresh with --resume never, "
                                  "or use a new -w")
        recorded = {(f["role"], f["path"]): f.get("sha256") for f in old.meta.get("data", [])}
        for f in data_files:
            if recorded.get((f["role"], f["path"]), f.get("sha256")) != f.get("sha256"):
                report({"event": "warning", "message": f"{f['path']} changed since this run began; "
                        "continuing on the new contents"})
        ws = old
        ws.meta["config"] = config  # e.g. a raised --max-steps
        ws.meta["data"] = data_files
        ws.write_meta()
    else:
        if old is not None and old.clear_run():
            report({"event": "info", "message": f"starting afresh in {path}: removed the earlier run's "
                    "checkpoints and results"})
        ws = new_workspace(path, dist)(job.kind, config, data_files)
    note = lambda message: report({"event": "info", "message": message})  # noqa: E731
    task, after = job.build(cfg, ws, resuming, device, note)
    return Prepared(ws, task, resuming, after)
