"""The shipped completion scripts match what the app generates now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_completion_scripts_are_fresh():
    spec = importlib.util.spec_from_file_location("gen", ROOT / "completions" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for name, text in gen.scripts().items():
        shipped = (ROOT / "completions" / name).read_text()
        assert shipped == text, f"completions/{name} is stale: run python completions/generate.py"
