"""`--threads N` (or SEQTOOL_THREADS): torch's CPU threads for any command, given before or after the
command name; a bad value is one usage-error line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

CORPUS = "the cat sat on the mat\n" * 20


@pytest.fixture
def calls(monkeypatch) -> list[int]:
    """The values torch.set_num_threads is called with (recorded, not applied: the test process keeps
    its own setting)."""
    seen: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    return seen


@pytest.mark.parametrize("where", ["before", "after"])
def test_threads_option_sets_torch_threads(cli, tmp_text, tmp_path, calls, where):
    command = ["build-vocab", tmp_text(CORPUS), "--kind", "char", "-o", tmp_path / "tok"]
    args = ["--threads", "1", *command] if where == "before" else [*command, "--threads", "1"]
    result = cli(args)
    assert result.exit_code == 0, result.stderr
    assert calls == [1]


def test_threads_from_the_environment_and_none_by_default(cli, tmp_text, tmp_path, calls, monkeypatch):
    corpus = tmp_text(CORPUS)
    assert cli(["build-vocab", corpus, "--kind", "char", "-o", tmp_path / "a"]).exit_code == 0
    assert calls == []  # no option: torch keeps its default
    monkeypatch.setenv("SEQTOOL_THREADS", "3")
    assert cli(["build-vocab", corpus, "--kind", "char", "-o", tmp_path / "b"]).exit_code == 0
    assert calls == [3]


@pytest.mark.parametrize("bad", ["0", "two"])
def test_bad_threads_is_one_usage_error(cli, calls, bad):
    result = cli(["--threads", bad, "info"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--threads" in result.stderr and calls == []


def test_threads_before_torch_is_imported_reach_its_pool(tmp_text, tmp_path):
    """A command that imports torch only later (or a child process) still runs on N threads."""
    corpus = tmp_text(CORPUS)
    code = ("import sys; from seqtool.cli import app\n"
            "try: app(sys.argv[1:], prog_name='seqtool')\n"
            "except SystemExit as done: assert done.code == 0, done.code\n"
            "import torch; print(torch.get_num_threads())")
    args = ["--threads", "1", "build-vocab", str(corpus), "--kind", "char", "-o", str(tmp_path / "tok")]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items()
                               if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SEQTOOL_THREADS")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "1"
