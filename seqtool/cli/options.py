"""Shared Annotated options, so every command spells them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from seqtool.cli.console import GlobalOptions, Reporter

Workspace = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", help="Workspace directory (also accepted before the command)."),
]
Device = Annotated[
    Optional[str],
    typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps (auto: CUDA, then MPS, then CPU)."),
]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed (recorded in the run).")]
ConfigFile = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML config (e.g. recipes_data/configs/*.yaml or WS/seqtool.yaml)."),
]
Sets = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override any config key: --set optim.lr=0.001 (repeatable; wins over all)."),
]
Adapter = Annotated[
    Optional[str],
    typer.Option("--adapter", help="Apply the LoRA adapter adapters/NAME (seqtool finetune --lora-rank) "
                 "on top of the published weights.", show_default=False),
]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
EncodingErrors = Annotated[
    str,
    typer.Option("--encoding-errors", help="strict | replace | ignore: what to do with invalid UTF-8."),
]


def global_options(ctx: typer.Context) -> GlobalOptions:
    """The options given before the command name (defaults when none were)."""
    root = ctx.find_root()
    obj = root.obj
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions()


def reporter(ctx: typer.Context) -> Reporter:
    g = global_options(ctx)
    return Reporter(log_format=g.log_format, quiet=g.quiet)


def pick(local, ctx: typer.Context, name: str):
    """A command's own option wins over the same global option given before the command."""
    return local if local is not None else getattr(global_options(ctx), name)


def require_workspace(local: Path | None, ctx: typer.Context) -> Path:
    from seqtool.errors import InputError

    ws = pick(local, ctx, "workspace")
    if ws is None:
        raise InputError("no workspace given", hint="pass -w/--workspace DIR")
    return Path(ws)
