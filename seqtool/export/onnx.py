"""Transformer workspaces → ONNX (torch.onnx.export, the dynamo exporter; needs `onnx` and `onnxscript`).

The graph is the full-sequence forward pass, with batch and length left dynamic:
- decoder:          input_ids (B, T) → logits (B, T, V), causal;
- encoder (MLM):    input_ids (B, T) → logits (B, T, V);
- encoder-decoder:  src_ids (B, S), tgt_ids (B, T) → logits (B, T, V); source padding (pad_id) is masked.
There is no KV cache in the graph: a caller decodes by running it on the whole prefix each step. Lengths
past the model's max_len positions are not defined. The RNN models (rnn-lm, seq2seq) are not exported:
their encoder packs padded sequences, which the exporter does not take.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqtool.errors import InputError

OPSET = 18


def _stack(stack: nn.Module, ids: Tensor, causal: bool, mask: Tensor | None = None,
           memory: list[tuple[Tensor, Tensor]] | None = None, memory_mask: Tensor | None = None) -> Tensor:
    """Stack.forward without the decoding state (ids (B, T) → (B, T, D)), in eval mode. Written out so
    that `causal` is a plain bool: Stack decides it from T at run time, which a traced graph cannot."""
    T = ids.size(1)
    pos = stack.pos(torch.arange(T, device=ids.device)) if hasattr(stack, "pos") else stack.pe[:T]
    x = stack.embed(ids)
    x = (x * stack.scale if stack.scale != 1.0 else x) + pos  # (B, T, D)
    for i, block in enumerate(stack.layers):
        x = block(x, mask, causal, None, i, memory[i] if memory else None, memory_mask, None, "")
    return stack.norm(x)


class LanguageModelGraph(nn.Module):
    """decoder or encoder: input_ids (B, T) → logits (B, T, V)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        m = self.model
        if m.cfg.arch == "decoder":
            return m.head(_stack(m.decoder, input_ids, causal=True))
        return m.head(_stack(m.encoder, input_ids, causal=False, mask=m.source_mask(input_ids)))


class TranslationGraph(nn.Module):
    """encoder-decoder: src_ids (B, S), tgt_ids (B, T) → logits (B, T, V) (teacher-forced)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, src_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        m = self.model
        src_mask = m.source_mask(src_ids)  # (B, 1, 1, S)
        memory = _stack(m.encoder, src_ids, causal=False, mask=src_mask)  # (B, S, D)
        cross = [block.cross_attn.memory_kv(memory) for block in m.decoder.layers]
        return m.head(_stack(m.decoder, tgt_ids, causal=True, memory=cross, memory_mask=src_mask))


def graph_of(model: nn.Module) -> tuple[nn.Module, tuple[str, ...]]:
    """The module to export and its input names."""
    from seqtool.models.transformer import Transformer

    if not isinstance(model, Transformer):
        raise InputError(f"a {model.arch().get('model')} model cannot be exported to ONNX",
                         hint="--format onnx exports Transformer workspaces (train-transformer, finetune)")
    if model.cfg.arch == "encoder-decoder":
        return TranslationGraph(model), ("src_ids", "tgt_ids")
    return LanguageModelGraph(model), ("input_ids",)


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's warnings and log lines about its own internals (e.g. torchvision's
    operators it skips): they say nothing about the user's model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def save_onnx(model: nn.Module, path: Path) -> dict[str, Any]:
    """Write model.onnx; → a description of its inputs and outputs (for export.json)."""
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it; say so before torch does
    except ImportError:
        raise InputError("--format onnx needs the onnx and onnxscript packages, which are not installed",
                         hint="pip install 'seqtool[export]'") from None
    graph, names = graph_of(model)
    graph.eval()
    length = min(8, model.cfg.max_len)
    examples = tuple(torch.full((2, length), 4, dtype=torch.long) for _ in names)
    batch = torch.export.Dim("batch")
    dims = {name: {0: batch, 1: torch.export.Dim(f"{name}_length", max=model.cfg.max_len)} for name in names}
    chatter = io.StringIO()  # the exporter prints its progress (stdout is for data)
    with contextlib.redirect_stdout(chatter), _quiet_exporter(), torch.no_grad():
        try:
            program = torch.onnx.export(graph, examples, input_names=list(names), output_names=["logits"],
                                        dynamic_shapes=dims, dynamo=True, opset_version=OPSET)
        except Exception as err:  # noqa: BLE001 - the exporter raises many kinds; report one line
            from seqtool.errors import RuntimeFailure

            raise RuntimeFailure(f"torch.onnx.export failed: {str(err).strip().splitlines()[0][:300]}",
                                 hint="run with --debug for the exporter's traceback") from err
        program.save(str(path))
    return {"inputs": {name: "int64 (batch, length)" for name in names},
            "outputs": {"logits": "float32 (batch, length, vocab)"}, "opset": OPSET,
            "max_length": model.cfg.max_len,
            # ids from here on are padding rows of the vocabulary, never a token: mask them when decoding
            "tokenizer_size": model.cfg.tokenizer_size or model.cfg.vocab_size}
