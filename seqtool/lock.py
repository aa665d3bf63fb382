"""The workspace's writer lock: one .lock file naming its holder (pid, host, since). The writer that holds
it (train-*, finetune, build-vocab) is the only one writing in the workspace, so when it takes the lock it
also clears what writers killed mid-write left behind (temp files; a copy moved aside is put back).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqtool.errors import InputError, TemporaryFailure
from seqtool.storage import write_error
from seqtool.workspace import CHECKPOINTS_DIR, LOCK_FILE, TOKENIZER_DIR


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
TEMP_DIRS = ("", CHECKPOINTS_DIR, TOKENIZER_DIR, "adapters", "plots", "samples", "data", "store")


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
