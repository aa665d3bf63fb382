"""Shared fixtures: `cli` drives the real Typer app, `tmp_text` writes a small input file."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import settings
from typer.testing import CliRunner

from seqtool.cli import app

# CI runs the property tests with a fixed seed, so a submission's result does not depend on luck;
# locally they explore new examples on every run.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def cli() -> Callable:
    """cli(["tokenize", "-t", tok], input="text\\n") → click Result (.exit_code, .stdout, .stderr)."""
    runner = CliRunner()

    def invoke(args: Sequence[object], input: str | bytes | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


@pytest.fixture
def tmp_text(tmp_path: Path) -> Callable[..., Path]:
    """tmp_text("a\\nb\\n", name="corpus.txt") → the path of a new file (str: UTF-8; bytes: as is)."""

    def write(content: str | bytes, name: str = "corpus.txt") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        path.write_bytes(content)
        return path

    return write


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Toy models run fastest on one thread, and do not suffer when other processes share the CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
