"""`seqtool finetune`: continue training a workspace's model or an imported GPT-2, fully or with LoRA;
`--merge` folds an adapter into a new workspace of plain weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from seqtool.cli import classify as c
from seqtool.cli import options as o
from seqtool.cli.options import Key, config_options, reporter, require_workspace

Opt = typer.Option


def finetune(
    ctx: typer.Context,
    source: Annotated[Optional[str], Opt("--from", help="Source: a seqtool workspace, or hf:DIR (a local "
                                         "Hugging Face GPT-2 directory; nothing is downloaded)."),
                      Key("source")] = None,
    workspace: o.Workspace = None,
    config: o.ConfigFile = None,
    data: Annotated[Optional[list[str]], Opt("--data", help="New training text (language models; "
                                             "repeatable)."), Key("data.train")] = None,
    valid: Annotated[Optional[list[str]], Opt("--valid", help="Validation text (else held out from --data "
                                              "on the first run and kept in WS/data/)."), Key("data.valid")] \
        = None,
    src: Annotated[Optional[str], Opt(help="Translation models: source-side training file."),
                   Key("data.src")] = None,
    tgt: Annotated[Optional[str], Opt(help="Translation models: target-side training file."),
                   Key("data.tgt")] = None,
    tsv: Annotated[Optional[str], Opt(help="Translation models: one source<TAB>target file."),
                   Key("data.tsv")] = None,
    valid_src: Annotated[Optional[str], Opt(help="Translation models: validation source file."),
                         Key("data.valid_src")] = None,
    valid_tgt: Annotated[Optional[str], Opt(help="Translation models: validation target file."),
                         Key("data.valid_tgt")] = None,
    context: Annotated[Optional[int], Opt(help="Tokens per training row (bptt / block size; 0: the source's, "
                                          "else 64)."), Key("data.context")] = None,
    data_store: o.DataStore = None,
    extend_vocab: Annotated[bool, Opt("--extend-vocab", help="Char/word tokenizers: add the symbols the "
                                      "source cannot represent and grow the embeddings."),
                            Key("extend_vocab")] = False,
    freeze: Annotated[Optional[list[str]], Opt("--freeze", help="Keep parameters fixed: embeddings | "
                                               "encoder | layers:0-3 (repeatable)."), Key("freeze")] = None,
    lora_rank: Annotated[Optional[int], Opt(help="Train LoRA adapters of this rank, not the model (any "
                                            "--lora-* option turns LoRA on)."), Key("lora.rank")] = None,
    lora_alpha: Annotated[Optional[float], Opt(help="LoRA scale numerator (update × alpha/rank)."),
                          Key("lora.alpha")] = None,
    lora_dropout: Annotated[Optional[float], Opt(help="Dropout on the LoRA input."), Key("lora.dropout")] \
        = None,
    lora_targets: Annotated[Optional[str], Opt(help="Projections to adapt: q,k,v,o,mlp (Transformer) or "
                                               "q,k,o,out (RNN seq2seq)."), Key("lora.targets")] = None,
    adapter_name: Annotated[Optional[str], Opt(help="Save the adapter as adapters/NAME."),
                            Key("adapter_name")] = None,
    promote_if_better: Annotated[bool, Opt("--promote-if-better", help="Publish only if the validation "
                                           "metric beats the current weights; log the decision."),
                                 Key("promote_if_better")] = False,
    distill_from: Annotated[Optional[str], Opt("--distill-from", help="Knowledge distillation: train on the "
                                               "soft targets of this teacher workspace (any family, same "
                                               "task and tokenizer)."), Key("distill.teacher")] = None,
    distill_temperature: Annotated[Optional[float], Opt(help="Distillation: softmax temperature T of teacher "
                                                        "and student."), Key("distill.temperature")] = None,
    distill_alpha: Annotated[Optional[float], Opt(help="Distillation: loss = A·T²·KL(teacher‖student) + "
                                                  "(1−A)·cross-entropy."), Key("distill.alpha")] = None,
    merge: Annotated[bool, Opt("--merge", help="Merge -w's --adapter into a new workspace -o.")] = False,
    adapter: Annotated[Optional[str], Opt(help="--merge: the adapter to merge (default: default).")] = None,
    output: Annotated[Optional[Path], Opt("--output", "-o", help="--merge: the new workspace.")] = None,
    force: Annotated[bool, Opt("--force", help="Write over a workspace (-w, or --merge's -o) that holds "
                               "another run's model; it is lost.")] = False,
    lr: Annotated[Optional[float], Opt(help="Learning rate (default 1e-4; with LoRA 1e-3).",
                                       show_default=False), Key("optim.lr")] = None,
    batch_size: Annotated[Optional[int], Opt(help="Rows per batch."), Key("run.batch_size")] = None,
    optimizer: o.Optimizer = None,
    schedule: o.Schedule = None,
    warmup: o.Warmup = None,
    clip: o.Clip = None,
    max_steps: o.MaxSteps = None,
    epochs: o.Epochs = None,
    time_budget: o.TimeBudget = None,
    eval_every: o.EvalEvery = None,
    checkpoint_every: o.CheckpointEvery = None,
    patience: o.Patience = None,
    max_bad_steps: o.MaxBadSteps = None,
    resume: Annotated[Literal["auto", "never"], Opt(
        help="auto: continue an interrupted fine-tuning run from its last checkpoint (a finished one starts "
             "a new round when the data or settings changed, else does nothing) | never: start a new "
             "round.")] = "auto",
    seed: o.RunSeed = None,
    device: o.RunDevice = None,
    precision: o.Precision = None,
    compile: o.Compile = None,
    tensorboard: o.TensorBoard = None,
    sets: o.Sets = None,
    task: Annotated[Literal["lm", "classify"], Opt(
        "--task", help="lm: continue the source's own task | classify: a text classifier on labelled --data "
        "(TSV text<TAB>label or .jsonl) with a new head on the source's body; --freeze body trains the head "
        "alone (feature-based), --lora-* adapters in the body.")] = "lm",
    pooling: c.Pooling = None,
    label_column: c.LabelColumn = None,
    text_key: c.TextKey = None,
    label_key: c.LabelKey = None,
) -> None:
    """Fine-tune a trained model on new data, fully or with LoRA adapters.

    The source is any trainable workspace (RNN LM, seq2seq, Transformer decoder, encoder or
    encoder-decoder) or a local GPT-2 directory. The same command again continues an interrupted run;
    after a finished one, new data starts a new round (nightly cron with --promote-if-better).

    Example: seqtool finetune --from hf:gpt2 --data recipes.txt -w runs/ft --lora-rank 8 --max-steps 500

    Distillation: seqtool finetune --from runs/lstm --distill-from runs/gpt --data input.txt -w runs/student
    """
    options = config_options(ctx, finetune, locals())
    options = c.classify_options(task, options, pooling=pooling, label_column=label_column, text_key=text_key,
                                 label_key=label_key)
    from seqtool.cli.train import run_command

    if merge:
        from seqtool.errors import InputError
        from seqtool.merge import merge_adapter

        path = require_workspace(workspace, ctx)
        if output is None:
            raise InputError("--merge needs -o/--output DIR for the merged workspace")
        merge_adapter(path, adapter or "default", output, force)
        reporter(ctx).info(f"merged adapter {adapter or 'default'!r} of {path} into {output}")
        return
    from seqtool.finetune import job

    options["freeze"] = _split(freeze)
    options["lora.targets"] = _split([lora_targets]) if lora_targets else None
    if task == "classify":
        from seqtool.training.classify import jobs

        run_command(ctx, jobs()["finetune"], workspace, config, options, sets, resume)
        return

    def finished(report: Any, summary: dict[str, Any]) -> None:
        use = f"--adapter {summary['adapter']} " if summary.get("adapter") else ""
        best = f"{summary['best_metric']} {summary['best_value']} at step {summary['best_step']}"
        report.info(f"best {best}; use it with: seqtool generate -w {summary['workspace']} {use}"
                    "(or translate, evaluate)")

    run_command(ctx, job(force), workspace, config, options, sets, resume, finished)


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
