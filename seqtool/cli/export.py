"""`seqtool export`: write a workspace's model in the Hugging Face (GPT-2 + PEFT) or ONNX format."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from seqtool.cli.options import Json, Workspace, reporter, require_workspace

Opt = typer.Option


def export(
    ctx: typer.Context,
    output: Annotated[Path, Opt("--output", "-o", help="The directory to write: new, or empty (files "
                                "already there are never overwritten).", show_default=False)],
    workspace: Workspace = None,
    fmt: Annotated[Literal["hf", "onnx"], Opt("--format", help="hf: a GPT-2 directory for transformers' "
                                              "AutoModelForCausalLM/AutoTokenizer (decoder Transformers with "
                                              "learned positions, pre-LN, char/word or GPT-2 tokenizers) | "
                                              "onnx: model.onnx (Transformers: decoder, encoder, "
                                              "translation), ids in, logits out.")] = "hf",
    adapter: Annotated[Optional[str], Opt("--adapter", help="Also export the LoRA adapter adapters/NAME: "
                                          "hf writes it as a PEFT adapter in DIR/adapters/NAME/; onnx "
                                          "merges it into the weights.", show_default=False)] = None,
    merge: Annotated[bool, Opt("--merge", help="hf: fold --adapter into the exported weights instead of "
                               "writing a PEFT adapter.")] = False,
    as_json: Json = False,
) -> None:
    """Export a workspace's model for other tools: Hugging Face GPT-2 (+ PEFT adapters) or ONNX.

    Example: seqtool export -w runs/recipes --format hf -o exported/recipes-gpt2
    """
    from seqtool.export import export as run_export

    summary = run_export(require_workspace(workspace, ctx), fmt, output, adapter, merge)
    if as_json:
        from seqtool.storage import json_line

        sys.stdout.write(json_line(summary, indent=2) + "\n")
        return
    what = f" with adapter {adapter!r}" + (" merged" if summary["merged"] else " (PEFT)") if adapter else ""
    reporter(ctx).info(f"exported {summary['workspace']} ({summary['kind']}){what} as {fmt} to {output}: "
                       f"{', '.join(summary['files'])}")
