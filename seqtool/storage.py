"""How seqtool stores files: atomic writes (a reader sees the old file or the new one, never a mix),
errors that say what a failed write means, sha256 checksums, tensors in safetensors only (no pickle, tied
weights stored once) and strict JSON lines. torch is imported only by the functions that move tensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqtool.errors import InputError, RuntimeFailure, SeqtoolError

# ---------------------------------------------------------------------------------------------
# atomic writes


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    atomic_write_with(path, lambda tmp: tmp.write_bytes(payload))


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Let `writer` fill a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(err, path) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        _fsync_file(tmp)
        _apply_umask(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(err, path) from err
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if (failure := _write_failure(err, path)) is not None:
            raise failure from err
        raise


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _apply_umask(path: Path) -> None:
    # mkstemp creates 0600 files; workspace files follow the user's umask like any other file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_error(err: OSError, path: Path) -> SeqtoolError:
    import errno

    if blocker := next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None):
        return InputError(f"cannot write {path}: {blocker} is a file, not a directory",
                          hint="choose another path")
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):  # no EDQUOT on Windows
        what = "disk full" if err.errno == errno.ENOSPC else "disk quota exceeded"
        return RuntimeFailure(f"{what} while writing {path}",
                              hint="free space; the previous files are intact")
    if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return RuntimeFailure(f"cannot write {path}: {err.strerror}",
                              hint="make the workspace writable; the previous files are intact")
    return RuntimeFailure(f"cannot write {path}: {err.strerror or err}")


def _write_failure(err: BaseException, path: Path) -> SeqtoolError | None:
    """The user-facing error when a library's writer fails for want of disk (None: not such a failure).
    safetensors names the OS error in its message; torch.save only says its stream came up short, which
    a full disk (or quota) does once the temp file exists."""
    text = str(err)
    if type(err).__name__ == "SafetensorError" and (code := re.search(r"\(os error (\d+)\)", text)):
        return write_error(OSError(int(code[1]), os.strerror(int(code[1]))), path)
    if isinstance(err, RuntimeError) and "inline_container" in text:
        if "unexpected pos" in text or "file write failed" in text:
            import errno

            return write_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)
        return RuntimeFailure(f"cannot write {path}: {text.splitlines()[0]}",
                              hint="check the disk and that the workspace is writable; the previous files "
                                   "are intact")
    return None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# tensors: safetensors only (no pickle), tied weights stored once


def save_tensors(path: str | Path, state: dict[str, Any]) -> None:
    """Save a state dict as safetensors; tensors sharing storage (tied weights) are stored once."""
    from safetensors.torch import save_file

    unique: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = tensor.detach().contiguous().cpu()
    metadata = {"aliases": json.dumps(aliases), "format": "pt"}
    atomic_write_with(path, lambda tmp: save_file(unique, str(tmp), metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, Any]:
    """Load a safetensors file written by save_tensors (restoring tied-weight aliases)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} is missing", hint="retrain, or restore the workspace")
    try:
        state = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path} is corrupt: {err}", hint="restore it, or retrain the model") from None
    for alias, target in json.loads(metadata.get("aliases", "{}")).items():
        state[alias] = state[target]
    return state


def count_parameters(path: str | Path) -> int:
    """Number of parameters in a safetensors file, read from its header (no torch needed)."""
    import struct

    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for dim in entry["shape"]:
            n *= dim
        total += n
    return total


# ---------------------------------------------------------------------------------------------
# strict JSON lines (metrics.jsonl, --log-format json)


def json_line(event: dict[str, Any], default: Callable[[Any], Any] = str, indent: int | None = None) -> str:
    """`event` as strict JSON, one line unless `indent` (metrics.jsonl, --log-format json, info --json): bare
    NaN and Infinity are not JSON, so a non-finite number becomes null and KEY_nonfinite says which ("nan",
    "inf" or "-inf")."""
    return json.dumps(_finite(event), default=default, indent=indent)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file seqtool wrote (model.json, a checkpoint's meta.json, an adapter's config); a missing or
    corrupt one is an InputError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} is missing",
                         hint="the workspace is incomplete; retrain or restore it") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is corrupt: {err}", hint="restore it or retrain") from None


def _finite(value: Any) -> Any:
    def bad(x: Any) -> bool:
        return isinstance(x, float) and not math.isfinite(x)

    if isinstance(value, dict):
        out = {}
        for key, x in value.items():
            out[key] = None if bad(x) else _finite(x)
            if bad(x):
                out[f"{key}_nonfinite"] = "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
        return out
    if isinstance(value, (list, tuple)):
        return [None if bad(x) else _finite(x) for x in value]
    return value


def temp_dir_beside(target: Path) -> Path:
    """A new empty directory beside `target` (.NAME.XXXXXXXX.tmp, lock.TEMP_NAME; with a plain mkdir's mode,
    not mkdtemp's private one) to build `target` in and rename into place; a failure is write_error's line."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
    except OSError as err:
        raise write_error(err, target) from None
    return tmp
