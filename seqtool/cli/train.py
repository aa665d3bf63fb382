"""`seqtool train-rnn`, and the plumbing every train-* command shares: options → config → workspace
(created, or reopened to resume) under its lock → the Trainer → the summary line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from seqtool.cli import options as o
from seqtool.cli.options import Key, config_options, reporter

Opt = typer.Option
CELLS = ("rnn", "gru", "lstm", "ugrnn")  # models.rnn_lm.CELLS (here so that --help needs no torch)
OBJECTIVES = ("bptt", "window")  # training.lm.OBJECTIVES


@dataclass
class TrainJob:
    """What a train-* command hands `run_training`."""

    kind: str  # the workspace kind, e.g. rnn-lm
    config_cls: type  # the command's config dataclass (sections data, tokenizer, model, optim, run)
    fingerprints: Callable[[Any], list[dict]]  # config → the data files to record
    build: Callable[..., Any]  # (cfg, ws, resuming, device, is_main, note) → (TrainTask, after | None)
    fixed: tuple[str, ...] = ("data", "tokenizer", "model", "run.batch_size", "run.seed")  # resume must match


def run_training(ctx: typer.Context, job: TrainJob, workspace: Path | None, config_file: Path | None,
                 options: dict[str, Any], sets: list[str] | None, resume: str) -> None:
    """Resolve the config, create or reopen the workspace under its lock, train, and report."""
    from seqtool.cli.console import final_summary
    from seqtool.cli.options import require_workspace
    from seqtool.config import check_choice, resolve, to_dict
    from seqtool.training import runtime
    from seqtool.training.trainer import Trainer
    from seqtool.workspace import WorkspaceLock, lock_workspace

    report = reporter(ctx)
    with final_summary(report, workspace) as outcome:
        dist = runtime.dist_from_env()
        report.rank = dist.rank
        path = require_workspace(workspace, ctx)
        outcome.workspace = str(path)
        check_choice("--resume", resume, ("auto", "never"))
        saved = _saved_config(path, job.kind) if resume == "auto" else None
        cfg = resolve(job.config_cls, config_file, options, sets, base=saved)
        cfg.run.require_end()
        device = runtime.pick_device(cfg.run.device)
        runtime.init_distributed(dist, device)
        runtime.configure_cuda()
        lock = WorkspaceLock(path / ".lock")
        trainer = None
        try:
            if dist.is_main:
                lock = lock_workspace(path, report.warn)
            if saved is not None and to_dict(cfg) == saved and (
                    done := _finished_status(path, settle=dist.is_main)) is not None:
                # The same command again on a finished run (cron, a requeued job): nothing to do, and
                # the training data need not be there any more.
                report.info("nothing to do: the run has finished (change a setting, or --resume never to "
                            "train afresh)")
                outcome.summary = lambda status: {
                    "status": "already-finished", "steps": done.get("step", 0),
                    "best_value": done.get("best_value"), "workspace": str(path)}
                return
            data_files = job.fingerprints(cfg)
            ws, resuming = _open_workspace(path, job, to_dict(cfg), data_files, resume, dist.is_main, report)
            runtime.seed_everything(cfg.run.seed)  # the model's initial weights
            task, after = job.build(cfg, ws, resuming, device, dist.is_main, report.info)
            trainer = Trainer(ws, task, cfg.optim, cfg.run, report.event, device, dist)
            outcome.summary = trainer.summary
            summary = trainer.fit(resume=resuming)
            if after is not None and dist.is_main and summary.get("status") == "finished":
                after(summary)
        finally:
            lock.release()
            runtime.shutdown_distributed(wait=trainer is not None and bool(trainer.stopped_by))


def _finished_status(path: Path, settle: bool) -> dict[str, Any] | None:
    """The workspace's status when its run has finished, else None (settled by the lock holder)."""
    from seqtool.workspace import Workspace as WS

    return WS.open(path).finished_status(settle=settle)


def _saved_config(path: Path, kind: str) -> dict[str, Any] | None:
    """The config of the run in `path` to continue, or None when there is none to resume."""
    from seqtool.workspace import META_FILE
    from seqtool.workspace import Workspace as WS

    if not (path / META_FILE).exists():
        return None
    ws = WS.open(path, kinds=(kind,), purpose=f"training a {kind} model (use a new -w)")
    return ws.config if ws.checkpoint_dirs() else None


