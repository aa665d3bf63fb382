"""`seqtool train-rnn`, and the plumbing every train-* command shares: options → config → workspace
(created, or reopened to resume) under its lock → the Trainer → the summary line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from seqtool.cli.options import ConfigFile, Device, Seed, Sets, Workspace, global_options, pick, reporter

Opt = typer.Option

# -- options shared by the train-* commands (named options are sugar for --set section.key=...) -----
TrainFiles = Annotated[Optional[list[str]], typer.Argument(
    help="Training text: files, globs, .gz, or - for stdin (else data.train from --config).",
    show_default=False)]
Valid = Annotated[Optional[list[str]], Opt("--valid", help="Validation text (repeatable); else a held-out "
                                           "fraction of the training lines.", show_default=False)]
ValidFraction = Annotated[Optional[float], Opt(help="Share of training lines held out for validation.")]
TokenizerDir = Annotated[Optional[str], Opt("--tokenizer", "-t", help="Use this tokenizer directory "
                                            "(build-vocab -o) instead of building one.", show_default=False)]
Kind = Annotated[Optional[str], Opt(help="Tokenizer to build: char | word | bpe | unigram.")]
VocabSize = Annotated[Optional[int], Opt(help="Tokenizer vocabulary size (a cap for char/word).")]
MinCount = Annotated[Optional[int], Opt(help="char/word: keep pieces seen at least this often.")]
Lowercase = Annotated[Optional[bool], Opt("--lowercase/--no-lowercase", help="Lower-case the text first.",
                                          show_default=False)]
BatchSize = Annotated[Optional[int], Opt(help="Sequences per batch.")]
Lr = Annotated[Optional[float], Opt(help="Learning rate.")]
Optimizer = Annotated[Optional[str], Opt(help="sgd | adam | adamw.")]
Schedule = Annotated[Optional[str], Opt(help="constant | step | plateau | cosine | inverse-sqrt.")]
Warmup = Annotated[Optional[int], Opt("--warmup-steps", "--warmup",
                                      help="Linear learning-rate warmup steps.")]
Clip = Annotated[Optional[float], Opt(help="Gradient-norm clipping threshold (0: off).")]
MaxSteps = Annotated[Optional[int], Opt(help="Stop after this many optimizer steps.")]
Epochs = Annotated[Optional[float], Opt(help="Stop after this many passes over the data.")]
TimeBudget = Annotated[Optional[str], Opt(help="Stop after this much training time, e.g. 90s, 10m, 1h30m.")]
EvalEvery = Annotated[Optional[int], Opt(help="Validate every N steps (and at the end).")]
Patience = Annotated[Optional[int], Opt(help="Early stopping: validations without improvement (0: off).")]
MaxBadSteps = Annotated[Optional[int], Opt(help="Stop with exit 1 after this many non-finite (NaN/inf) steps "
                                           "in a row; each one is skipped.")]
Precision = Annotated[Optional[str], Opt(help="auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA, else fp32).")]
Compile = Annotated[Optional[bool], Opt("--compile/--no-compile", help="torch.compile the model.",
                                        show_default=False)]
Resume = Annotated[str, Opt(help="auto: continue the workspace's run from its last checkpoint (a finished "
                            "run does nothing) | never: start afresh, removing an earlier run's results.")]


def common_options(ctx: typer.Context, **named: Any) -> dict[str, Any]:
    """The dotted config keys of the options every train-* command has (None: not given)."""
    g = global_options(ctx)
    seed, device = named.pop("seed", None), named.pop("device", None)
    keys = {"valid": "data.valid", "valid_fraction": "data.valid_fraction", "tokenizer": "tokenizer.path",
            "kind": "tokenizer.kind", "vocab_size": "tokenizer.vocab_size",
            "min_count": "tokenizer.min_count", "lowercase": "tokenizer.lowercase",
            "batch_size": "run.batch_size", "lr": "optim.lr",
            "optimizer": "optim.optimizer", "schedule": "optim.schedule", "warmup": "optim.warmup_steps",
            "clip": "optim.clip", "max_steps": "run.max_steps", "epochs": "run.epochs",
            "time_budget": "run.time_budget", "eval_every": "run.eval_every", "patience": "run.patience",
            "precision": "run.precision", "compile": "run.compile", "max_bad_steps": "run.max_bad_steps"}
    options = {keys[name]: value for name, value in named.items()}
    options["run.seed"] = pick(seed, ctx, "seed")
    # the global --device defaults to "auto", which must not override a config file's choice
    options["run.device"] = device or (g.device if g.device != "auto" else None)
    return options


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
    from seqtool.workspace import WorkspaceLock

    report = reporter(ctx)
    dist = runtime.dist_from_env()
    report.rank = dist.rank
    with final_summary(report, workspace) as outcome:
        path = require_workspace(workspace, ctx)
        outcome.workspace = str(path)
        check_choice("--resume", resume, ("auto", "never"))
        saved = _saved_config(path, job.kind) if resume == "auto" else None
        cfg = resolve(job.config_cls, config_file, options, sets, base=saved)
        device = runtime.pick_device(cfg.run.device)
        runtime.init_distributed(dist, device)
        runtime.configure_cuda()
        lock = WorkspaceLock(path / ".lock")
        try:
            if dist.is_main:
                _make_dir(path)
                lock.acquire()
                for warning in lock.warnings:
                    report.warn(warning)
            if saved is not None and to_dict(cfg) == saved and (done := _finished_status(path)) is not None:
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
            runtime.shutdown_distributed()


def _make_dir(path: Path) -> None:
    from seqtool.errors import InputError

    if path.exists() and not path.is_dir():
        raise InputError(f"workspace {path} exists and is not a directory", hint="choose another -w")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create workspace {path}: {err.strerror}", hint="check -w") from None


def _finished_status(path: Path) -> dict[str, Any] | None:
    """The workspace's status when its run has finished, else None."""
    from seqtool.workspace import Workspace as WS

    status = WS.open(path).status
    return status if status.get("state") == "finished" else None


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
    files: TrainFiles = None,
    workspace: Workspace = None,
    config: ConfigFile = None,
    cell: Annotated[Optional[str], Opt(help="rnn (tanh) | gru | lstm | ugrnn (update-gate RNN).")] = None,
    n_layers: Annotated[Optional[int], Opt("--n-layers", "--layers", help="Stacked recurrent layers.")] \
        = None,
    hidden: Annotated[Optional[int], Opt(help="Hidden units per layer.")] = None,
    embedding: Annotated[Optional[int], Opt(help="Embedding size (0: the hidden size, so it can be tied).")]
    = None,
    dropout: Annotated[Optional[float], Opt(help="Dropout on embeddings, between layers and on outputs.")]
    = None,
    residual: Annotated[Optional[bool], Opt("--residual/--no-residual", help="Residual connections "
                                            "between stacked layers.", show_default=False)] = None,
    tie: Annotated[Optional[bool], Opt("--tie/--no-tie", help="Share input and output embeddings (when "
                                       "embedding == hidden).", show_default=False)] = None,
    objective: Annotated[Optional[str], Opt(help="bptt: truncated BPTT over B parallel streams | window: "
                                            "the --window tokens before each token predict it.")] = None,
    bptt: Annotated[Optional[int], Opt(help="Tokens per truncated-BPTT segment.")] = None,
    window: Annotated[Optional[int], Opt(help="Tokens per example of the window objective.")] = None,
    valid: Valid = None,
    valid_fraction: ValidFraction = None,
    tokenizer: TokenizerDir = None,
    kind: Kind = None,
    vocab_size: VocabSize = None,
    min_count: MinCount = None,
    lowercase: Lowercase = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    optimizer: Optimizer = None,
    schedule: Schedule = None,
    warmup: Warmup = None,
    clip: Clip = None,
    max_steps: MaxSteps = None,
    epochs: Epochs = None,
    time_budget: TimeBudget = None,
    eval_every: EvalEvery = None,
    patience: Patience = None,
    max_bad_steps: MaxBadSteps = None,
    seed: Seed = None,
    device: Device = None,
    precision: Precision = None,
    compile: Compile = None,
    resume: Resume = "auto",
    sets: Sets = None,
) -> None:
    """Train a recurrent language model (RNN, GRU, LSTM or UGRNN) on text; the best weights on
    validation are published to the workspace, with a sample in WS/samples/.

    Example: seqtool train-rnn recipes_data/recipes.txt -w runs/char --hidden 256 --time-budget 10m
    """
    from seqtool.training import lm

    options = common_options(
        ctx, valid=valid, valid_fraction=valid_fraction, tokenizer=tokenizer, kind=kind,
        vocab_size=vocab_size, min_count=min_count, lowercase=lowercase, batch_size=batch_size, lr=lr,
        optimizer=optimizer, schedule=schedule, warmup=warmup, clip=clip, max_steps=max_steps, epochs=epochs,
        time_budget=time_budget, eval_every=eval_every, patience=patience, seed=seed, device=device,
        precision=precision, compile=compile, max_bad_steps=max_bad_steps)
    options.update({"data.train": files or None, "model.cell": cell, "model.n_layers": n_layers,
                    "model.hidden": hidden, "model.embedding": embedding, "model.dropout": dropout,
                    "model.residual": residual, "model.tie": tie, "data.objective": objective,
                    "data.bptt": bptt, "data.window": window})
    job = TrainJob("rnn-lm", lm.TrainRNNConfig, lambda cfg: lm.fingerprints(cfg.data), lm.build_rnn_lm)
    run_training(ctx, job, workspace, config, options, sets, resume)
