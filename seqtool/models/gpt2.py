"""Import a local Hugging Face GPT-2-family directory (`hf:DIR`) into seqtool's decoder Transformer.

GPT-2 (Radford et al. 2019) is the decoder arch with learned positions, pre-LN, GELU (tanh
approximation), biases and an output layer tied to the token embedding. The traps of its checkpoints:
- its Conv1D layers (c_attn, c_proj, c_fc) store weights as (in, out): transposed to nn.Linear's (out, in);
- q, k and v are one fused projection c_attn, which maps onto the Transformer's fused `qkv` as is;
- keys may carry a `transformer.` prefix or not; lm_head.weight is the tied wte; attn.bias and
  attn.masked_bias are causal-mask buffers, not weights;
- it has no pad token: <|endoftext|> pads, so the loss ignores padding by an ignore index
  (IGNORE_INDEX), never by that id, or the model would learn never to end a text;
- nanoGPT-style configs pad vocab_size past the tokenizer (50304 for 50257 tokens): the padding rows
  stay, and `step` never lets a decoder pick them (TransformerConfig.tokenizer_size);
- three dropouts: resid_pdrop, attn_pdrop and embd_pdrop map onto dropout, attn_dropout, embed_dropout.
No network access: every file must already be in DIR.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from seqtool.errors import InputError
from seqtool.models.transformer import Transformer, TransformerConfig

PREFIX = "hf:"
IGNORE_INDEX = -100  # the loss's ignore index for an imported GPT-2: not a token id
ACTIVATIONS = {"gelu_new": "gelu-tanh", "gelu_pytorch_tanh": "gelu-tanh", "gelu_fast": "gelu-tanh",
               "gelu": "gelu", "relu": "relu"}
SEQTOOL_TOKENIZER = "seqtool_tokenizer"  # in an exported directory: the tokenizer in seqtool's format
NEEDED = ("config.json", "model.safetensors or pytorch_model.bin",
          "tokenizer.json, or vocab.json and merges.txt")


def is_hf_source(source: str) -> bool:
    return str(source).startswith(PREFIX)


def hf_directory(source: str) -> Path:
    """`hf:DIR` → DIR, checked to hold everything the import needs (the error lists what is missing)."""
    directory = Path(str(source)[len(PREFIX):]).expanduser()
    if not directory.is_dir():
        raise InputError(f"{source}: {directory} is not a directory",
                         hint=f"hf:DIR must be a local directory holding {'; '.join(NEEDED)}")
    missing = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    if not any((directory / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors or pytorch_model.bin")
    if not ((directory / "tokenizer.json").is_file()
            or ((directory / "vocab.json").is_file() and (directory / "merges.txt").is_file())):
        missing.append("tokenizer.json, or vocab.json and merges.txt")
    if missing:
        raise InputError(f"{directory} is missing {'; '.join(missing)}",
                         hint="seqtool never downloads: copy the model's files into that directory, e.g. "
                              "from a machine with `huggingface-cli download gpt2 --local-dir DIR`")
    return directory


def config_from_hf(hf: dict[str, Any]) -> TransformerConfig:
    """config.json (GPT2Config) → the decoder TransformerConfig of the same shape."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise InputError(f"config.json has model_type {hf.get('model_type')!r}; only GPT-2-family "
                         "checkpoints (model_type gpt2) can be imported")
    for key in ("n_layer", "n_head", "n_embd", "vocab_size"):
        if not isinstance(hf.get(key), int):
            raise InputError(f"config.json lacks the integer {key!r}", hint="is this a GPT-2 config?")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise InputError(f"config.json: activation_function {activation!r} is not supported",
                         hint=f"supported: {', '.join(ACTIVATIONS)}")
    if abs(float(hf.get("layer_norm_epsilon", 1e-5)) - 1e-5) > 1e-12:
        raise InputError(f"config.json: layer_norm_epsilon {hf['layer_norm_epsilon']} is not GPT-2's 1e-5")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("scale_attn_weights") is False:
        raise InputError("config.json: non-standard attention scaling is not supported")
    return TransformerConfig(
        arch="decoder", vocab_size=hf["vocab_size"], n_layers=hf["n_layer"], n_heads=hf["n_head"],
        d_model=hf["n_embd"], d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
        dropout=float(hf.get("resid_pdrop", 0.1)), attn_dropout=float(hf.get("attn_pdrop", 0.1)),
        embed_dropout=float(hf.get("embd_pdrop", 0.1)),
        positions="learned", max_len=hf.get("n_positions", 1024),
        norm_first=True, activation=ACTIVATIONS[activation], tie=True, bias=True, pad_id=IGNORE_INDEX)


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, else pytorch_model.bin through torch.load(weights_only=True): no code runs."""
    path = directory / "model.safetensors"
    try:
        if path.is_file():
            from safetensors.torch import load_file

            return load_file(str(path))
        path = directory / "pytorch_model.bin"
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - safetensors, pickle and torch each raise their own
        raise InputError(f"{path} cannot be read as weights ({str(err).splitlines()[0][:200]})",
                         hint="a checkpoint that needs code to unpickle is refused on purpose") from None


# Conv1D stores (in, out); nn.Linear wants (out, in).
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# GPT-2's modules in each block → the decoder block's (also the export's map, seqtool/export/hf.py)
PER_LAYER = {"ln_1": "self_attn_norm", "attn.c_attn": "self_attn.qkv", "attn.c_proj": "self_attn.out",
             "ln_2": "ff_norm", "mlp.c_fc": "ff.up", "mlp.c_proj": "ff.down"}


def parameter_names(n_layers: int) -> dict[str, str]:
    """GPT-2's parameter names (without the `transformer.` prefix) → the decoder Transformer's."""
    names = {"wte.weight": "decoder.embed.weight", "wpe.weight": "decoder.pos.weight",
             "ln_f.weight": "decoder.norm.weight", "ln_f.bias": "decoder.norm.bias"}
    for i in range(n_layers):
        for theirs, ours in PER_LAYER.items():
            for suffix in ("weight", "bias"):
                names[f"h.{i}.{theirs}.{suffix}"] = f"decoder.layers.{i}.{ours}.{suffix}"
    return names


def convert_state(hf_state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """GPT-2 parameter names and layouts → the decoder Transformer's."""
    state = {k.removeprefix("transformer."): v for k, v in hf_state.items()}
    out: dict[str, torch.Tensor] = {}
    for theirs, ours in parameter_names(n_layers).items():
        if theirs not in state:
            raise InputError(f"the checkpoint lacks {theirs}", hint="it does not match its config.json")
        tensor = state[theirs]
        out[ours] = tensor.t().contiguous() if theirs.endswith(CONV1D) else tensor
    head = hf_state.get("lm_head.weight")
    if head is not None and not torch.equal(head, out["decoder.embed.weight"]):
        raise InputError("the checkpoint's lm_head is not tied to its token embedding",
                         hint="only GPT-2 models with tied output embeddings can be imported")
    out["head.weight"] = out["decoder.embed.weight"]
    return out