def _open_workspace(path: Path, job: TrainJob, cfg: dict[str, Any], data_files: list[dict], resume: str,
                    is_main: bool, report: Any) -> tuple[Any, bool]:
    """(workspace, resuming): the run in `path` reopened (resume auto and a checkpoint exists), or a
    new workspace (an earlier run's results removed first)."""
    from seqtool.config import first_difference
    from seqtool.errors import InputError
    from seqtool.workspace import META_FILE
    from seqtool.workspace import Workspace as WS

    old = WS.open(path, kinds=(job.kind,)) if (path / META_FILE).exists() else None
    if old is not None and resume == "auto" and old.checkpoint_dirs():
        if changed := first_difference(old.config, cfg, job.fixed):
            raise InputError(f"workspace {path} holds a run with {changed}",
                             hint="continue it with the same settings, start afresh with --resume never, "
                                  "or use a new -w")
        recorded = {(f["role"], f["path"]): f.get("sha256") for f in old.meta.get("data", [])}
        for f in data_files:
            if recorded.get((f["role"], f["path"]), f.get("sha256")) != f.get("sha256"):
                report.warn(f"{f['path']} changed since this run began; continuing on the new contents")
        if is_main:
            old.meta["config"] = cfg  # e.g. a raised --max-steps
            old.meta["data"] = data_files
            old.write_meta()
        return old, True
    if not is_main:
        return WS(path, {"kind": job.kind, "config": cfg}), False
    if old is not None and old.clear_run():
        report.info(f"starting afresh in {path}: removed the earlier run's checkpoints and results")
    return WS.create(path, job.kind, cfg, data_files), False


# ---------------------------------------------------------------------------------------------
# train-rnn


def train_rnn(
    ctx: typer.Context,
    files: o.TrainFiles = None,
    workspace: o.Workspace = None,
    config: o.ConfigFile = None,
    cell: Annotated[Optional[Literal[CELLS]], Opt(help="Recurrent cell (rnn: tanh; ugrnn: update-gate RNN)."),
                    Key("model.cell")] = None,
    n_layers: Annotated[Optional[int], Opt("--n-layers", "--layers", help="Stacked recurrent layers."),
                        Key("model.n_layers")] = None,
    hidden: Annotated[Optional[int], Opt(help="Hidden units per layer."), Key("model.hidden")] = None,
    embedding: Annotated[Optional[int], Opt(help="Embedding size (0: the hidden size, so it can be tied)."),
                         Key("model.embedding")] = None,
    dropout: Annotated[Optional[float], Opt(help="Dropout on embeddings, between layers and on outputs."),
                       Key("model.dropout")] = None,
    residual: Annotated[Optional[bool], Opt("--residual/--no-residual", help="Residual connections "
                                            "between stacked layers."), Key("model.residual")] = None,
    tie: Annotated[Optional[bool], Opt("--tie/--no-tie", help="Share input and output embeddings (when "
                                       "embedding == hidden)."), Key("model.tie")] = None,
    objective: Annotated[Optional[Literal[OBJECTIVES]], Opt(help="bptt: truncated BPTT over B parallel "
                                                            "streams | window: the --window tokens before "
                                                            "each token predict it."), Key("data.objective")]
    = None,
    bptt: Annotated[Optional[int], Opt(help="Tokens per truncated-BPTT segment."), Key("data.bptt")] = None,
    window: Annotated[Optional[int], Opt(help="Tokens per example of the window objective."),
                      Key("data.window")] = None,
    valid: o.Valid = None,
    valid_fraction: o.ValidFraction = None,
    tokenizer: o.TokenizerDir = None,
    kind: o.Kind = None,
    vocab_size: o.VocabSize = None,
    min_count: o.MinCount = None,
    lowercase: o.Lowercase = None,
    batch_size: o.BatchSize = None,
    lr: o.Lr = None,
    optimizer: o.Optimizer = None,
    schedule: o.Schedule = None,
    warmup: o.Warmup = None,
    clip: o.Clip = None,
    max_steps: o.MaxSteps = None,
    epochs: o.Epochs = None,
    time_budget: o.TimeBudget = None,
    eval_every: o.EvalEvery = None,
    patience: o.Patience = None,
    max_bad_steps: o.MaxBadSteps = None,
    seed: o.RunSeed = None,
    device: o.RunDevice = None,
    precision: o.Precision = None,
    compile: o.Compile = None,
    resume: o.Resume = "auto",
    sets: o.Sets = None,
) -> None:
    """Train a recurrent language model (RNN, GRU, LSTM or UGRNN) on text; the best weights on
    validation are published to the workspace, with a sample in WS/samples/.

    Example: seqtool train-rnn recipes_data/recipes.txt -w runs/char --hidden 256 --time-budget 10m
    """
    options = config_options(ctx, train_rnn, locals())
    from seqtool.training import lm

    job = TrainJob("rnn-lm", lm.TrainRNNConfig, lambda cfg: lm.fingerprints(cfg.data), lm.build_rnn_lm)
    run_training(ctx, job, workspace, config, options, sets, resume)
