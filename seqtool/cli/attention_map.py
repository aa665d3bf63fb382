"""`seqtool attention-map`: where a translation model or a Transformer language model looks, as a
heatmap, a terminal grid or raw weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from seqtool.cli.options import Adapter, Device, Workspace, pick, reporter, require_workspace

Opt = typer.Option
FORMATS = ("png", "svg", "pdf", "terminal")
AXES = {"cross": ("source", "output"), "encoder": ("source (keys)", "source (queries)"),
        "decoder": ("target so far (keys)", "output"), "self": ("tokens (keys)", "tokens (queries)")}
ATTENTIONS = tuple(AXES)


def attention_map(
    ctx: typer.Context,
    workspace: Workspace = None,
    source: Annotated[Optional[str], Opt("--source", "-s", help="The source sentence (a language model: "
                                         "the text).")] = None,
    input: Annotated[Optional[str], Opt("--input", "-i", help="A file of source sentences (or texts): one "
                                        "map per line.")] = None,
    target: Annotated[Optional[str], Opt(
        "--target", help="Force this translation (else the model's own greedy translation).")] = None,
    output: Annotated[Optional[Path], Opt(
        "--output", "-o", help="map.png | .svg | .pdf (several lines: map-001.png, …); "
                               "default WS/attention/attention-NNN.png.")] = None,
    format: Annotated[Optional[Literal[FORMATS]], Opt(
        "--format", "-f", help="terminal: a coloured grid on stdout, for SSH (default: from -o's suffix, "
        "else png).")] = None,
    dump: Annotated[Optional[Literal["json", "npy"]], Opt(
        help="Also write the raw weights, (layers, heads, target, source): json | npy.")] = None,
    layer: Annotated[int, Opt(help="Which attention layer to draw (Transformer; -1: the last).")] = -1,
    head: Annotated[Optional[int], Opt(help="Which head to draw (Transformer; default: their mean).")] = None,
    attention: Annotated[Optional[Literal[ATTENTIONS]], Opt(
        "--attention", help="Translation: cross (output × source, the default) | encoder (source × source) | "
        "decoder (output × target so far), self-attention needing a Transformer. Transformer language "
        "models: self (token × token, causal for a decoder).", show_default=False)] = None,
    grid: Annotated[bool, Opt("--grid", help="Draw every head of --layer side by side instead of one head "
                              "or their mean.")] = False,
    adapter: Adapter = None,
    device: Device = None,
) -> None:
    """Draw the target × source attention of a translation workspace for a sentence, or the token ×
    token self-attention of a Transformer language model (decoder or encoder) over a text.

    Example: seqtool attention-map -w runs/enfr --source "the black cat eats" -o map.png
    """
    from seqtool.data.io import iter_lines
    from seqtool.errors import InputError
    from seqtool.kinds import MT_KINDS
    from seqtool.training import runtime
    from seqtool.translation import Translator, text_attention
    from seqtool.workspace import Workspace as WS

    if (source is None) == (input is None):
        raise InputError("pass exactly one of --source TEXT or --input FILE")
    if target is not None and input is not None:
        raise InputError("--target goes with --source (one sentence)")
    fmt = format or (output.suffix.lstrip(".").lower() if output is not None and output.suffix else "png")
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if grid and head is not None:
        raise InputError("--grid draws every head; leave out --head")
    ws_path = require_workspace(workspace, ctx)
    dev = runtime.pick_device(pick(device, ctx, "device"))
    ws = WS.open(ws_path)
    translating = ws.kind in MT_KINDS
    if translating:
        attention = attention or "cross"
        if attention == "self":
            raise InputError("--attention self is a language model's; a translation model has cross, encoder "
                             "and decoder attention")
        translator = Translator.from_workspace(ws_path, dev, adapter)
    else:
        attention = attention or "self"
        if attention != "self" or target is not None:
            raise InputError(f"workspace {ws_path} holds a language model: it has self-attention only",
                             hint="leave out --attention and --target, or pass --attention self")
        read_text = text_attention(ws_path, dev, adapter)
    sentences = [source] if source is not None else [s for s in iter_lines(input) if s.strip()]
    if not sentences:
        raise InputError(f"{input} holds no sentence", hint="one source sentence per line")
    report = reporter(ctx)
    for n, sentence in enumerate(sentences, 1):
        if translating:
            amap = translator.attention(sentence, target, which=attention)
        else:
            amap = read_text(sentence)
        if not 0 <= (layer if layer >= 0 else amap.weights.shape[0] + layer) < amap.weights.shape[0]:
            raise InputError(f"--layer {layer}: the model has {amap.weights.shape[0]} attention layer(s)")
        if head is not None and not 0 <= head < amap.weights.shape[1]:
            raise InputError(f"--head {head}: the model has {amap.weights.shape[1]} head(s)")
        matrices = list(amap.weights[layer]) if grid else [amap.matrix(layer, head)]  # each (rows, columns)
        base = _path(output, ws.attention_dir, n, len(sentences), fmt if fmt != "terminal" else "png")
        if fmt == "terminal":
            for h, matrix in enumerate(matrices):
                if grid:
                    print(f"head {h}")
                _print_terminal(amap, matrix)
        else:
            from seqtool.viz import plot_attention, plot_attention_grid

            draw = plot_attention_grid if grid else plot_attention
            title = f"{sentence}  →  {amap.translation}" if translating else sentence
            draw(amap.weights[layer] if grid else matrices[0], amap.source_tokens, amap.target_tokens, base,
                 title=title, axes=AXES[attention])
            report.info(f"wrote {base}")
        if dump:
            report.info(f"wrote {_dump(amap, base.with_suffix('.' + dump), dump)}")


def _path(output: Path | None, folder: Path, n: int, total: int, fmt: str) -> Path:
    if output is None:
        return folder / f"attention-{n:03d}.{fmt}"
    output = output if output.suffix else output.with_suffix("." + fmt)
    return output if total == 1 else output.with_name(f"{output.stem}-{n:03d}{output.suffix}")


def _print_terminal(amap, matrix) -> None:
    from rich.console import Console

    from seqtool.viz import terminal_attention

    table = terminal_attention(matrix, amap.source_tokens, amap.target_tokens)
    # Wide enough for the whole grid even when stdout is a pipe (rich would squeeze it to 80 columns).
    wide = Console(width=100_000)
    console = Console(highlight=False, width=max(wide.measure(table).maximum, Console().width))
    console.print(f"{' '.join(amap.source_tokens)}  →  {amap.translation}", markup=False)
    console.print(table)


def _dump(amap, path: Path, kind: str) -> Path:
    import json

    import numpy as np

    from seqtool.storage import atomic_write, atomic_write_with

    if kind == "npy":
        atomic_write_with(path, lambda tmp: np.save(open(tmp, "wb"), amap.weights))  # noqa: SIM115
    else:
        data = {"source_tokens": amap.source_tokens, "target_tokens": amap.target_tokens,
                "translation": amap.translation, "shape": list(amap.weights.shape),
                "weights": amap.weights.round(6).tolist()}
        atomic_write(path, json.dumps(data, ensure_ascii=False))
    return path
