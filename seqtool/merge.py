"""Merging a LoRA adapter (finetune --merge): a new workspace whose plain weights are the base with
adapters/NAME folded in, so that every command reads it without knowing about adapters.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from seqtool.errors import InputError
from seqtool.models import load_published, lora
from seqtool.source_model import TRAINABLE_KINDS
from seqtool.workspace import Workspace, is_workspace


def merge_adapter(ws_path: Path, adapter: str, out_path: Path, force: bool = False) -> Workspace:
    """Write a workspace at `out_path` whose weights are the base with adapters/NAME merged in; one that
    holds another model is replaced only with `force` (an earlier merge of the same adapter always)."""
    ws = Workspace.open(ws_path, kinds=TRAINABLE_KINDS, purpose="merging an adapter")
    if Path(out_path).resolve() == ws.path.resolve():
        raise InputError("--merge writes a new workspace", hint="pass -o DIR different from -w")
    if not force and is_workspace(out_path):
        old = Workspace.open(out_path)
        merged = old.config.get("merged_adapter") or {}
        again = merged.get("adapter") == adapter and _same_path(str(merged.get("workspace")), str(ws.path))
        if not again and (old.has_weights() or old.checkpoint_dirs()):
            raise InputError(f"-o {out_path} holds a trained {old.kind} model; merging would replace it",
                             hint="pass a new -o directory, or --force to replace it")
    model = load_published(ws, adapter=adapter)
    lora.strip_lora(model)
    config = {**ws.config, "merged_adapter": {"workspace": str(ws.path), "adapter": adapter}}
    out = Workspace.create(out_path, ws.kind, config, data_files=ws.meta.get("data"))
    shutil.copytree(ws.tokenizer_dir, out.tokenizer_dir, dirs_exist_ok=True)
    out.publish(model.state_dict(), model.arch(), {"merged_from": str(ws.path), "adapter": adapter})
    return out


def _same_path(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()
