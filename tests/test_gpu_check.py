"""benchmarks/gpu_check.py: without CUDA it says so in one line and exits 0; --dry-run runs its paths on the
CPU (a fast subset here; the whole dry run takes minutes, see benchmarks/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_without_cuda_one_line_and_exit_0():
    done = run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("no CUDA device")


def test_dry_run_executes_the_paths_on_the_cpu(tmp_path):
    done = run("--dry-run", "--only", "sdpa,pinned,adamw", "--keep", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("gpu_check: CPU") and lines[-1].startswith("gpu_check: 0 failed")
    assert [line.split()[0] for line in lines[1:-1]] == ["fused", "pinned", "fused"]
    assert all(" OK " in line for line in lines[1:-1])
    assert run("--dry-run", "--only", "warp-drive").returncode == 2
