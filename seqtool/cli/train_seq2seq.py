"""`seqtool train-seq2seq`: an encoder–decoder RNN with attention on parallel text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from seqtool.cli.options import ConfigFile, Device, Seed, Sets, Workspace, pick, reporter, require_workspace

Opt = typer.Option


def train_seq2seq(
    ctx: typer.Context,
    workspace: Workspace = None,
    config: ConfigFile = None,
    src: Annotated[Optional[str], Opt(help="Source-side training file (line-aligned with --tgt).")] = None,
    tgt: Annotated[Optional[str], Opt(help="Target-side training file.")] = None,
    tsv: Annotated[Optional[str], Opt(help="One source<TAB>target file instead of --src/--tgt.")] = None,
    valid_src: Annotated[Optional[str], Opt(help="Validation source (else a held-out part).")] = None,
    valid_tgt: Annotated[Optional[str], Opt(help="Validation target file.")] = None,
    valid_tsv: Annotated[Optional[str], Opt(help="Validation pairs as one TSV file.")] = None,
    tokenizer: Annotated[Optional[str], Opt("--tokenizer", "-t",
                                            help="Reuse a tokenizer directory from build-vocab.")] = None,
    kind: Annotated[Optional[str], Opt(help="Tokenizer to learn: char | word | bpe | unigram.")] = None,
    vocab_size: Annotated[Optional[int], Opt(help="Tokenizer vocabulary size (per side).")] = None,
    joint: Annotated[Optional[bool], Opt("--joint/--separate",
                                         help="One tokenizer for both languages, or one per side.")] = None,
    max_len: Annotated[Optional[int], Opt(help="Skip (and list) pairs longer than this many tokens.")] = None,
    batch_tokens: Annotated[Optional[int], Opt(help="Padded tokens per length-bucketed batch.")] = None,
    encoder_cell: Annotated[Optional[str], Opt(help="lstm | gru.")] = None,
    decoder_cell: Annotated[Optional[str], Opt(help="lstm | gru.")] = None,
    embedding: Annotated[Optional[int], Opt(help="Embedding size.")] = None,
    hidden: Annotated[Optional[int], Opt(help="Hidden size of encoder and decoder.")] = None,
    n_layers: Annotated[Optional[int], Opt(help="RNN layers (encoder and decoder).")] = None,
    bidirectional: Annotated[Optional[bool], Opt("--bidirectional/--unidirectional",
                                                 help="Bidirectional encoder.")] = None,
    reverse_source: Annotated[Optional[bool], Opt("--reverse-source/--forward-source",
                                                  help="Read the source backwards.")] = None,
    attention: Annotated[Optional[str], Opt(
        help="none (thought vector) | additive (Bahdanau) | dot | general (Luong) | scaled-dot | cosine | "
             "location (Luong).")] = None,
    dropout: Annotated[Optional[float], Opt(help="Dropout.")] = None,
    teacher_forcing: Annotated[Optional[float], Opt(
        help="Probability of feeding the gold previous token (1: always).")] = None,
    teacher_forcing_decay: Annotated[Optional[str], Opt(
        help="none | linear | exponential | inverse-sigmoid, over teacher_forcing.steps batches.")
    ] = None,
    label_smoothing: Annotated[Optional[float], Opt(help="Label smoothing ε.")] = None,
    lr: Annotated[Optional[float], Opt(help="Learning rate.")] = None,
    clip: Annotated[Optional[float], Opt(help="Gradient-norm clipping (0: off).")] = None,
    max_steps: Annotated[Optional[int], Opt(help="Stop after this many steps.")] = None,
    epochs: Annotated[Optional[float], Opt(help="Stop after this many epochs.")] = None,
    time_budget: Annotated[Optional[str], Opt(help="Stop after this long, e.g. 10m.")] = None,
    eval_every: Annotated[Optional[int], Opt(help="Validate (loss and BLEU) every N steps.")] = None,
    checkpoint_every: Annotated[Optional[int], Opt(help="Checkpoint every N steps.")] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue from the workspace's newest checkpoint.")] = False,
    seed: Seed = None,
    device: Device = None,
    sets: Sets = None,
) -> None:
    """Train an encoder-decoder RNN with attention; the best weights by validation BLEU are published.

    Example: seqtool train-seq2seq -w runs/enfr --src train.en --tgt train.fr --time-budget 10m
    """
    from seqtool.config import resolve
    from seqtool.training import runtime
    from seqtool.training.seq2seq import Seq2SeqTrainConfig, build_task, config_dict, data_fingerprints
    from seqtool.training.trainer import Trainer
    from seqtool.workspace import Workspace as WS
    from seqtool.workspace import locked

    options = {
        "data.src": src, "data.tgt": tgt, "data.tsv": tsv, "data.valid_src": valid_src,
        "data.valid_tgt": valid_tgt, "data.valid_tsv": valid_tsv, "data.max_len": max_len,
        "data.batch_tokens": batch_tokens, "tokenizer.path": tokenizer, "tokenizer.kind": kind,
        "tokenizer.vocab_size": vocab_size, "tokenizer.joint": joint, "model.encoder_cell": encoder_cell,
        "model.decoder_cell": decoder_cell, "model.embedding": embedding, "model.hidden": hidden,
        "model.n_layers": n_layers, "model.bidirectional": bidirectional,
        "model.reverse_source": reverse_source,
        "model.attention": attention, "model.dropout": dropout, "teacher_forcing.start": teacher_forcing,
        "teacher_forcing.decay": teacher_forcing_decay, "optim.label_smoothing": label_smoothing,
        "optim.lr": lr, "optim.clip": clip, "run.max_steps": max_steps, "run.epochs": epochs,
        "run.time_budget": time_budget, "run.eval_every": eval_every,
        "run.checkpoint_every": checkpoint_every,
        "run.seed": pick(seed, ctx, "seed"), "run.device": pick(device, ctx, "device"),
    }
    cfg = resolve(Seq2SeqTrainConfig, config, options, sets)
    if not (cfg.run.max_steps or cfg.run.epochs or cfg.run.time_budget):
        from seqtool.errors import InputError

        raise InputError("the run has no end", hint="pass --max-steps, --epochs or --time-budget")
    path = require_workspace(workspace, ctx)
    report = reporter(ctx)
    dev = runtime.pick_device(cfg.run.device)
    runtime.seed_everything(cfg.run.seed)
    ws = WS.create(path, "seq2seq", config_dict(cfg), data_fingerprints(cfg.data))
    with locked(ws):
        task = build_task(cfg, ws, dev, report.event, resume=resume)
        trainer = Trainer(ws, task, cfg.optim, cfg.run, report.event, dev)
        summary = trainer.fit(resume=resume)
    report.info(f"best {summary['best_metric']} {summary['best_value']:.2f} at step {summary['best_step']}; "
                f"translate with: seqtool translate -w {Path(path)} FILE")
