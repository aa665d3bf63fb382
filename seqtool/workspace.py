"""The workspace directory: its kinds, its layout, the writer lock, checkpoints and published weights.

Layout (DESIGN.md): seqtool.yaml, tokenizer/, model.safetensors + model.json, checkpoints/step-N/,
metrics.jsonl, plots/, samples/, attention/, adapters/, .lock. Every file is written through storage.py
(atomic writes, safetensors); torch is imported only by the functions that move tensors, so
`seqtool info` stays light.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seqtool import __version__
from seqtool.config import upgrade_keys
from seqtool.errors import InputError, TemporaryFailure
from seqtool.storage import (
    atomic_write,
    atomic_write_with,
    fsync_dir,
    json_line,
    load_tensors,
    save_tensors,
    sha256_file,
    write_error,
)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Kind:
    """What a workspace of this kind holds: a model of `family` (models.MODELS) trained for `task`, which
    reads text as `reading` (language models only)."""

    family: str
    task: str  # "lm" (next token) | "mlm" (masked tokens) | "translation"
    reading: str = ""  # "bptt" (a recurrent state over one stream; or windows) | "block" | "masked"


# The one table of workspace kinds (seqtool.yaml's `kind`). It stays here, free of torch, because
# build-vocab and info open workspaces without importing the models; the family's facts (its LoRA
# targets, ...) sit on its model class.
KINDS = {
    "rnn-lm": Kind("rnn-lm", "lm", "bptt"),
    "seq2seq": Kind("seq2seq", "translation"),
    "transformer-lm": Kind("transformer", "lm", "block"),
    "transformer-mt": Kind("transformer", "translation"),
    "transformer-mlm": Kind("transformer", "mlm", "masked"),
}
LM_KINDS = tuple(name for name, kind in KINDS.items() if kind.task == "lm")
MLM_KINDS = tuple(name for name, kind in KINDS.items() if kind.task == "mlm")
MT_KINDS = tuple(name for name, kind in KINDS.items() if kind.task == "translation")

# The layout: the names here and the Workspace properties below are the only places that spell it.
META_FILE = "seqtool.yaml"
WEIGHTS_FILE = "model.safetensors"
ARCH_FILE = "model.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
TOKENIZER_DIR = "tokenizer"
CHECKPOINTS_DIR = "checkpoints"


# ---------------------------------------------------------------------------------------------
# the writer lock


@dataclass
class WorkspaceLock:
    """An exclusive lock file naming its holder; a stale lock (dead pid, same host) is taken over."""

    path: Path
    warnings: list[str] = field(default_factory=list)
    held: bool = False

    def acquire(self) -> WorkspaceLock:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                if holder is None:
                    continue  # the file vanished or is being written: try again
                if holder.get("host") == info["host"] and not _pid_alive(int(holder.get("pid", -1))):
                    self.warnings.append(
                        f"took over a stale lock of pid {holder.get('pid')} on {holder.get('host')} "
                        f"(that process is gone)")
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise TemporaryFailure(
                    f"workspace {self.path.parent} is locked by pid {holder.get('pid')} on host "
                    f"{holder.get('host')}",
                    hint="wait for that run to finish, or delete the .lock file if that process is gone",
                ) from None
            except OSError as err:  # a read-only workspace fails here first
                raise write_error(err, self.path) from None
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(info, fh)
            except OSError as err:
                self.path.unlink(missing_ok=True)
                raise write_error(err, self.path) from None
            self.held = True
            # Only the lock holder writes here, so seqtool's temp names are leftovers of killed writers.
            self.warnings += remove_temp_files(self.path.parent)
            return self
        raise TemporaryFailure(f"could not lock workspace {self.path.parent}", hint="try again")

    @classmethod
    def of(cls, root: str | Path) -> WorkspaceLock:
        """The lock of the workspace directory `root` (not yet acquired)."""
        return cls(Path(root) / LOCK_FILE)

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def _read_holder(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            # A lock file cut short by a crash between create and write: treat as stale if old.
            age = time.time() - self.path.stat().st_mtime
            return {"pid": -1, "host": socket.gethostname()} if age > 5 else None

    def __enter__(self) -> WorkspaceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_workspace(path: Path, warn: Callable[[str], None]) -> WorkspaceLock:
    """Create the workspace directory if needed and take its writer lock, as train-* and finetune do
    first; what the lock has to say (a stale lock taken over, a checkpoint put back) goes to `warn`."""
    if path.exists() and not path.is_dir():
        raise InputError(f"workspace {path} exists and is not a directory", hint="choose another -w")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create workspace {path}: {err.strerror}", hint="check -w") from None
    lock = WorkspaceLock.of(path).acquire()
    for warning in lock.warnings:
        warn(warning)
    return lock


# The temp files of atomic_write_with and the temp directories of save_checkpoint and save_tokenizers
# (.NAME.XXXXXXXX.tmp: mkstemp's 8 random characters), and the copy a rewrite moves aside (.tmp.old).
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?P<old>\.old)?")
# where train-* and finetune write; not attention/, which attention-map writes without the lock
TEMP_DIRS = ("", CHECKPOINTS_DIR, TOKENIZER_DIR, "adapters", "plots", "samples", "data")


def remove_temp_files(root: Path) -> list[str]:
    """Remove what writers killed mid-write left in the workspace `root` (the caller holds its lock).
    A copy moved aside whose replacement never arrived is put back instead; returns warnings saying so."""
    said = []
    for sub in TEMP_DIRS:
        folder = root / sub
        if not folder.is_dir():
            continue
        temps = [(p, m) for p in folder.iterdir() if (m := TEMP_NAME.fullmatch(p.name))]
        for path, match in sorted(temps, key=lambda pm: not pm[1]["old"]):  # put back before removing
            original = folder / match["name"]
            if match["old"] and not original.exists():
                os.replace(path, original)
                said.append(f"put back {original}: a kill cut short the save that replaces it")
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return said


def _pid_alive(pid: int) -> bool:
    """Whether a process of this host still runs. On Windows `os.kill(pid, 0)` would *terminate* it,
    so there a lock's holder counts as alive: the lock error says to delete .lock by hand."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------
