"""Platform guards: what seqtool does where POSIX-only calls are missing (Windows)."""

from __future__ import annotations

import json
import os
import signal
import socket

import pytest

from seqtool.errors import TemporaryFailure
from seqtool.lock import WorkspaceLock, _pid_alive
from seqtool.training.runtime import StopFlags


def test_stop_flags_install_without_sigusr1(monkeypatch):
    monkeypatch.delattr(signal, "SIGUSR1")
    flags = StopFlags().install()
    try:
        assert signal.SIGTERM in flags.previous and signal.SIGINT in flags.previous
        assert signal.getsignal(signal.SIGTERM) == flags._handle
    finally:
        flags.restore()
    assert signal.getsignal(signal.SIGTERM) != flags._handle


def test_pid_check_never_calls_kill_on_windows(monkeypatch):
    # os.kill(pid, 0) terminates the process on Windows: there a holder is taken to be alive.
    def no_kill(pid, sig):
        raise AssertionError("os.kill called on Windows")

    monkeypatch.setattr(os, "kill", no_kill)
    monkeypatch.setattr(os, "name", "nt")
    assert _pid_alive(4242) is True
    assert _pid_alive(0) is False


def test_windows_lock_of_a_gone_process_is_not_taken_over(tmp_path, monkeypatch):
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": 999_999_999, "host": socket.gethostname(), "since": 0}))
    monkeypatch.setattr(os, "name", "nt")
    with pytest.raises(TemporaryFailure) as err:
        WorkspaceLock(lock).acquire()
    assert "locked by pid 999999999" in str(err.value) and ".lock" in err.value.hint
    assert lock.exists()
