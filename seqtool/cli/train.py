"""`seqtool train-rnn`, and what every training command shares: options → config → training.run →
the summary line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from seqtool.cli import classify as c
from seqtool.cli import forecast as f
from seqtool.cli import options as o
from seqtool.cli.options import Key, config_options, reporter

Opt = typer.Option
CELLS = ("rnn", "rnn-relu", "gru", "lstm", "ugrnn")  # models.rnn_lm.CELLS (no torch for --help)
OBJECTIVES = ("bptt", "window")  # training.lm.OBJECTIVES


def run_command(ctx: typer.Context, job: Any, workspace: Path | None, config_file: Path | None,
                options: dict[str, Any], sets: list[str] | None, resume: str,
                finished: Callable[[Any, dict[str, Any]], None] | None = None) -> None:
    """Run `job` (a training.run.Job) into the workspace with its summary as the last line on every
    exit path; `finished(report, summary)` may add a line after a finished run."""
    from seqtool.cli.console import final_summary
    from seqtool.cli.options import require_workspace
    from seqtool.training.run import Settings, run

    report = reporter(ctx)
    with final_summary(report, workspace) as outcome:
        path = require_workspace(workspace, ctx)
        outcome.workspace = str(path)
        summary = run(job, path, Settings(config_file, options, sets), resume, report.event,
                      on_rank=lambda rank: setattr(report, "rank", rank),
                      on_summary=lambda summary: setattr(outcome, "summary", summary))
        if finished is not None and summary.get("status") == "finished":
            finished(report, summary)


# ---------------------------------------------------------------------------------------------
# train-rnn


def train_rnn(
    ctx: typer.Context,
    files: o.TrainFiles = None,
    workspace: o.Workspace = None,
    config: o.ConfigFile = None,
    cell: Annotated[Optional[Literal[CELLS]], Opt(help="Recurrent cell (rnn: Elman, tanh; rnn-relu: Elman, "
                                                  "ReLU; ugrnn: update-gate RNN)."),
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
    window: Annotated[Optional[int], Opt(help="Tokens per example of the window objective (--task "
                                         "forecast: values read before each value predicted)."),
                      Key("data.window")] = None,
    valid: o.Valid = None,
    valid_fraction: o.ValidFraction = None,
    valid_tokens: o.ValidTokens = None,
    mix: o.Mix = None,
    data_store: o.DataStore = None,
    tokenizer: o.TokenizerDir = None,
    kind: o.Kind = None,
    vocab_size: o.VocabSize = None,
    min_count: o.MinCount = None,
    lowercase: o.Lowercase = None,
    tokenizer_sample: o.TokenizerSample = None,
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
    tensorboard: o.TensorBoard = None,
    resume: o.Resume = "auto",
    sets: o.Sets = None,
    task: c.Task = "lm",
    pooling: c.Pooling = None,
    label_column: c.LabelColumn = None,
    text_key: c.TextKey = None,
    label_key: c.LabelKey = None,
    column: f.Column = None,
) -> None:
    """Train a recurrent language model (RNN, GRU, LSTM or UGRNN) on text; the best weights on
    validation are published to the workspace, with a sample in WS/samples/. With --task classify: a
    many-to-one classifier on labelled text (best weights by validation macro-F1). With --task forecast:
    --window values of a numeric CSV --column → the next value, MSE, scored against the naive forecast.

    Example: seqtool train-rnn recipes_data/recipes.txt -w runs/char --hidden 256 --time-budget 10m
    """
    options = config_options(ctx, train_rnn, locals())
    options = c.classify_options(task, options, pooling=pooling, label_column=label_column, text_key=text_key,
                                 label_key=label_key)
    from seqtool.data.io import data_fingerprints
    from seqtool.training import lm
    from seqtool.training.run import Job

    job = Job("rnn-lm", lm.TrainRNNConfig, lambda cfg, known: data_fingerprints(cfg.data, known=known),
              lm.build_rnn_lm)
    if task == "classify":
        from seqtool.training.classify import jobs

        job = jobs()["rnn"]
    if task == "forecast":  # a numeric CSV column → its next value, MSE (workspace kind rnn-forecast)
        job = f.forecast_job()
    options = f.forecast_options(task, train_rnn, options, column)
    run_command(ctx, job, workspace, config, options, sets, resume)