# the workspace


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

    def write_meta(self) -> None:
        if self.read_only:
            return
        atomic_write(self.path / META_FILE, yaml.safe_dump(self.meta, sort_keys=False, allow_unicode=True))

    def update_status(self, **values: Any) -> None:
        if self.read_only:
            return
        self.status.update(values)
        self.write_meta()

    def mark_finished(self, reason: str, step: int) -> None:
        self.update_status(state="finished", finished=reason, step=step)

    def finished_status(self, settle: bool = False) -> dict[str, Any] | None:
        """The status of the run here when it has finished, else None.

        The trainer notes the final step in the status, writes the final checkpoint (whose meta.json
        says why the run ended), then the state `finished`. A kill -9 between the last two leaves the
        state at `running`: that checkpoint then decides, and `settle` (the lock holder) writes the state.
        Any other state was written by a run that ended knowing how.
        """
        state, final = self.status.get("state"), self.status.get("final_step")
        if state == "finished":
            return self.status
        ckpt = self.latest_checkpoint() if state == "running" and final is not None else None
        meta = _read_json(ckpt / "meta.json") if ckpt is not None else {}
        if not meta.get("finished") or meta.get("step") != final:
            return None
        if settle:
            self.mark_finished(meta["finished"], meta["step"])
            return self.status
        return {**self.status, "state": "finished", "finished": meta["finished"], "step": meta["step"]}

    def lock(self) -> WorkspaceLock:
        return WorkspaceLock.of(self.path)

    def sub(self, *parts: str) -> Path:
        """Deprecated: use the layout properties below (kept until the last callers move to them)."""
        return self.path.joinpath(*parts)

    # -- layout: where each part of a workspace lives -----------------------------------------
    @property
    def tokenizer_dir(self) -> Path:
        """tokenizer/: the tokenizer files (src/ and tgt/ inside for a translation pair)."""
        return self.path / TOKENIZER_DIR

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:07d}"

    def fixed_data(self, name: str) -> Path:
        """data/NAME: the validation lines a run fixed at its start (valid.txt, valid.src, valid.tgt)."""
        return self.path / "data" / name

    def keep_fixed_data(self, files: dict[str, list[str]]) -> None:
        """Write data/NAME for each file not there yet (the validation lines a run fixes at its start)."""
        if self.read_only:
            return
        for name, lines in files.items():
            if not self.fixed_data(name).is_file():
                atomic_write(self.fixed_data(name), "\n".join(lines))

    def save_tokenizers(self, tokenizers: dict[str, Any]) -> bool:
        """Write tokenizer/ (data.tokenizers.save_tokenizers: "" the tokenizer, or "src" and "tgt");
        False on a view, which writes nothing."""
        if self.read_only:
            return False
        from seqtool.data.tokenizers import save_tokenizers

        save_tokenizers(self.tokenizer_dir, tokenizers)
        return True

    def sample_file(self, step: int) -> Path:
        return self.path / "samples" / f"step-{step:07d}.txt"

    def plot_file(self, name: str) -> Path:
        return self.path / "plots" / name

    def draw_plot(self, name: str, draw: Callable[[Path], Any]) -> None:
        """plots/NAME, drawn by `draw(path)` (not on a view)."""
        if not self.read_only:
            draw(self.plot_file(name))

    @property
    def attention_dir(self) -> Path:
        return self.path / "attention"

    def adapter_file(self, name: str, suffix: str = ".safetensors") -> Path:
        """adapters/NAME.safetensors (the LoRA weights) or, with suffix ".json", its config."""
        return self.path / "adapters" / f"{name}{suffix}"

    # -- metrics ------------------------------------------------------------------------------
    def append_metrics(self, event: dict[str, Any]) -> None:
        if self.read_only:
            return
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
    def publish(self, state: dict[str, Any], arch: dict[str, Any],
                note: dict[str, Any] | None = None) -> None:
        """Write the published weights (model.safetensors) and the architecture (model.json)."""
        if self.read_only:
            return
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
    def publish_adapter(self, name: str, state: dict[str, Any], config: dict[str, Any],
                        note: dict[str, Any] | None = None) -> None:
        if self.read_only:
            return
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
        config = _read_json(self.adapter_file(name, ".json"))
        return load_tensors(self.adapter_file(name)), config

    def clear_run(self) -> bool:
        """Remove an earlier run's results (checkpoints, weights, metrics, plots, samples, tokenizer)
        before training afresh here; True when there was something to remove (never on a view)."""
        if self.read_only:
            return False
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
    def clear_checkpoints(self) -> bool:
        """Drop every checkpoint, as a new fine-tuning round does (it starts from the published weights);
        True when there was one (never on a view)."""
        if self.read_only:
            return False
        found = bool(self.checkpoint_dirs())
        if found:
            shutil.rmtree(self.checkpoints_dir, ignore_errors=True)
        return found

    def checkpoint_dirs(self) -> list[Path]:
        root = self.checkpoints_dir
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))

    def save_checkpoint(self, step: int, model_state: dict[str, Any], trainer_state: dict[str, Any],
                        meta: dict[str, Any], keep: int = 3) -> Path:
        """Write checkpoints/step-N/ atomically (temp dir + rename) and keep the last `keep`; a view
        writes nothing and returns the path rank 0 writes."""
        import torch

        if self.read_only:
            return self.checkpoint_dir(step)
        root, final = self.checkpoints_dir, self.checkpoint_dir(step)
        try:
            root.mkdir(parents=True, exist_ok=True)
            # The writer holds the lock, so temp dirs here are left over by a process killed mid-save.
            for stale in root.glob(".step-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:07d}.", suffix=".tmp", dir=root))
        except OSError as err:
            raise write_error(err, final) from err
        try:
            save_tensors(tmp / "model.safetensors", model_state)
            atomic_write_with(tmp / "trainer.pt", lambda p: torch.save(trainer_state, p))
            info = {**meta, "step": step, "time": time.time(), "sha256": {
                name: sha256_file(tmp / name) for name in ("model.safetensors", "trainer.pt")}}
            atomic_write(tmp / "meta.json", json.dumps(info, indent=2, default=float))
            _apply_umask_dir(tmp)
            if final.exists():  # rewriting a step (the run's end): move the old copy aside, then drop it
                os.replace(final, tmp.with_name(tmp.name + ".old"))
            os.replace(tmp, final)
            fsync_dir(root)
            shutil.rmtree(tmp.with_name(tmp.name + ".old"), ignore_errors=True)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(err, final) from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.checkpoint_dirs()[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def latest_checkpoint(self, warnings: list[str] | None = None) -> Path | None:
        """The newest checkpoint that verifies; corrupt ones are named in `warnings` and skipped."""
        for ckpt in reversed(self.checkpoint_dirs()):
            problem = verify_checkpoint(ckpt)
            if problem is None:
                return ckpt
            if warnings is not None:
                warnings.append(f"checkpoint {ckpt} is unusable ({problem}); falling back to an older one")
        return None

    def load_checkpoint(self, ckpt: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """(model_state, trainer_state, meta) of one checkpoint directory."""
        import pickle

        import torch

        meta = _read_json(ckpt / "meta.json")
        try:
            with warnings.catch_warnings():  # a foreign pickle's protocol warning: we refuse it anyway
                warnings.simplefilter("ignore", UserWarning)
                trainer_state = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            raise InputError(f"{ckpt / 'trainer.pt'} was refused: {str(err).splitlines()[0][:200]}",
                             hint="it is corrupt or not written by seqtool; delete that checkpoint") from None
        return load_tensors(ckpt / "model.safetensors"), trainer_state, meta


def verify_checkpoint(ckpt: Path) -> str | None:
    """None when every file of the checkpoint matches its recorded sha256, else what is wrong."""
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
        for name, digest in meta["sha256"].items():
            if sha256_file(ckpt / name) != digest:
                return f"{name} does not match its sha256"
    except FileNotFoundError as err:
        return f"{Path(err.filename).name} missing"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"meta.json unreadable: {err}"
    return None


def _apply_umask_dir(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} is missing",
                         hint="the workspace is incomplete; retrain or restore it") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is corrupt: {err}", hint="restore it or retrain") from None


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
    return upgrade_keys({"model": _read_json(path)})["model"]


def _torch_version() -> str | None:
    import sys

    torch = sys.modules.get("torch")
    version = getattr(torch, "__version__", None)
    return str(version) if version is not None else None
