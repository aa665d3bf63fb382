"""SeqtoolError and the exit codes every command uses (see DESIGN.md)."""

from __future__ import annotations

import re

EXIT_FAILURE = 1  # runtime failure: divergence, internal error
EXIT_USAGE = 2  # bad option, missing/unreadable/invalid input, wrong workspace kind
EXIT_TEMPFAIL = 75  # interrupted but resumable, or workspace locked by a live process
EXIT_INTERRUPTED = 130  # Ctrl-C


class SeqtoolError(Exception):
    """A failure the user can act on: one line of `message`, an optional `hint` on how to fix it.

    The CLI prints `error: <message> (<hint>)` on stderr and exits with `exit_code`.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(SeqtoolError):
    """Bad input file, option or workspace: exit 2."""

    exit_code = EXIT_USAGE


class RuntimeFailure(SeqtoolError):
    """Training diverged or something broke at run time: exit 1."""

    exit_code = EXIT_FAILURE


class TemporaryFailure(SeqtoolError):
    """Workspace locked or run preempted; trying again later can succeed: exit 75."""

    exit_code = EXIT_TEMPFAIL


_OOM = re.compile(r"can't allocate memory|not enough memory|out of memory", re.IGNORECASE)
_OVERFLOW = re.compile(r"Overflow when unpacking long long|int too big to convert")  # a size past int64
_TRIED = re.compile(r"tried to allocate (\d+(?:\.\d+)?) ?(bytes|[KMGT]i?B)", re.IGNORECASE)


def out_of_memory(err: BaseException) -> RuntimeFailure | None:
    """`err` as one line when it says memory ran out (Python's MemoryError, torch's CPU allocator or
    CUDA) or a tensor size overflowed, else None. By name and message, so that this module needs no
    torch."""
    if isinstance(err, (TypeError, ValueError, RuntimeError, OverflowError)) and _OVERFLOW.search(str(err)):
        return RuntimeFailure("out of memory: a tensor size does not even fit in 64 bits",
                              hint="an option is far too large: --hidden, --d-model, --embedding, …")
    if not (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or (isinstance(err, RuntimeError) and _OOM.search(str(err)))):
        return None
    asked = ""
    if m := _TRIED.search(str(err)):
        amount = f"{float(m[1]) / 2**30:,.1f} GiB" if m[2] == "bytes" else f"{m[1]} {m[2]}"
        asked = f" (asked for {amount} at once)"
    return RuntimeFailure(f"out of memory{asked}",
                          hint="use smaller sizes: --hidden or --d-model, --n-layers, batch, vocabulary")
