"""Dataclass configs: YAML load/save, named CLI options, `--set a.b=value` overrides, validation.

Precedence: defaults < --config FILE.yaml < named CLI options < --set. Unknown keys and wrong types
are InputErrors naming the key. A workspace's seqtool.yaml is accepted as --config (its `config:`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from seqtool.errors import InputError

T = TypeVar("T")

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "plateau", "cosine", "inverse-sqrt")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_VOCAB = 10_000_000  # pieces: far above any real vocabulary, far below an embedding that cannot fit
MAX_SEED = 2**64 - 1  # torch.manual_seed's range
MAX_LAYERS = 1_000  # far deeper than anything trained here; building 10**30 layers would never end


# ---------------------------------------------------------------------------------------------
# sections shared by the train-* commands


@dataclasses.dataclass
class DataConfig:
    train: list[str] = dataclasses.field(default_factory=list)  # files, globs, '-' or .gz
    valid: list[str] = dataclasses.field(default_factory=list)
    valid_fraction: float = 0.05  # held out from the end of train when no valid file is given
    encoding_errors: str = "strict"
    store: str = ""  # the token store's directory (data/store.py); empty: WS/store

    def __post_init__(self) -> None:
        check_choice("data.encoding_errors", self.encoding_errors, ("strict", "replace", "ignore"))
        if not 0.0 <= self.valid_fraction < 0.5:
            raise InputError(f"data.valid_fraction must be in [0, 0.5), got {self.valid_fraction}")


@dataclasses.dataclass
class TokenizerConfig:
    kind: str = "char"
    path: str | None = None  # an existing tokenizer directory (build-vocab -o) instead of building one
    vocab_size: int = 8000
    min_count: int = 1
    lowercase: bool = False
    sample: int = 0  # learn from this many training lines drawn at random (seeded); 0: every line

    def __post_init__(self) -> None:
        check_choice("tokenizer.kind", self.kind, ("char", "word", "bpe", "unigram"))
        check_between("tokenizer.vocab_size", self.vocab_size, 1, MAX_VOCAB)
        check_positive("tokenizer.min_count", self.min_count)
        check_at_least("tokenizer.sample", self.sample, 0, " (0: every line)")


@dataclasses.dataclass
class OptimConfig:
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd only
    beta1: float = 0.9
    beta2: float = 0.999
    clip: float = 1.0  # gradient-norm clipping; 0 disables
    schedule: str = "constant"  # constant | step | plateau | cosine | inverse-sqrt
    warmup_steps: int = 0
    step_size: int = 1000  # schedule=step: decay every N steps
    gamma: float = 0.5  # schedule=step / plateau: decay factor
    plateau_patience: int = 2  # schedule=plateau: evaluations without improvement before decaying
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    accumulate: int = 1  # gradient accumulation steps

    def __post_init__(self) -> None:
        check_choice("optim.optimizer", self.optimizer, OPTIMIZERS)
        check_choice("optim.schedule", self.schedule, SCHEDULES)
        check_positive("optim.lr", self.lr)
        check_at_least("optim.clip", self.clip, 0, " (0 disables clipping)")
        check_at_least("optim.weight_decay", self.weight_decay, 0)
        check_at_least("optim.warmup_steps", self.warmup_steps, 0)
        check_at_least("optim.min_lr", self.min_lr, 0)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InputError(f"optim.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        check_positive("optim.accumulate", self.accumulate)


@dataclasses.dataclass
class RunConfig:
    max_steps: int = 0  # 0: no step limit (then epochs or time_budget stop the run)
    epochs: float = 0.0  # 0: no epoch limit
    time_budget: str = ""  # e.g. "10m", "1h30m", "90s"; empty: none
    batch_size: int = 32
    eval_every: int = 200
    eval_batches: int = 0  # 0: the whole validation set
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    patience: int = 0  # early stopping: evaluations without improvement; 0 disables
    log_every: int = 20
    seed: int = 1234
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    max_bad_steps: int = 10
    tensorboard: str = ""  # a directory for TensorBoard event files; empty: none

    def __post_init__(self) -> None:
        check_positive("run.batch_size", self.batch_size)
        check_positive("run.eval_every", self.eval_every)
        check_positive("run.checkpoint_every", self.checkpoint_every)
        check_positive("run.log_every", self.log_every)
        check_at_least("run.max_steps", self.max_steps, 0, " (0: no step limit)")
        check_at_least("run.epochs", self.epochs, 0, " (0: no epoch limit)")
        check_at_least("run.eval_batches", self.eval_batches, 0, " (0: the whole validation set)")
        check_at_least("run.keep_checkpoints", self.keep_checkpoints, 0)
        check_at_least("run.patience", self.patience, 0, " (0 disables early stopping)")
        check_at_least("run.max_bad_steps", self.max_bad_steps, 0)
        check_seed("run.seed", self.seed)
        check_choice("run.precision", self.precision, PRECISIONS)
        parse_duration(self.time_budget, "run.time_budget")

    def require_end(self) -> None:
        """Refuse a run that nothing would stop (checked by the commands that train)."""
        if not (self.max_steps or self.epochs or self.time_budget):
            raise InputError("the run has no end", hint="pass --max-steps, --epochs or --time-budget")


# ---------------------------------------------------------------------------------------------
# small validators


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def check_positive(key: str, value: float) -> None:
    if not 0 < value < math.inf:  # NaN fails every comparison
        raise InputError(f"{key} must be a finite number > 0, got {value}")


def check_at_least(key: str, value: float, low: float, note: str = "") -> None:
    """`value` must be finite and ≥ `low`; `note` says what `low` means, e.g. " (0: no limit)"."""
    if not low <= value < math.inf:
        raise InputError(f"{key} must be a finite number ≥ {low}{note}, got {value}")


def check_seed(key: str, seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"{key} must be in [0, 2**64-1], got {seed}")


def check_between(key: str, n: int, low: int, high: int) -> None:
    """An integer count in [low, high], e.g. layers up to MAX_LAYERS, a vocabulary up to MAX_VOCAB."""
    if not low <= n <= high:
        raise InputError(f"{key} must be in [{low:,}, {high:,}], got {n:,}")


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration(text: str | float | int | None, key: str = "time budget") -> float | None:
    """'10m' → 600.0, '1h30m' → 5400.0, '90' or '90s' → 90.0, '' → None."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)
    match = _DURATION.match(str(text))
    if not match or not any(match.groups()):
        raise InputError(f"{key}: cannot read {text!r} as a duration", hint="write e.g. 90s, 10m, 1h30m")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


