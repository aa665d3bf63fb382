"""`seqtool embeddings`: a workspace's input token embeddings exported, or explored in the terminal
(nearest neighbours, analogies)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from seqtool.cli.options import Json, Workspace, reporter, require_workspace

Opt = typer.Option
FORMATS = ("tsv", "projector", "npy")  # seqtool.embeddings.FORMATS (here so that --help needs no torch)


def embeddings(
    ctx: typer.Context,
    workspace: Workspace = None,
    output: Annotated[Optional[str], Opt("--output", "-o", help="Export the table here ('-': stdout, tsv "
                                         "only).", show_default=False)] = None,
    fmt: Annotated[Literal[FORMATS], Opt("--format", help="tsv: token<TAB>values per line | projector: "
                                         "-o DIR gets vectors.tsv + metadata.tsv (TensorFlow Embedding "
                                         "Projector) | npy: a (V, D) float32 array + PATH.metadata.tsv.")]
    = "tsv",
    neighbours: Annotated[Optional[str], Opt("--neighbours", "--neighbors", help="Print the -k tokens "
                                             "nearest to this one (cosine).", show_default=False)] = None,
    analogy: Annotated[Optional[tuple[str, str, str]], Opt(help="A B C: A is to B as C is to ? (the -k "
                                                           "tokens nearest to B − A + C).",
                                                           show_default=False)] = None,
    k: Annotated[int, Opt("-k", help="How many tokens --neighbours and --analogy print.")] = 10,
    table: Annotated[Optional[Literal["src", "tgt"]], Opt(help="Translation models: the encoder's (src, "
                                                          "default) or the decoder's (tgt) table.",
                                                          show_default=False)] = None,
    as_json: Json = False,
) -> None:
    """Export a model's input token embeddings, or show nearest neighbours and analogies.

    Any workspace with a token embedding: RNN and Transformer LMs, masked LMs, classifiers, and
    translation models (--table src | tgt). Tokens are looked up as vocabulary pieces (or text that is
    one token). Neighbour and analogy lines are TOKEN<TAB>COSINE, best first; special tokens are left
    out, and so are the query's own tokens.

    Example: seqtool embeddings -w runs/recipes --neighbours chocolate -k 5

    Example: seqtool embeddings -w runs/recipes --analogy butter cake oil

    Example: seqtool embeddings -w runs/recipes --format projector -o runs/recipes/projector
    """
    from seqtool.errors import InputError

    report = reporter(ctx)
    if sum(x is not None for x in (output, neighbours, analogy)) != 1:
        raise InputError("give one of -o PATH, --neighbours WORD or --analogy A B C",
                         hint="e.g. seqtool embeddings -w WS --neighbours the")
    if output == "-" and fmt != "tsv":
        raise InputError(f"--format {fmt} writes files, not stdout", hint="pass -o PATH, or --format tsv")
    path = require_workspace(workspace, ctx)
    from seqtool import embeddings as core
    from seqtool.workspace import Workspace as Ws

    t = core.open_table(Ws.open(path), table)
    if output is not None:
        report.info(t.description)
        if output == "-":
            sys.stdout.write(core.tsv_text(t))
            return
        for written in core.export(t, fmt, Path(output)):
            report.info(f"wrote {written}")
        return
    rows = core.neighbours(t, neighbours, k) if neighbours is not None else core.analogy(t, *analogy, k)
    report.info(t.description)
    if as_json:
        sys.stdout.write(json.dumps([{"token": token, "cosine": c} for token, c in rows], ensure_ascii=False)
                         + "\n")
        return
    for token, c in rows:
        sys.stdout.write(f"{core.tsv_cell(token)}\t{c:.4f}\n")
