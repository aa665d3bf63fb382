"""`seqtool train-transformer --arch encoder-decoder | decoder | encoder`: a Transformer for translation,
causal language modelling (GPT-like) or masked language modelling (BERT-like)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from seqtool.cli import train as shared
from seqtool.cli.options import ConfigFile, Device, Seed, Sets, Workspace, global_options

Opt = typer.Option


def train_transformer(
    ctx: typer.Context,
    files: shared.TrainFiles = None,
    workspace: Workspace = None,
    config: ConfigFile = None,
    arch: Annotated[Optional[str], Opt(help="encoder-decoder (translation: --src/--tgt or --tsv) | decoder "
                                       "(GPT-like LM on FILES) | encoder (BERT-like masked LM on FILES).",
                                       show_default=False)] = None,
    layers: Annotated[Optional[int], Opt("--n-layers", "--layers", help="Blocks per stack.")] = None,
    heads: Annotated[Optional[int], Opt("--heads", "--n-heads", help="Attention heads.")] = None,
    d_model: Annotated[Optional[int], Opt(help="Model width (divisible by --heads).")] = None,
    d_ff: Annotated[Optional[int], Opt(help="Feed-forward inner width.")] = None,
    dropout: Annotated[Optional[float], Opt(help="Dropout on embeddings, attention and sublayers.")] = None,
    positions: Annotated[Optional[str], Opt(help="sinusoidal (the paper's) | learned (GPT-2, BERT).")] = None,
    norm_first: Annotated[Optional[bool], Opt("--norm-first/--post-norm", help="LayerNorm before each "
                                              "sublayer (pre-LN, GPT-2) or after the residual (the paper).",
                                              show_default=False)] = None,
    activation: Annotated[Optional[str], Opt(help="Feed-forward activation: relu | gelu | gelu-tanh.")] \
        = None,
    tie: Annotated[Optional[bool], Opt("--tie/--no-tie", help="Share the (target) embedding with the output "
                                       "layer.", show_default=False)] = None,
    block_size: Annotated[Optional[int], Opt(help="decoder/encoder: tokens per training sequence (the "
                                             "model's positions).")] = None,
    src: Annotated[Optional[str], Opt(help="encoder-decoder: source training file (line-aligned with "
                                      "--tgt).", show_default=False)] = None,
    tgt: Annotated[Optional[str], Opt(help="encoder-decoder: target training file.", show_default=False)] \
        = None,
    tsv: Annotated[Optional[str], Opt(help="encoder-decoder: one source<TAB>target file instead.",
                                      show_default=False)] = None,
    valid_src: Annotated[Optional[str], Opt(help="Validation source file.", show_default=False)] = None,
    valid_tgt: Annotated[Optional[str], Opt(help="Validation target file.", show_default=False)] = None,
    valid_tsv: Annotated[Optional[str], Opt(help="Validation pairs as one TSV file.", show_default=False)] \
        = None,
    joint: Annotated[Optional[bool], Opt("--joint/--separate", help="encoder-decoder: one tokenizer for both "
                                         "languages, or one per side.", show_default=False)] = None,
    max_len: Annotated[Optional[int], Opt(help="encoder-decoder: skip (and list) pairs longer than this "
                                          "many tokens.")] = None,
    batch_tokens: Annotated[Optional[int], Opt(help="encoder-decoder: padded tokens per batch.")] = None,
    label_smoothing: Annotated[Optional[float], Opt(help="Label smoothing ε (training loss only).")] = None,
    accumulate: Annotated[Optional[int], Opt(help="Gradient accumulation: batches per optimizer step.")] \
        = None,
    valid: shared.Valid = None,
    valid_fraction: shared.ValidFraction = None,
    tokenizer: shared.TokenizerDir = None,
    kind: shared.Kind = None,
    vocab_size: shared.VocabSize = None,
    min_count: shared.MinCount = None,
    lowercase: shared.Lowercase = None,
    batch_size: shared.BatchSize = None,
    lr: shared.Lr = None,
    optimizer: shared.Optimizer = None,
    schedule: shared.Schedule = None,
    warmup: shared.Warmup = None,
    clip: shared.Clip = None,
    max_steps: shared.MaxSteps = None,
    epochs: shared.Epochs = None,
    time_budget: shared.TimeBudget = None,
    eval_every: shared.EvalEvery = None,
    patience: shared.Patience = None,
    max_bad_steps: shared.MaxBadSteps = None,
    seed: Seed = None,
    device: Device = None,
    precision: shared.Precision = None,
    compile: shared.Compile = None,
    resume: shared.Resume = "auto",
    sets: Sets = None,
) -> None:
    """Train a Transformer: translation (encoder-decoder, best weights by validation BLEU), a GPT-like
    causal LM (decoder) or a BERT-like masked LM (encoder, validation masked-token accuracy).

    Example: seqtool train-transformer input.txt -w runs/gpt --arch decoder --block-size 64 --time-budget 10m
    """
    from seqtool.training import transformer

    options = shared.common_options(
        ctx, valid=valid, valid_fraction=valid_fraction, tokenizer=tokenizer, kind=kind,
        vocab_size=vocab_size, min_count=min_count, lowercase=lowercase, batch_size=batch_size, lr=lr,
        optimizer=optimizer,
        schedule=schedule, warmup=warmup, clip=clip, max_steps=max_steps, epochs=epochs,
        time_budget=time_budget, eval_every=eval_every, patience=patience, seed=seed, device=device,
        precision=precision, compile=compile, max_bad_steps=max_bad_steps)
    path = workspace or global_options(ctx).workspace
    arch = arch or _arch_given_elsewhere(config, sets, Path(path) if path else None)
    options.update({
        "data.train": files or None, "data.block_size": block_size, "data.src": src, "data.tgt": tgt,
        "data.tsv": tsv, "data.valid_src": valid_src, "data.valid_tgt": valid_tgt,
        "data.valid_tsv": valid_tsv,
        "data.max_len": max_len, "data.batch_tokens": batch_tokens, "tokenizer.joint": joint,
        "model.arch": arch, "model.n_layers": layers, "model.n_heads": heads, "model.d_model": d_model,
        "model.d_ff": d_ff, "model.dropout": dropout, "model.positions": positions,
        "model.norm_first": norm_first, "model.activation": activation, "model.tie": tie,
        "optim.label_smoothing": label_smoothing, "optim.accumulate": accumulate})
    ws_kind = transformer.KIND_OF_ARCH.get(arch or "decoder", "transformer-lm")
    job = shared.TrainJob(ws_kind, transformer.TransformerTrainConfig, transformer.data_fingerprints,
                          transformer.build)
    shared.run_training(ctx, job, workspace, config, options, sets, resume)


def _arch_given_elsewhere(config: Path | None, sets: list[str] | None, path: Path | None) -> str | None:
    """Without --arch: the --set model.arch, else the config file's, else the arch of the run in the
    workspace (so `--resume auto` continues it), else None (the default, decoder)."""
    from seqtool.config import load_yaml, parse_set
    from seqtool.training.transformer import KIND_OF_ARCH
    from seqtool.workspace import META_FILE
    from seqtool.workspace import Workspace as WS

    for item in reversed(sets or []):
        keys, value = parse_set(item)
        if keys == ["model", "arch"]:
            return str(value)
    if config is not None:
        model = load_yaml(config).get("model") or {}
        if isinstance(model, dict) and model.get("arch"):
            return str(model["arch"])
    if path is not None and (path / META_FILE).exists():
        kind = WS.open(path).kind
        return next((a for a, k in KIND_OF_ARCH.items() if k == kind), None)
    return None
