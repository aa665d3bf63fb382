"""`seqtool info`: what a workspace holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from seqtool.cli.options import Json, Workspace, require_workspace


def info(ctx: typer.Context, workspace: Workspace = None, as_json: Json = False) -> None:
    """Show what a workspace holds: kind, tokenizer, parameters, data, last step, best metric.

    Example: seqtool info -w runs/recipes --json
    """
    from seqtool.workspace import Workspace as WS

    ws = WS.open(require_workspace(workspace, ctx))
    summary = describe(ws)
    if as_json:
        from seqtool.storage import json_line

        sys.stdout.write(json_line(summary, indent=2) + "\n")  # strict: a NaN best value is null
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.items():
        if isinstance(value, (dict, list)):
            value = _short(value)
        table.add_row(key, str(value))
    Console(highlight=False).print(table)


def describe(ws: Any) -> dict[str, Any]:
    from seqtool.storage import count_parameters

    status = ws.status
    out: dict[str, Any] = {
        "workspace": str(ws.path),
        "kind": ws.kind,
        "format_version": ws.meta.get("format_version"),
        "seqtool_version": ws.meta.get("seqtool_version"),
        "torch_version": ws.meta.get("torch_version"),
        "created": ws.meta.get("created"),
    }
    out["tokenizer"] = _tokenizers(ws.tokenizer_dir)
    if ws.weights_file.exists():
        out["parameters"] = count_parameters(ws.weights_file)
        arch = ws.architecture()
        out["model"] = {k: v for k, v in arch.items() if k != "published"}
    else:
        out["parameters"] = None
    out["data"] = ws.meta.get("data", [])
    if (ws.config.get("data") or {}).get("mix"):  # several corpora sampled by weight (data/mixing.py)
        from seqtool.data.mixing import describe_mix

        out["mix"] = describe_mix(ws.config["data"]["mix"])
    ckpts = ws.checkpoint_dirs()
    out["last_step"] = status.get("step", int(ckpts[-1].name.split("-")[1]) if ckpts else 0)
    out["checkpoints"] = [p.name for p in ckpts]
    if "best_value" in status:
        out["best"] = {"metric": status.get("best_metric"), "value": status.get("best_value"),
                       "step": status.get("best_step")}
    out["status"] = status.get("state", "trained" if ws.weights_file.exists() else "untrained")
    tuned = ws.config.get("finetune")
    if tuned:  # a fine-tuned workspace: where it came from, and how
        lora = tuned.get("lora")
        out["finetuned_from"] = {"source": tuned.get("source"),
                                 "method": f"LoRA rank {lora['rank']}" if lora else "full",
                                 "promote_if_better": bool(tuned.get("promote_if_better"))}
    adapters = [_adapter(ws.adapter_file(name)) for name in ws.adapters()]
    if adapters:
        out["adapters"] = adapters
    return out


def _adapter(path: Path) -> dict[str, Any]:
    """An adapter's name, LoRA settings, trainable parameters, file size and published metric."""
    from seqtool.storage import count_parameters

    try:
        config = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    published = config.get("published") or {}
    return {"name": path.stem, "rank": config.get("rank"), "alpha": config.get("alpha"),
            "targets": config.get("targets"), "parameters": count_parameters(path),
            "bytes": path.stat().st_size, "step": published.get("step"),
            published.get("metric", "metric"): published.get("value")}


def _tokenizers(root: Path) -> Any:
    def one(path: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        vocab = meta.get("vocab")
        return {"kind": meta.get("kind"), "vocab_size": meta.get("vocab_size", len(vocab) if vocab else None)}

    if (root / "tokenizer.json").exists():
        return one(root)
    sides = {side: one(root / side) for side in ("src", "tgt") if (root / side).exists()}
    return sides or None


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value) if value else "-"
    if isinstance(value, dict):
        if "path" in value and "sha256" in value:
            return f"{value['path']} ({value.get('bytes', '?')} bytes, sha256 {str(value['sha256'])[:12]}…)"
        return ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                         for k, v in value.items())
    return str(value)
