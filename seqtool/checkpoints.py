"""A workspace's checkpoints: checkpoints/step-NNNNNNN/ holding model.safetensors, trainer.pt (the trainer's
state, loaded with weights_only) and meta.json (the step, why the run ended if it did, and each file's
sha256). A checkpoint is written into a temp directory and renamed into place, so a kill leaves the old set
or the new one; one that does not verify is skipped in favour of an older one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from seqtool.errors import InputError
from seqtool.storage import (
    atomic_write,
    atomic_write_with,
    fsync_dir,
    load_tensors,
    read_json,
    save_tensors,
    sha256_file,
    temp_dir_beside,
    write_error,
)


def step_dir(root: Path, step: int) -> Path:
    """root/step-NNNNNNN: where the checkpoint of `step` lives."""
    return root / f"step-{step:07d}"


def step_dirs(root: Path) -> list[Path]:
    """The checkpoint directories under `root`, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def save(root: Path, step: int, model_state: dict[str, Any], trainer_state: dict[str, Any],
         meta: dict[str, Any], keep: int = 3) -> Path:
    """Write root/step-N/ atomically (temp dir + rename) and keep the last `keep`."""
    import torch

    final = step_dir(root, step)
    # The writer holds the lock, so temp dirs here are left over by a process killed mid-save.
    for stale in root.glob(".step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = temp_dir_beside(final)
    try:
        save_tensors(tmp / "model.safetensors", model_state)
        atomic_write_with(tmp / "trainer.pt", lambda p: torch.save(trainer_state, p))
        info = {**meta, "step": step, "time": time.time(), "sha256": {
            name: sha256_file(tmp / name) for name in ("model.safetensors", "trainer.pt")}}
        atomic_write(tmp / "meta.json", json.dumps(info, indent=2, default=float))
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
    for old in step_dirs(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path, warnings: list[str] | None = None) -> Path | None:
    """The newest checkpoint under `root` that verifies; corrupt ones are named in `warnings` and skipped."""
    for ckpt in reversed(step_dirs(root)):
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        if warnings is not None:
            warnings.append(f"checkpoint {ckpt} is unusable ({problem}); falling back to an older one")
    return None


def load(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(model_state, trainer_state, meta) of one checkpoint directory."""
    import pickle

    import torch

    meta = read_json(ckpt / "meta.json")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: we refuse it anyway
            warnings.simplefilter("ignore", UserWarning)
            trainer_state = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise InputError(f"{ckpt / 'trainer.pt'} was refused: {str(err).splitlines()[0][:200]}",
                         hint="it is corrupt or not written by seqtool; delete that checkpoint") from None
    return load_tensors(ckpt / "model.safetensors"), trainer_state, meta


def verify(ckpt: Path) -> str | None:
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

