#!/usr/bin/env python3
"""Regenerate the shell completion scripts from the app: python completions/generate.py

The scripts call back into `seqtool` for the candidates, so they stay right as commands change; a
test fails when the files here differ from what this prints.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SHELLS = {"bash": "seqtool.bash", "zsh": "_seqtool", "fish": "seqtool.fish"}


def scripts() -> dict[str, str]:
    from typer._completion_shared import get_completion_script

    return {name: get_completion_script(prog_name="seqtool", complete_var="_SEQTOOL_COMPLETE", shell=shell)
            .rstrip("\n") + "\n" for shell, name in SHELLS.items()}


if __name__ == "__main__":
    for name, text in scripts().items():
        (HERE / name).write_text(text)
        print(f"wrote completions/{name}")