def first_difference(old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """'model.hidden=256 (this run: 512)' for the first fixed key whose value changed, else None."""
    def leaves(data: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            return {prefix: data}
        return {k: v for key, value in data.items() for k, v in leaves(value, f"{prefix}.{key}").items()}

    for key in keys:
        head, _, rest = key.partition(".")
        before, after = old.get(head, {}), new.get(head, {})
        if rest:
            before, after = {rest: before.get(rest)}, {rest: after.get(rest)}
        a, b = leaves(before, head), leaves(after, head)
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                return f"{name}={a.get(name)!r} (this run: {b.get(name)!r})"
    return None


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and wrong types by name."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise InputError(f"unknown config key '{where}{key}'",
                             hint=f"valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], f"{where}{f.name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise InputError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return from_dict(hint, value, key + ".")
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except InputError as err:
                errors.append(err)
        raise errors[0]
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single file is a list of one
        if not isinstance(value, list):
            raise InputError(f"config key '{key}' must be a list, got {type(value).__name__}")
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"config key '{key}' must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise InputError(f"config key '{key}' must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise InputError(f"config key '{key}' must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise InputError(f"config key '{key}' must be a string, got {value!r}")
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------------------------------------
# YAML, options and --set

# Config keys that were renamed, old → new. Config files, --set and workspaces written with the old
# name still read (workspace.py renames them in seqtool.yaml and model.json too).
RENAMED_KEYS = {"model.layers": "model.n_layers"}  # train-rnn's, now named as in seq2seq and Transformer


def upgrade_keys(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a nested config, changed in place) with each old key of RENAMED_KEYS under its new name.
    A section giving both names keeps both, and from_dict then rejects the old one by name."""
    for old, new in RENAMED_KEYS.items():
        (section, before), after = old.split("."), new.split(".")[1]
        part = data.get(section)
        if isinstance(part, dict) and before in part and after not in part:
            data[section] = {(after if key == before else key): value for key, value in part.items()}
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file. A workspace's seqtool.yaml (or the workspace dir) yields its `config:`."""
    from seqtool.workspace import META_FILE, is_workspace

    path = Path(path)
    if path.is_dir() and is_workspace(path):
        path = path / META_FILE
    if not path.exists():
        raise InputError(f"config file {path} does not exist", hint="check the --config path")
    if path.is_dir():
        raise InputError(f"config file {path} is a directory", hint="pass a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{where}: invalid YAML: {problem}", hint="fix the syntax") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text", hint="save the config as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    if "format_version" in data and "config" in data:  # a workspace's seqtool.yaml
        data = data["config"] or {}
    return data


def parse_set(item: str) -> tuple[list[str], Any]:
    """'optim.lr=0.001' → (['optim', 'lr'], 0.001); the value is read as YAML."""
    if "=" not in item:
        raise InputError(f"--set {item!r} has no '='", hint="write --set section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise InputError(f"--set {item!r}: empty key", hint="write --set section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _put(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for part in keys[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[keys[-1]] = value


def _merge(data: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            _merge(data[key], value)
        else:
            data[key] = value


def resolve(cls: type[T], config_file: str | Path | None = None, options: dict[str, Any] | None = None,
            sets: list[str] | None = None, base: dict[str, Any] | None = None) -> T:
    """defaults < base (e.g. the config a resumed run was started with) < config file < options
    (dotted keys; None means 'not given') < --set."""
    data: dict[str, Any] = copy.deepcopy(base) if base else {}
    _merge(data, upgrade_keys(load_yaml(config_file)) if config_file else {})
    for dotted, value in (options or {}).items():
        if value is not None:
            _put(data, dotted.split("."), value)
    for item in sets or []:
        keys, value = parse_set(item)
        dotted = ".".join(keys)
        _put(data, RENAMED_KEYS.get(dotted, dotted).split("."), value)
    return from_dict(cls, data)


def dump_yaml(obj: Any) -> str:
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
