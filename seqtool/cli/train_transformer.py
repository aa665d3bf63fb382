"""`seqtool train-transformer --arch encoder-decoder | decoder | encoder`: a Transformer for translation,
causal language modelling (GPT-like) or masked language modelling (BERT-like)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from seqtool.cli import classify as c
from seqtool.cli import options as o
from seqtool.cli.options import Key, config_options, global_options
from seqtool.cli.train import run_command

Opt = typer.Option
# as in models.transformer (here so that --help and completion need no torch)
ARCHS = ("encoder-decoder", "decoder", "encoder")
POSITIONS = ("sinusoidal", "learned")
ACTIVATIONS = ("relu", "gelu", "gelu-tanh")


def train_transformer(
    ctx: typer.Context,
    files: o.TrainFiles = None,
    workspace: o.Workspace = None,
    config: o.ConfigFile = None,
    arch: Annotated[Optional[Literal[ARCHS]], Opt(
        help="encoder-decoder (translation: --src/--tgt or --tsv) | decoder (GPT-like LM on FILES) | encoder "
             "(BERT-like masked LM on FILES); a run in -w keeps its own."), Key("model.arch")] = None,
    layers: Annotated[Optional[int], Opt("--n-layers", "--layers", help="Blocks per stack."),
                      Key("model.n_layers")] = None,
    heads: Annotated[Optional[int], Opt("--heads", "--n-heads", help="Attention heads."),
                     Key("model.n_heads")] = None,
    d_model: Annotated[Optional[int], Opt(help="Model width (divisible by --heads)."), Key("model.d_model")] \
        = None,
    d_ff: Annotated[Optional[int], Opt(help="Feed-forward inner width."), Key("model.d_ff")] = None,
    dropout: Annotated[Optional[float], Opt(help="Dropout on embeddings, attention and sublayers."),
                       Key("model.dropout")] = None,
    positions: Annotated[Optional[Literal[POSITIONS]], Opt(help="sinusoidal (the paper's) | learned (GPT-2, "
                                                           "BERT)."), Key("model.positions")] = None,
    norm_first: Annotated[Optional[bool], Opt("--norm-first/--post-norm", help="LayerNorm before each "
                                              "sublayer (pre-LN, GPT-2) or after the residual (the paper)."),
                          Key("model.norm_first")] = None,
    activation: Annotated[Optional[Literal[ACTIVATIONS]], Opt(help="Feed-forward activation."),
                          Key("model.activation")] = None,
    tie: Annotated[Optional[bool], Opt("--tie/--no-tie", help="Share the (target) embedding with the output "
                                       "layer."), Key("model.tie")] = None,
    block_size: Annotated[Optional[int], Opt(help="decoder/encoder: tokens per training sequence (the "
                                             "model's positions); --objective denoise: per example."),
                          Key("data.block_size")] = None,
    objective: Annotated[Optional[Literal["standard", "denoise"]], Opt(
        help="standard: the arch's own task | denoise (encoder-decoder): BART pretraining on monolingual "
             "FILES, one sentence per line; then finetune --src/--tgt."), Key("objective")] = None,
    noise: Annotated[Optional[str], Opt(help="--objective denoise: noise functions, comma-separated, of "
                                        "mask, delete, infill (span → one <mask>), permute (sentences) "
                                        "[default: infill,permute].", show_default=False),
                     Key("noise.functions")] = None,
    noise_ratio: Annotated[Optional[float], Opt(help="--objective denoise: share of tokens masked, deleted "
                                                "or infilled [default: 0.3].", show_default=False),
                           Key("noise.ratio")] = None,
    src: Annotated[Optional[str], Opt(help="encoder-decoder: source training file (line-aligned with "
                                      "--tgt)."), Key("data.src")] = None,
    tgt: Annotated[Optional[str], Opt(help="encoder-decoder: target training file."), Key("data.tgt")] = None,
    tsv: Annotated[Optional[str], Opt(help="encoder-decoder: one source<TAB>target file instead."),
                   Key("data.tsv")] = None,
    valid_src: Annotated[Optional[str], Opt(help="Validation source file."), Key("data.valid_src")] = None,
    valid_tgt: Annotated[Optional[str], Opt(help="Validation target file."), Key("data.valid_tgt")] = None,
    valid_tsv: Annotated[Optional[str], Opt(help="Validation pairs as one TSV file."),
                         Key("data.valid_tsv")] = None,
    joint: Annotated[Optional[bool], Opt("--joint/--separate", help="encoder-decoder: one tokenizer for both "
                                         "languages, or one per side."), Key("tokenizer.joint")] = None,
    max_len: Annotated[Optional[int], Opt(help="encoder-decoder: skip (and list) pairs longer than this "
                                          "many tokens."), Key("data.max_len")] = None,
    batch_tokens: Annotated[Optional[int], Opt(help="encoder-decoder: padded tokens per batch."),
                            Key("data.batch_tokens")] = None,
    label_smoothing: o.LabelSmoothing = None,
    accumulate: Annotated[Optional[int], Opt(help="Gradient accumulation: batches per optimizer step."),
                          Key("optim.accumulate")] = None,
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
) -> None:
    """Train a Transformer: translation (encoder-decoder, best weights by validation BLEU), a GPT-like
    causal LM (decoder) or a BERT-like masked LM (encoder, validation masked-token accuracy).

    With --task classify (--arch encoder or decoder): a text classifier on labelled data, [CLS]-style
    first-token, last-token or mean pooling (best weights by validation macro-F1).

    Example: seqtool train-transformer input.txt -w runs/gpt --arch decoder --block-size 64 --time-budget 10m

    Denoising pretraining (BART): seqtool train-transformer en.txt fr.txt -w runs/bart --arch
    encoder-decoder --objective denoise --noise infill,permute; then translation: seqtool finetune
    --from runs/bart --src train.en --tgt train.fr -w runs/mt
    """
    options = config_options(ctx, train_transformer, locals())
    if noise is not None:
        options["noise.functions"] = [part.strip() for part in noise.split(",") if part.strip()]
    options = c.classify_options(task, options, pooling=pooling, label_column=label_column, text_key=text_key,
                                 label_key=label_key)
    if task == "classify":
        from seqtool.training.classify import jobs

        run_command(ctx, jobs()["transformer"], workspace, config, options, sets, resume)
        return
    from seqtool.data.io import data_fingerprints
    from seqtool.training import transformer
    from seqtool.training.run import Job

    path = workspace or global_options(ctx).workspace
    arch = options["model.arch"] = arch or _arch_given_elsewhere(config, sets, Path(path) if path else None)
    ws_kind = transformer.KIND_OF_ARCH.get(arch or "decoder", "transformer-lm")
    job = Job(ws_kind, transformer.TransformerTrainConfig,
              lambda cfg, known: data_fingerprints(cfg.data, transformer.data_fields(cfg), known),
              transformer.build)
    run_command(ctx, job, workspace, config, options, sets, resume)


def _arch_given_elsewhere(config: Path | None, sets: list[str] | None, path: Path | None) -> str | None:
    """Without --arch: the --set model.arch, else the config file's, else the arch of the run in the
    workspace (so `--resume auto` continues it), else None (the default, decoder)."""
    from seqtool.config import load_yaml, parse_set
    from seqtool.training.transformer import KIND_OF_ARCH
    from seqtool.workspace import Workspace as WS
    from seqtool.workspace import is_workspace

    for item in reversed(sets or []):
        keys, value = parse_set(item)
        if keys == ["model", "arch"]:
            return str(value)
    if config is not None:
        model = load_yaml(config).get("model") or {}
        if isinstance(model, dict) and model.get("arch"):
            return str(model["arch"])
    if path is not None and is_workspace(path):
        kind = WS.open(path).kind
        return next((a for a, k in KIND_OF_ARCH.items() if k == kind), None)
    return None
