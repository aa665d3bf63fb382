"""`seqtool train-seq2seq`: an encoder–decoder RNN with attention on parallel text."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from seqtool.cli import train as shared
from seqtool.cli.options import ConfigFile, Device, Seed, Sets, Workspace

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
    valid_fraction: shared.ValidFraction = None,
    tokenizer: Annotated[Optional[str], Opt("--tokenizer", "-t",
                                            help="Reuse a tokenizer directory from build-vocab.")] = None,
    kind: Annotated[Optional[str], Opt(help="Tokenizer to learn: char | word | bpe | unigram.")] = None,
    vocab_size: Annotated[Optional[int], Opt(help="Tokenizer vocabulary size (per side).")] = None,
    min_count: shared.MinCount = None,
    lowercase: shared.Lowercase = None,
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
    lr: shared.Lr = None,
    optimizer: shared.Optimizer = None,
    schedule: shared.Schedule = None,
    warmup: shared.Warmup = None,
    clip: shared.Clip = None,
    max_steps: shared.MaxSteps = None,
    epochs: shared.Epochs = None,
    time_budget: shared.TimeBudget = None,
    eval_every: Annotated[Optional[int], Opt(help="Validate (loss and BLEU) every N steps.")] = None,
    checkpoint_every: Annotated[Optional[int], Opt(help="Checkpoint every N steps.")] = None,
    patience: shared.Patience = None,
    max_bad_steps: shared.MaxBadSteps = None,
    seed: Seed = None,
    device: Device = None,
    precision: shared.Precision = None,
    compile: shared.Compile = None,
    resume: shared.Resume = "auto",
    sets: Sets = None,
) -> None:
    """Train an encoder-decoder RNN with attention; the best weights by validation BLEU are published.

    Example: seqtool train-seq2seq -w runs/enfr --src train.en --tgt train.fr --time-budget 10m
    """
    from seqtool.training import seq2seq

    options = shared.common_options(
        ctx, valid_fraction=valid_fraction, tokenizer=tokenizer, kind=kind, vocab_size=vocab_size,
        min_count=min_count, lowercase=lowercase, lr=lr, optimizer=optimizer, schedule=schedule,
        warmup=warmup, clip=clip, max_steps=max_steps, epochs=epochs, time_budget=time_budget,
        eval_every=eval_every, patience=patience, max_bad_steps=max_bad_steps, seed=seed, device=device,
        precision=precision, compile=compile)
    options.update({
        "data.src": src, "data.tgt": tgt, "data.tsv": tsv, "data.valid_src": valid_src,
        "data.valid_tgt": valid_tgt, "data.valid_tsv": valid_tsv, "data.max_len": max_len,
        "data.batch_tokens": batch_tokens, "tokenizer.joint": joint, "model.encoder_cell": encoder_cell,
        "model.decoder_cell": decoder_cell, "model.embedding": embedding, "model.hidden": hidden,
        "model.n_layers": n_layers, "model.bidirectional": bidirectional,
        "model.reverse_source": reverse_source, "model.attention": attention, "model.dropout": dropout,
        "teacher_forcing.start": teacher_forcing, "teacher_forcing.decay": teacher_forcing_decay,
        "optim.label_smoothing": label_smoothing, "run.checkpoint_every": checkpoint_every})
    # A seq2seq batch is a token budget (data.batch_tokens), so run.batch_size does not bind a resume.
    job = shared.TrainJob("seq2seq", seq2seq.Seq2SeqTrainConfig,
                          lambda cfg: seq2seq.data_fingerprints(cfg.data), seq2seq.build,
                          fixed=("data", "tokenizer", "model", "run.seed"))
    shared.run_training(ctx, job, workspace, config, options, sets, resume)
