"""`--quantize int8`: dynamic int8 quantization of a model's linear layers for CPU decoding.

Each nn.Linear becomes torch's DynamicQuantizedLinear: weights stored as int8 (one scale per tensor),
activations quantized per call from their observed range, products accumulated in int32 (fbgemm/x86 or
qnnpack kernels). Embeddings, LayerNorms, attention products and the recurrent cells stay float.
torch marks `torch.ao.quantization` deprecated (its successor, torchao's `quantize_`, is not a
dependency here); in torch 2.13 quantize_dynamic still works, and its warnings are silenced here.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from seqtool.errors import InputError


def quantize_int8(model: nn.Module, device: torch.device | str = "cpu") -> Any:
    """The model (eval mode, on the CPU) with every nn.Linear replaced by an int8 dynamic one."""
    if torch.device(device).type != "cpu":
        raise InputError(f"--quantize int8 runs on the CPU only, not on {device}",
                         hint="add --device cpu, or leave out --quantize on a GPU")
    if "fbgemm" not in torch.backends.quantized.supported_engines and \
            "qnnpack" not in torch.backends.quantized.supported_engines:
        raise InputError("this torch build has no int8 kernels (fbgemm or qnnpack)",
                         hint="leave out --quantize")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)
