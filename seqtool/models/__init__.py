"""The model families: model.json's "model" name → the class (each has `from_arch(arch)`).

A new family is a file here plus one line in MODELS.
"""

from __future__ import annotations

from typing import Any

from seqtool.errors import InputError, out_of_memory
from seqtool.models.classifier import Classifier
from seqtool.models.forecaster import Forecaster
from seqtool.models.rnn_lm import RNNLM
from seqtool.models.seq2seq import Seq2Seq
from seqtool.models.transformer import Transformer

MODELS: dict[str, type] = {
    "rnn-lm": RNNLM,
    "seq2seq": Seq2Seq,
    "transformer": Transformer,
    "forecaster": Forecaster,
    "classifier": Classifier,
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
    try:
        model = load_model(arch)
        model.load_state_dict(state)
    except (InputError, TypeError, ValueError, KeyError, AttributeError, RuntimeError) as err:
        if out_of_memory(err) is not None:
            raise
        raise InputError(f"workspace {ws.path} is damaged: {_damage(err)}",
                         hint="restore it from a copy, or retrain into a new workspace") from None
    if adapter:
        from seqtool.models.lora import attach_adapter

        attach_adapter(model, *ws.load_adapter(adapter), where=f"adapter {adapter!r}")
    return model.to(device).eval() if device is not None else model.eval()


def _damage(err: Exception) -> str:
    """One line on why model.json and model.safetensors do not make a model."""
    if isinstance(err, InputError):  # a check of the model's config
        return f"model.json: {err.message}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    if lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1:
        return f"the weights do not fit model.json ({lines[1][:200]})"
    if isinstance(err, (TypeError, ValueError, AttributeError, KeyError)):
        return f"model.json does not describe a model ({type(err).__name__}: {lines[0][:200]})"
    return lines[0][:200]
