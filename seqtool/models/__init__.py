"""The model families: model.json's "model" name → the class (each has `from_arch(arch)`).

A new family is a file here plus one line in MODELS.
"""

from __future__ import annotations

from typing import Any

from seqtool.errors import InputError
from seqtool.models.rnn_lm import RNNLM
from seqtool.models.seq2seq import Seq2Seq
from seqtool.models.transformer import Transformer

MODELS: dict[str, type] = {
    "rnn-lm": RNNLM,
    "seq2seq": Seq2Seq,
    "transformer": Transformer,
}


def load_model(arch: dict[str, Any]) -> Any:
    """The (untrained) model that model.json's `arch` describes; load the weights into it."""
    family = arch.get("model")
    if family not in MODELS:
        raise InputError(f"model.json names an unknown model family {family!r}",
                         hint=f"known: {', '.join(MODELS)}")
    return MODELS[family].from_arch(arch)


def load_published(ws: Any, device: Any = None, adapter: str | None = None) -> Any:
    """The workspace's published model (model.json + model.safetensors), with the LoRA adapter
    adapters/NAME on top when `adapter` is given, in eval mode on `device`."""
    state, arch = ws.load_published()
    model = load_model(arch)
    model.load_state_dict(state)
    if adapter:
        from seqtool.models.lora import attach_adapter

        attach_adapter(model, *ws.load_adapter(adapter), where=f"adapter {adapter!r}")
    return model.to(device).eval() if device is not None else model.eval()
