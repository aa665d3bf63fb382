"""The workspace directory: its layout, its metadata and published weights; the writer lock is
lock.py's and the checkpoint files checkpoints.py's, reached through Workspace methods.

Layout (DESIGN.md): seqtool.yaml, tokenizer/, model.safetensors + model.json, checkpoints/step-N/,
metrics.jsonl, plots/, samples/, attention/, adapters/, .lock. Every file is written through storage.py
(atomic writes, safetensors); torch is imported only by the functions that move tensors, so
`seqtool info` stays light. A read-only view (Workspace.view) writes nothing: every writing method passes
the one write gate (_writes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from seqtool import __version__, checkpoints
from seqtool.config import upgrade_keys
from seqtool.errors import InputError
from seqtool.kinds import KINDS
from seqtool.storage import (
    atomic_write,
    json_line,
    load_tensors,
    read_json,
    save_tensors,
    write_error,
)

if TYPE_CHECKING:
    from seqtool.lock import WorkspaceLock

FORMAT_VERSION = 1


# The layout: the names here and the Workspace properties below are the only places that spell it.
META_FILE = "seqtool.yaml"
WEIGHTS_FILE = "model.safetensors"
ARCH_FILE = "model.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
TOKENIZER_DIR = "tokenizer"
CHECKPOINTS_DIR = "checkpoints"


# ---------------------------------------------------------------------------------------------
# the workspace


def _writes(nothing: Callable[..., Any] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The one write gate: a method so marked writes to the workspace; on a read-only view it returns
    without touching the disk or the metadata: None, or `nothing(self, *args)` where a caller needs one."""
    def gate(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def gated(self: Workspace, *args: Any, **kwargs: Any) -> Any:
            if self.read_only:
                return nothing(self, *args, **kwargs) if nothing is not None else None
            return method(self, *args, **kwargs)
        return gated
    return gate


def _false(*_: Any, **__: Any) -> bool:
    return False


def is_workspace(path: str | Path) -> bool:
    """Whether `path` is a workspace already (it holds a seqtool.yaml)."""
    return (Path(path) / META_FILE).exists()


@dataclass
class Workspace:
    """An opened workspace directory and its seqtool.yaml metadata.

    A read-only view (`view()`, what ranks other than 0 of a distributed run train with) reads like the
    workspace and writes nothing: its writing methods return without touching the disk or the metadata.
    """

    path: Path
    meta: dict[str, Any]
    read_only: bool = False

    def view(self) -> Workspace:
        """This workspace, read-only (see the class docstring)."""
        return dataclasses.replace(self, read_only=True)

    # -- create / open ------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, kind: str, config: dict[str, Any],
               data_files: list[dict[str, Any]] | None = None) -> Workspace:
        """Start a new workspace (or reuse an empty/compatible directory) and write seqtool.yaml."""
        if kind not in KINDS:
            raise ValueError(f"unknown workspace kind {kind}")
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"workspace {path} exists and is not a directory", hint="choose another -w")
        if is_workspace(path):
            old = cls.open(path)
            if old.kind != kind:
                raise InputError(f"workspace {path} holds a {old.kind} model, not {kind}",
                                 hint="use a new -w directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_error(err, path) from err
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "seqtool_version": __version__,
            "torch_version": _torch_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config,
            "data": data_files or [],
            "status": {},
        }
        ws = cls(path, meta)
        ws.write_meta()
        return ws

    @classmethod
    def open(cls, path: str | Path, kinds: tuple[str, ...] | None = None, purpose: str = "") -> Workspace:
        """Open an existing workspace, checking its format version and (optionally) its kind."""
        path = Path(path)
        meta_path = path / META_FILE
        if not path.exists():
            raise InputError(f"workspace {path} does not exist",
                             hint="check -w, or train a model into it first")
        if not path.is_dir():
            raise InputError(f"workspace {path} is not a directory", hint="-w takes a workspace directory")
        if not meta_path.exists():
            raise InputError(f"{path} is not a seqtool workspace (no {META_FILE})",
                             hint="pass a directory written by a seqtool train-* or finetune command")
        try:
            meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise InputError(f"{meta_path} is corrupt: {str(err).splitlines()[0]}",
                             hint="restore it or retrain into a new workspace") from None
        if not isinstance(meta, dict) or "kind" not in meta:
            raise InputError(f"{meta_path} is not valid workspace metadata (no 'kind')",
                             hint="restore it or retrain into a new workspace")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(
                f"workspace {path} has format version {version} (written by seqtool "
                f"{meta.get('seqtool_version', '?')}); this seqtool {__version__} reads format "
                f"{FORMAT_VERSION}",
                hint="upgrade seqtool (pip install -U seqtool)")
        meta = _migrate(meta)
        ws = cls(path, meta)
        if kinds is not None and ws.kind not in kinds:
            what = f" for {purpose}" if purpose else ""
            raise InputError(f"workspace {path} holds a {ws.kind} model, which cannot be used{what}",
                             hint=f"use a workspace of kind {' or '.join(kinds)}")
        return ws

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.meta.get("config") or {})

    @property
    def status(self) -> dict[str, Any]:
        return self.meta.setdefault("status", {})

    @_writes()
    def write_meta(self) -> None:
        atomic_write(self.path / META_FILE, yaml.safe_dump(self.meta, sort_keys=False, allow_unicode=True))

    @_writes()
    def update_status(self, **values: Any) -> None:
        self.status.update(values)
        self.write_meta()

    def mark_finished(self, reason: str, step: int) -> None:
        self.update_status(state="finished", finished=reason, step=step)

    def finished_status(self, settle: bool = False) -> dict[str, Any] | None:
        """The status of the run here when it has finished, else None.

        The trainer notes the final step in the status, writes the final checkpoint (whose meta.json
        says why the run ended), then the state `finished`. A kill -9 between the last two leaves the
        state at `running`: that checkpoint then decides, and `settle` writes the state (not on a view).
        Any other state was written by a run that ended knowing how.
        """
        state, final = self.status.get("state"), self.status.get("final_step")
        if state == "finished":
            return self.status
        ckpt = self.latest_checkpoint() if state == "running" and final is not None else None
        meta = read_json(ckpt / "meta.json") if ckpt is not None else {}
        if not meta.get("finished") or meta.get("step") != final:
            return None
        if settle:  # (through the write gate: a view writes nothing)
            self.mark_finished(meta["finished"], meta["step"])
        return {**self.status, "state": "finished", "finished": meta["finished"], "step": meta["step"]}

    def lock(self) -> WorkspaceLock:
        """The writer lock of this workspace (not yet acquired; seqtool.lock)."""
        from seqtool.lock import WorkspaceLock

        return WorkspaceLock.of(self.path)

    # -- layout: where each part of a workspace lives -----------------------------------------
    @property
    def tokenizer_dir(self) -> Path:
        """tokenizer/: the tokenizer files (src/ and tgt/ inside for a translation pair)."""
        return self.path / TOKENIZER_DIR

    @property
    def store_dir(self) -> Path:
        """store/: the token store of the run's corpus (data/store.py), unless --data-store names another."""
        return self.path / "store"

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def checkpoint_dir(self, step: int) -> Path:
        return checkpoints.step_dir(self.checkpoints_dir, step)

    def fixed_data(self, name: str) -> Path:
        """data/NAME: the validation lines a run fixed at its start (valid.txt, valid.src, valid.tgt)."""
        return self.path / "data" / name

    @_writes()
    def keep_fixed_data(self, files: dict[str, list[str]]) -> None:
        """Write data/NAME for each file not there yet (the validation lines a run fixes at its start)."""
        for name, lines in files.items():
            if not self.fixed_data(name).is_file():
                atomic_write(self.fixed_data(name), "\n".join(lines))

    @_writes(nothing=_false)
    def save_tokenizers(self, tokenizers: dict[str, Any]) -> bool:
        """Write tokenizer/ (data.tokenizers.save_tokenizers: "" the tokenizer, or "src" and "tgt");
        False on a view, which writes nothing."""
        from seqtool.data.tokenizers import save_tokenizers

        save_tokenizers(self.tokenizer_dir, tokenizers)
        return True

    def sample_file(self, step: int) -> Path:
        return self.path / "samples" / f"step-{step:07d}.txt"

    def plot_file(self, name: str) -> Path:
        return self.path / "plots" / name

    @_writes()
    def draw_plot(self, name: str, draw: Callable[[Path], Any]) -> None:
        """plots/NAME, drawn by `draw(path)` (not on a view)."""
        draw(self.plot_file(name))

    @property
    def attention_dir(self) -> Path:
        return self.path / "attention"

    def adapter_file(self, name: str, suffix: str = ".safetensors") -> Path:
        """adapters/NAME.safetensors (the LoRA weights) or, with suffix ".json", its config."""
        return self.path / "adapters" / f"{name}{suffix}"

    # -- metrics ------------------------------------------------------------------------------
    @_writes()
    def append_metrics(self, event: dict[str, Any]) -> None:
        path = self.path / METRICS_FILE
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json_line(event, default=float) + "\n")
        except OSError as err:
            raise write_error(err, path) from err

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS_FILE
        if not path.exists():
            return []
        events = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by kill -9
                events.append(json.loads(line))
        return events

    # -- published weights --------------------------------------------------------------------
    @_writes()
    def publish(self, state: dict[str, Any], arch: dict[str, Any],
                note: dict[str, Any] | None = None) -> None:
        """Write the published weights (model.safetensors) and the architecture (model.json)."""
        save_tensors(self.weights_file, state)
        atomic_write(self.path / ARCH_FILE, json.dumps({**arch, **({"published": note} if note else {})},
                                                       indent=2))

    def has_weights(self) -> bool:
        return self.weights_file.exists() and (self.path / ARCH_FILE).exists()

    def load_published(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state_dict, architecture) of the published model."""
        if not self.has_weights():
            raise InputError(f"workspace {self.path} has no trained model yet ({WEIGHTS_FILE} missing)",
                             hint="train into it first, or resume the run with --resume auto")
        arch = _read_arch(self.path / ARCH_FILE)
        return load_tensors(self.weights_file), arch

    def architecture(self) -> dict[str, Any]:
        return _read_arch(self.path / ARCH_FILE)

    # -- LoRA adapters (finetune --lora): adapters/NAME.safetensors + NAME.json ---------------
    @_writes()
    def publish_adapter(self, name: str, state: dict[str, Any], config: dict[str, Any],
                        note: dict[str, Any] | None = None) -> None:
        save_tensors(self.adapter_file(name), state)
        atomic_write(self.adapter_file(name, ".json"),
                     json.dumps({**config, **({"published": note} if note else {})}, indent=2))

    def adapters(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "adapters").glob("*.safetensors"))

    def load_adapter(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(adapter weights, adapter config) of adapters/NAME."""
        if not self.adapter_file(name).exists():
            names = ", ".join(self.adapters()) or "none"
            raise InputError(f"workspace {self.path} has no adapter {name!r} (adapters: {names})",
                             hint="train one with seqtool finetune --lora-rank R --adapter-name NAME")
        config = read_json(self.adapter_file(name, ".json"))
        return load_tensors(self.adapter_file(name)), config

    @_writes(nothing=_false)
    def clear_run(self) -> bool:
        """Remove an earlier run's results (checkpoints, weights, metrics, plots, samples, tokenizer)
        before training afresh here; True when there was something to remove (never on a view)."""
        found = False
        names = (CHECKPOINTS_DIR, WEIGHTS_FILE, ARCH_FILE, METRICS_FILE, "plots", "samples", TOKENIZER_DIR)
        for name in names:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            else:
                continue
            found = True
        return found

    # -- checkpoints --------------------------------------------------------------------------
    @_writes(nothing=_false)
    def clear_checkpoints(self) -> bool:
        """Drop every checkpoint, as a new fine-tuning round does (it starts from the published weights);
        True when there was one (never on a view)."""
        found = bool(self.checkpoint_dirs())
        if found:
            shutil.rmtree(self.checkpoints_dir, ignore_errors=True)
        return found

    def checkpoint_dirs(self) -> list[Path]:
        return checkpoints.step_dirs(self.checkpoints_dir)

    @_writes(nothing=lambda self, step, *args, **kwargs: self.checkpoint_dir(step))
    def save_checkpoint(self, step: int, model_state: dict[str, Any], trainer_state: dict[str, Any],
                        meta: dict[str, Any], keep: int = 3) -> Path:
        """Write checkpoints/step-N/ (seqtool.checkpoints.save) and keep the last `keep`; a view writes
        nothing and returns the path rank 0 writes."""
        return checkpoints.save(self.checkpoints_dir, step, model_state, trainer_state, meta, keep)

    def latest_checkpoint(self, warnings: list[str] | None = None) -> Path | None:
        """The newest checkpoint that verifies; corrupt ones are named in `warnings` and skipped."""
        return checkpoints.latest(self.checkpoints_dir, warnings)

    def load_checkpoint(self, ckpt: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """(model_state, trainer_state, meta) of one checkpoint directory."""
        return checkpoints.load(ckpt)


def _migrate(meta: dict[str, Any]) -> dict[str, Any]:
    """Bring metadata written by an older seqtool up to date: renamed config keys (config.RENAMED_KEYS)
    take their new names, also in the source run's config that a fine-tuned workspace keeps."""
    config = meta.get("config")
    while isinstance(config, dict):
        upgrade_keys(config)
        config = config.get("source_config")
    return meta


def _read_arch(path: Path) -> dict[str, Any]:
    """model.json, with renamed keys under their new names: its keys are the config's model.* keys."""
    return upgrade_keys({"model": read_json(path)})["model"]


def _torch_version() -> str | None:
    import sys

    torch = sys.modules.get("torch")
    version = getattr(torch, "__version__", None)
    return str(version) if version is not None else None
