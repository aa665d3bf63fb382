"""`seqtool export`: a workspace's model in a format other tools read.

- hf:   a decoder Transformer → a GPT-2 directory (config.json, generation_config.json, model.safetensors,
        tokenizer.json, tokenizer_config.json) for transformers' AutoModelForCausalLM / AutoTokenizer;
        with an adapter, also adapters/NAME/ in PEFT's format (or the adapter merged in, `merge`);
- onnx: a Transformer (decoder, encoder or encoder-decoder) → model.onnx, with the seqtool tokenizer
        beside it (tokenizer/) and export.json naming the inputs, outputs and special ids.
The output is written to a temporary directory next to DIR and renamed into place, so DIR is either
complete or absent; a DIR that exists and holds anything is never written into.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from seqtool.errors import InputError

FORMATS = ("hf", "onnx")
# Why a masked LM (train-transformer --arch encoder) has no BERT-family equivalent; see export_hf.
NOT_BERT = ("BERT-family models normalise the embeddings (an embedding LayerNorm) and pass the hidden "
            "states through a dense+GELU+LayerNorm transform before the output layer; seqtool's encoder "
            "has neither, so no BERT, RoBERTa or XLM-R config reproduces its outputs")


def export(ws_path: Path, fmt: str, out: Path, adapter: str | None = None, merge: bool = False
           ) -> dict[str, Any]:
    """Export workspace `ws_path` to directory `out`; → a summary (format, output, files, ...)."""
    from seqtool.workspace import Workspace

    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if merge and not adapter:
        raise InputError("--merge needs --adapter NAME", hint="name the adapter to fold into the weights")
    ws = Workspace.open(ws_path)
    _check_output(out, ws.path)
    _check_kind(ws, fmt)
    merged = bool(adapter) and (merge or fmt == "onnx")  # ONNX has no adapters: always merged
    peft = (adapter, *ws.load_adapter(adapter)) if adapter and not merged else None  # read before writing
    model, tokenizer = _load(ws, adapter if merged else None)
    write = export_hf if fmt == "hf" else export_onnx
    with _staging(out) as staging:
        summary = write(ws, model, tokenizer, staging, peft)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return {"format": fmt, "output": str(out), "workspace": str(ws.path), "kind": ws.kind,
            "adapter": adapter, "merged": merged, **summary, "files": files}


def export_hf(ws: Any, model: Any, tokenizer: Any, directory: Path, peft: tuple | None) -> dict[str, Any]:
    """GPT-2 into `directory`; `peft` = (name, weights, config) of an adapter to write beside it."""
    from seqtool.export.hf import save_gpt2, save_peft_adapter

    save_gpt2(model, tokenizer, directory)
    if peft:
        name, state, config = peft
        target = directory / "adapters" / name
        target.mkdir(parents=True)
        save_peft_adapter(state, config, target)
    return {"model": "gpt2"}


def export_onnx(ws: Any, model: Any, tokenizer: Any, directory: Path, peft: None) -> dict[str, Any]:
    from seqtool.export.onnx import save_onnx

    graph = save_onnx(model, directory / "model.onnx")
    shutil.copytree(ws.tokenizer_dir, directory / "tokenizer")
    names = ("pad", "unk", "bos", "eos", "mask", "newline")
    specials = {name: getattr(tokenizer, f"{name}_id") for name in names}
    (directory / "export.json").write_text(json.dumps(
        {"model": "onnx", "kind": ws.kind, **graph, "special_ids": specials,
         "tokenizer": "tokenizer/ (seqtool's format: seqtool tokenize reads it)"}, indent=2) + "\n",
        encoding="utf-8")
    return {"model": "onnx"}


def _check_kind(ws: Any, fmt: str) -> None:
    """Refuse, before loading anything, a workspace whose kind `fmt` cannot hold."""
    from seqtool.kinds import KINDS, LM_KINDS, MLM_KINDS

    transformer = KINDS[ws.kind].family == "transformer" if ws.kind in KINDS else False
    if fmt == "onnx" and not transformer:  # the RNNs pack padded sequences, which the exporter does not take
        raise InputError(f"workspace {ws.path} holds a {ws.kind} model; --format onnx exports Transformers "
                         "(transformer-lm, transformer-mlm, transformer-mt)",
                         hint="train one with seqtool train-transformer")
    if fmt == "hf" and ws.kind in MLM_KINDS:
        raise InputError(f"workspace {ws.path} holds a masked language model, which has no Hugging Face "
                         f"equivalent: {NOT_BERT}", hint="export it with --format onnx")
    if fmt == "hf" and not (transformer and ws.kind in LM_KINDS):
        raise InputError(f"workspace {ws.path} holds a {ws.kind} model; --format hf writes decoder "
                         "Transformers (GPT-2)",
                         hint="--format onnx exports Transformer translation models"
                         if transformer else "train one with seqtool train-transformer --arch decoder")


def _load(ws: Any, adapter: str | None) -> tuple[Any, Any]:
    """The published model on the CPU (with `adapter` merged in when given) and its tokenizer."""
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.models import load_published
    from seqtool.models.lora import strip_lora

    model = load_published(ws, "cpu", adapter)
    if adapter:
        strip_lora(model)
    if ws.kind in ("transformer-mt", "seq2seq"):
        return model.eval(), load_tokenizer(ws.tokenizer_dir, "tgt")
    return model.eval(), load_tokenizer(ws.tokenizer_dir)


def _check_output(out: Path, workspace: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory", hint="-o takes a new directory")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; export never writes over files",
                         hint="pass -o with a new or empty directory")
    if out.resolve() == workspace.resolve() or workspace.resolve() in out.resolve().parents:
        raise InputError(f"{out} is inside workspace {workspace}", hint="export to a directory outside it")


class _staging:
    """A temporary directory beside `out` that becomes `out` when the block succeeds (and vanishes
    when it fails)."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        from seqtool.storage import temp_dir_beside

        self.tmp = temp_dir_beside(self.out)
        return self.tmp

    def __exit__(self, kind, *exc: object) -> None:
        if kind is None:
            if self.out.is_dir():
                self.out.rmdir()  # empty (checked before); a file appearing since makes this fail loudly
            self.tmp.rename(self.out)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
