"""seqtool/lock.py: the writer lock (a second writer refused, a stale lock taken over) and the temp files
only its holder clears."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from seqtool.errors import TemporaryFailure
from seqtool.workspace import Workspace


def test_lock_second_writer_and_stale_lock(tmp_path):
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {})
    holder = f"pid {os.getpid()} on host {socket.gethostname()}"
    with ws.lock(), pytest.raises(TemporaryFailure, match=holder):
        ws.lock().acquire()
    assert not (ws.path / ".lock").exists()
    # a dead process's lock on this host is taken over with a warning
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (ws.path / ".lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    lock = ws.lock().acquire()
    assert lock.warnings and "stale lock" in lock.warnings[0]
    lock.release()


def test_temp_files_are_removed_only_by_the_lock_holder(tmp_path):
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {})
    temp = ws.path / ".model.safetensors.a1b2c3d4.tmp"  # a writer's, in flight or killed
    with ws.lock():
        temp.write_bytes(b"half")
        with pytest.raises(TemporaryFailure):
            ws.lock().acquire()  # a second process must not touch the running writer's files
        assert temp.exists()
    with ws.lock():
        assert not temp.exists()
