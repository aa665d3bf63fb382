"""`seqtool train-seq2seq`: an encoder–decoder RNN with attention on parallel text."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import typer

from seqtool.cli import options as o
from seqtool.cli.options import Key, config_options
from seqtool.cli.train import run_command

Opt = typer.Option
# as in models.seq2seq (here so that --help and completion need no torch)
CELLS = ("lstm", "gru")
ATTENTIONS = ("none", "additive", "dot", "general", "scaled-dot", "cosine", "location")
DECAYS = ("none", "linear", "exponential", "inverse-sigmoid")


def train_seq2seq(
    ctx: typer.Context,
    workspace: o.Workspace = None,
    config: o.ConfigFile = None,
    src: Annotated[Optional[str], Opt(help="Source-side training file (line-aligned with --tgt)."),
                   Key("data.src")] = None,
    tgt: Annotated[Optional[str], Opt(help="Target-side training file."), Key("data.tgt")] = None,
    tsv: Annotated[Optional[str], Opt(help="One source<TAB>target file instead of --src/--tgt."),
                   Key("data.tsv")] = None,
    valid_src: Annotated[Optional[str], Opt(help="Validation source (else a held-out part)."),
                         Key("data.valid_src")] = None,
    valid_tgt: Annotated[Optional[str], Opt(help="Validation target file."), Key("data.valid_tgt")] = None,
    valid_tsv: Annotated[Optional[str], Opt(help="Validation pairs as one TSV file."),
                         Key("data.valid_tsv")] = None,
    valid_fraction: o.ValidFraction = None,
    data_store: o.DataStore = None,
    tokenizer: o.TokenizerDir = None,
    kind: o.Kind = None,
    vocab_size: Annotated[Optional[int], Opt(help="Tokenizer vocabulary size (per side)."),
                          Key("tokenizer.vocab_size")] = None,
    min_count: o.MinCount = None,
    lowercase: o.Lowercase = None,
    joint: Annotated[Optional[bool], Opt("--joint/--separate", help="One tokenizer for both languages, or "
                                         "one per side."), Key("tokenizer.joint")] = None,
    max_len: Annotated[Optional[int], Opt(help="Skip (and list) pairs longer than this many tokens."),
                       Key("data.max_len")] = None,
    batch_tokens: Annotated[Optional[int], Opt(help="Padded tokens per length-bucketed batch."),
                            Key("data.batch_tokens")] = None,
    encoder_cell: Annotated[Optional[Literal[CELLS]], Opt(help="Encoder RNN cell."),
                            Key("model.encoder_cell")] = None,
    decoder_cell: Annotated[Optional[Literal[CELLS]], Opt(help="Decoder RNN cell."),
                            Key("model.decoder_cell")] = None,
    embedding: Annotated[Optional[int], Opt(help="Embedding size."), Key("model.embedding")] = None,
    hidden: Annotated[Optional[int], Opt(help="Hidden size of encoder and decoder."), Key("model.hidden")] \
        = None,
    n_layers: Annotated[Optional[int], Opt(help="RNN layers (encoder and decoder)."), Key("model.n_layers")] \
        = None,
    bidirectional: Annotated[Optional[bool], Opt("--bidirectional/--unidirectional",
                                                 help="Bidirectional encoder."), Key("model.bidirectional")] \
        = None,
    reverse_source: Annotated[Optional[bool], Opt("--reverse-source/--forward-source",
                                                  help="Read the source backwards."),
                              Key("model.reverse_source")] = None,
    attention: Annotated[Optional[Literal[ATTENTIONS]], Opt(
        help="none (thought vector) | additive (Bahdanau) | dot | general (Luong) | scaled-dot | cosine | "
             "location (Luong)."), Key("model.attention")] = None,
    dropout: Annotated[Optional[float], Opt(help="Dropout."), Key("model.dropout")] = None,
    teacher_forcing: Annotated[Optional[float], Opt(
        help="Probability of feeding the gold previous token (1: always)."), Key("teacher_forcing.start")] \
        = None,
    teacher_forcing_decay: Annotated[Optional[Literal[DECAYS]], Opt(
        help="How teacher forcing decays over teacher_forcing.steps batches."),
        Key("teacher_forcing.decay")] = None,
    label_smoothing: o.LabelSmoothing = None,
    lr: o.Lr = None,
    optimizer: o.Optimizer = None,
    schedule: o.Schedule = None,
    warmup: o.Warmup = None,
    clip: o.Clip = None,
    max_steps: o.MaxSteps = None,
    epochs: o.Epochs = None,
    time_budget: o.TimeBudget = None,
    eval_every: Annotated[Optional[int], Opt(help="Validate (loss and BLEU) every N steps."),
                          Key("run.eval_every")] = None,
    checkpoint_every: o.CheckpointEvery = None,
    patience: o.Patience = None,
    max_bad_steps: o.MaxBadSteps = None,
    seed: o.RunSeed = None,
    device: o.RunDevice = None,
    precision: o.Precision = None,
    compile: o.Compile = None,
    tensorboard: o.TensorBoard = None,
    resume: o.Resume = "auto",
    sets: o.Sets = None,
) -> None:
    """Train an encoder-decoder RNN with attention; the best weights by validation BLEU are published.

    Example: seqtool train-seq2seq -w runs/enfr --src train.en --tgt train.fr --time-budget 10m
    """
    options = config_options(ctx, train_seq2seq, locals())
    from seqtool.data.io import data_fingerprints
    from seqtool.training import seq2seq
    from seqtool.training.run import Job

    # A seq2seq batch is a token budget (data.batch_tokens), so run.batch_size does not bind a resume.
    job = Job("seq2seq", seq2seq.Seq2SeqTrainConfig,
              lambda cfg, known: data_fingerprints(cfg.data, known=known), seq2seq.build,
              fixed=("data", "tokenizer", "model", "run.seed"))
    run_command(ctx, job, workspace, config, options, sets, resume)
