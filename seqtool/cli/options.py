"""Shared Annotated options, so every command spells them the same way.

An option that sets a config key says so once, in its annotation: `Key("model.hidden")`. The command
turns its arguments into config overrides with `config_options`, and its --help shows each key's
default, read from the command's config dataclass (CONFIGS), so defaults are written only there.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from seqtool.cli.console import GlobalOptions, Reporter
from seqtool.config import OPTIMIZERS, PRECISIONS, SCHEDULES
from seqtool.data.io import ENCODING_ERRORS
from seqtool.data.tokenizers import KINDS

Opt = typer.Option


@dataclasses.dataclass(frozen=True)
class Key:
    """The config key an option sets (`--hidden` → model.hidden)."""

    path: str


# The config dataclass behind each command's Key options, imported only when its --help is shown.
CONFIGS = {"train-rnn": "seqtool.training.lm:TrainRNNConfig",
           "train-seq2seq": "seqtool.training.seq2seq:Seq2SeqTrainConfig",
           "train-transformer": "seqtool.training.transformer:TransformerTrainConfig",
           "finetune": "seqtool.training.finetune:FinetuneConfig",
           "translate": "seqtool.translation:TranslateConfig",
           "generate": "seqtool.decoding:DecodeConfig"}


def complete_device(incomplete: str) -> list[str]:
    return [d for d in ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "mps") if d.startswith(incomplete)]


# -- options of many commands -----------------------------------------------------------------------
Workspace = Annotated[
    Optional[Path],
    Opt("--workspace", "-w", help="Workspace directory (also accepted before the command)."),
]
Device = Annotated[
    Optional[str],
    Opt("--device", help="auto | cpu | cuda | cuda:N | mps (auto: CUDA, then MPS, then CPU).",
        autocompletion=complete_device),
]
Seed = Annotated[Optional[int], Opt("--seed", help="Random seed (recorded in the run).")]
ConfigFile = Annotated[
    Optional[Path],
    Opt("--config", "-c", help="YAML config (e.g. recipes_data/configs/*.yaml or WS/seqtool.yaml)."),
]
Sets = Annotated[
    Optional[list[str]],
    Opt("--set", help="Override any config key: --set optim.lr=0.001 (repeatable; wins over all)."),
]
Adapter = Annotated[
    Optional[str],
    Opt("--adapter", help="Apply the LoRA adapter adapters/NAME (seqtool finetune --lora-rank) "
        "on top of the published weights.", show_default=False),
]
Quantize = Annotated[
    Literal["none", "int8"],
    Opt("--quantize", help="int8: dynamic int8 quantization of the linear layers (CPU only): a quarter "
        "of the weight bytes read per token, at a small cost in quality (benchmarks/RESULTS.md)."),
]
Json = Annotated[bool, Opt("--json", help="Print the result as JSON on stdout.")]
EncodingErrors = Annotated[
    Literal[ENCODING_ERRORS], Opt("--encoding-errors", help="What to do with invalid UTF-8.")
]

# -- options of the training commands (named options are sugar for --set section.key=...) ----------
TrainFiles = Annotated[Optional[list[str]], typer.Argument(
    help="Training text: files, globs, .gz, or - for stdin (else data.train from --config).",
    show_default=False), Key("data.train")]
Valid = Annotated[Optional[list[str]], Opt("--valid", help="Validation text (repeatable); else a held-out "
                                           "fraction of the training lines."), Key("data.valid")]
ValidFraction = Annotated[Optional[float], Opt(help="Share of training lines held out for validation."),
                          Key("data.valid_fraction")]
TokenizerDir = Annotated[Optional[str], Opt("--tokenizer", "-t", help="Use this tokenizer directory "
                                            "(build-vocab -o) instead of building one."),
                         Key("tokenizer.path")]
Kind = Annotated[Optional[Literal[KINDS]], Opt(help="Tokenizer to build."), Key("tokenizer.kind")]
VocabSize = Annotated[Optional[int], Opt(help="Tokenizer vocabulary size (a cap for char/word)."),
                      Key("tokenizer.vocab_size")]
MinCount = Annotated[Optional[int], Opt(help="char/word: keep pieces seen at least this often."),
                     Key("tokenizer.min_count")]
Lowercase = Annotated[Optional[bool], Opt("--lowercase/--no-lowercase", help="Lower-case the text first."),
                      Key("tokenizer.lowercase")]
TokenizerSample = Annotated[Optional[int], Opt("--tokenizer-sample", help="Learn the tokenizer from this "
                                                "many training lines drawn at random, seeded (big "
                                                "corpora; 0: every line)."), Key("tokenizer.sample")]
DataStore = Annotated[Optional[str], Opt("--data-store", help="Token store directory (seqtool tokenize "
                                         "--format store -o DIR, or a shared cache): the text files are "
                                         "encoded there once and memory-mapped by every later run, resume "
                                         "and DDP rank (default: WS/store)."), Key("data.store")]
Mix = Annotated[Optional[list[str]], Opt("--mix", metavar="[NAME=]FILES:WEIGHT", help="Train on several "
                                     "corpora sampled by weight instead of FILES (repeat once per corpus; "
                                     "FILES: files or globs, comma-separated; weights of any scale, e.g. "
                                     "--mix web.txt:70 --mix domain.txt:30). Each corpus is its own store "
                                     "entry and holds out its own last --valid-fraction of lines; "
                                     "validation logs loss_NAME per corpus and their weighted mean as "
                                     "loss. train-rnn: with --objective window."), Key("data.mix")]
ValidTokens = Annotated[Optional[int], Opt("--valid-tokens", help="Validation scores at most this many "
                                           "held-out tokens: those of the first held-out lines that fit, the "
                                           "same at every evaluation and resume (0: all)."),
                        Key("data.valid_tokens")]
BatchSize = Annotated[Optional[int], Opt(help="Sequences per batch."), Key("run.batch_size")]
Lr = Annotated[Optional[float], Opt(help="Learning rate."), Key("optim.lr")]
Optimizer = Annotated[Optional[Literal[OPTIMIZERS]], Opt(help="Optimizer."), Key("optim.optimizer")]
Schedule = Annotated[Optional[Literal[SCHEDULES]], Opt(help="Learning-rate schedule after the warmup."),
                     Key("optim.schedule")]
Warmup = Annotated[Optional[int], Opt("--warmup-steps", "--warmup", help="Linear learning-rate warmup "
                                       "steps."), Key("optim.warmup_steps")]
Clip = Annotated[Optional[float], Opt(help="Gradient-norm clipping threshold (0: off)."), Key("optim.clip")]
MaxSteps = Annotated[Optional[int], Opt(help="Stop after this many optimizer steps (0: no limit)."),
                     Key("run.max_steps")]
Epochs = Annotated[Optional[float], Opt(help="Stop after this many passes over the data (0: no limit)."),
                   Key("run.epochs")]
TimeBudget = Annotated[Optional[str], Opt(help="Stop after this much training time, e.g. 90s, 10m, 1h30m."),
                       Key("run.time_budget")]
EvalEvery = Annotated[Optional[int], Opt(help="Validate every N steps (and at the end)."),
                      Key("run.eval_every")]
CheckpointEvery = Annotated[Optional[int], Opt(help="Checkpoint every N steps."), Key("run.checkpoint_every")]
Patience = Annotated[Optional[int], Opt(help="Early stopping: validations without improvement (0: off)."),
                     Key("run.patience")]
MaxBadSteps = Annotated[Optional[int], Opt(help="Stop with exit 1 after this many non-finite (NaN/inf) steps "
                                           "in a row; each one is skipped."), Key("run.max_bad_steps")]
Precision = Annotated[Optional[Literal[PRECISIONS]], Opt(help="auto: bf16 on CUDA, else fp32."),
                      Key("run.precision")]
Compile = Annotated[Optional[bool], Opt("--compile/--no-compile", help="torch.compile the model."),
                    Key("run.compile")]
TensorBoard = Annotated[Optional[str], Opt("--tensorboard", metavar="DIR", help="Also write the train/valid "
                                          "curves as TensorBoard event files to DIR (needs the tensorboard "
                                          "extra)."), Key("run.tensorboard")]
LabelSmoothing = Annotated[Optional[float], Opt(help="Label smoothing ε (training loss only)."),
                           Key("optim.label_smoothing")]
RunSeed = Annotated[Seed, Key("run.seed")]
RunDevice = Annotated[Device, Key("run.device")]
Resume = Annotated[Literal["auto", "never"], Opt(
    help="auto: continue the workspace's run from its last checkpoint (a finished run does nothing) | "
         "never: start afresh, removing an earlier run's results.")]


# -- from options to config ---------------------------------------------------------------------------
def config_keys(command: Callable) -> dict[str, str]:
    """{parameter name: config key} of the options of `command` that set one."""
    hints = typing.get_type_hints(command, include_extras=True)
    return {name: meta.path for name, hint in hints.items()
            for meta in getattr(hint, "__metadata__", ()) if isinstance(meta, Key)}


def config_options(ctx: typer.Context, command: Callable, given: dict[str, Any]) -> dict[str, Any]:
    """{config key: value} from the arguments `given` to `command` (its locals()). An option left at its
    default is None (not given), so the config file's value stands; the seed and device of a run fall
    back to the global --seed and --device."""
    defaults = inspect.signature(command).parameters
    options = {key: None if given[name] in ([], defaults[name].default) else given[name]
               for name, key in config_keys(command).items()}
    g = global_options(ctx)
    if options.get("run.seed", 0) is None:
        options["run.seed"] = g.seed
    if options.get("run.device", 0) is None and g.device != "auto":  # auto must not override a config file
        options["run.device"] = g.device
    return options


def show_config_defaults(name: str, command: Callable, params: list) -> None:
    """Add `[default: 256, from model.hidden]` to the help of each option of command `name` that sets a
    config key; the key only where --config/--set can set it too (this imports the command's core, so
    only --help calls it)."""
    if name not in CONFIGS:
        return
    module, _, cls = CONFIGS[name].partition(":")
    config = getattr(importlib.import_module(module), cls)
    keys = config_keys(command)
    settable = any(param.name == "sets" for param in params)
    for param in params:
        key = keys.get(param.name)
        if key is None or "  [" in (param.help or ""):  # (already shown)
            continue
        shown = _shown(param, config_default(config, key)) if param.show_default is not False else ""
        notes = [f"default: {shown}"] * bool(shown) + [f"from {key}"] * settable
        if notes:
            param.help = f"{param.help or ''}  [{', '.join(notes)}]"


def config_default(config: type, key: str) -> Any:
    """The default of `key` (section.field, or a top-level field) in the config dataclass `config`."""
    head, _, rest = key.partition(".")
    field = next(f for f in dataclasses.fields(config) if f.name == head)
    value = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
    if not rest:
        return value
    if value is None:  # an optional section (finetune's lora): its class's own defaults
        hint = typing.get_type_hints(config)[head]
        value = next(t for t in typing.get_args(hint) if dataclasses.is_dataclass(t))()
    return getattr(value, rest)


def _shown(param: Any, value: Any) -> str:
    if isinstance(value, bool):  # --tie/--no-tie: the flag that gives the default
        return (param.opts if value else param.secondary_opts or [""])[0].lstrip("-")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


# -- the global options -------------------------------------------------------------------------------
def global_options(ctx: typer.Context) -> GlobalOptions:
    """The global options (--quiet, --log-format, ...), given before or after the command name."""
    root = ctx.find_root()
    obj = root.obj
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions()


def reporter(ctx: typer.Context) -> Reporter:
    g = global_options(ctx)
    return Reporter(log_format=g.log_format, quiet=g.quiet)


def pick(local, ctx: typer.Context, name: str):
    """A command's own option wins over the same global option given before the command."""
    return local if local is not None else getattr(global_options(ctx), name)


def require_workspace(local: Path | None, ctx: typer.Context) -> Path:
    from seqtool.errors import InputError

    ws = pick(local, ctx, "workspace")
    if ws is None:
        raise InputError("no workspace given", hint="pass -w/--workspace DIR")
    return Path(ws)