def load_hf_gpt2(source: str) -> tuple[Transformer, Any]:
    """`hf:DIR` → (a decoder Transformer holding GPT-2's weights, its GPT2Tokenizer)."""
    from seqtool.data.gpt2_tokenizer import from_hf_dir
    from seqtool.data.tokenizers import load_tokenizer

    directory = hf_directory(source)
    try:
        hf_config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{directory / 'config.json'} is not valid JSON ({err})") from None
    cfg = config_from_hf(hf_config)
    # A seqtool export of a char/word model carries seqtool's own tokenizer files (seqtool/export/hf.py)
    own = directory / SEQTOOL_TOKENIZER
    tokenizer = load_tokenizer(own) if own.is_dir() else from_hf_dir(directory)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise InputError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model only {cfg.vocab_size}",
                         hint="the tokenizer files belong to another model")
    # A config padded past the tokenizer (nanoGPT's 50304): those ids decode to nothing, never pick them
    model = Transformer(dataclasses.replace(cfg, tokenizer_size=tokenizer.vocab_size))
    state = convert_state(read_hf_weights(directory), cfg.n_layers)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, tensor in state.items():
        if shapes.get(key) != tuple(tensor.shape):
            raise InputError(f"{key} has shape {tuple(tensor.shape)}; config.json implies {shapes.get(key)}",
                             hint="the weights do not match config.json")
    model.load_state_dict(state, strict=True)
    return model, tokenizer
