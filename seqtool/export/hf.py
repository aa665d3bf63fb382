"""A decoder Transformer → a Hugging Face GPT-2 directory; its LoRA adapters → PEFT adapters.

The inverse of models/gpt2.py's import. GPT-2 (Radford et al. 2019) is one point in the decoder's design
space: learned positions, pre-LN, biases, an output layer tied to the token embedding, LayerNorm eps
1e-5. A workspace elsewhere in that space cannot be written as GPT-2 and is refused by `gpt2_config`,
which names the first difference. Writing needs only safetensors (no transformers, no peft): config.json
and adapter_config.json are plain JSON in the layout those libraries read.

PEFT: seqtool adapts chunks of the fused q/k/v projection separately (models/lora.py: "q,v" gives the
query and the value rows their own rank-r pair). PEFT adapts a whole layer with one pair, so G chunk
adapters become one adapter of rank G·r whose A stacks the G A's and whose B is block-structured (B_g in
the rows of chunk g and the columns of pair g, zeros elsewhere): B·A then equals seqtool's update
exactly. PEFT scales by lora_alpha/rank, so that layer's alpha becomes G·alpha (alpha_pattern).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from seqtool.errors import InputError
from seqtool.models.gpt2 import CONV1D, PER_LAYER, SEQTOOL_TOKENIZER, parameter_names

# seqtool's activation → GPT2Config.activation_function (each the same function in both)
ACTIVATIONS = {"gelu-tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
# the decoder block's linear layers → GPT-2's module names, as PEFT's target_modules match them
TARGET_MODULES = {ours.rsplit(".", 1)[-1]: theirs for theirs, ours in PER_LAYER.items() if "." in ours}
WHY_GPT2 = "GPT-2 has learned positions, pre-LN, biases and a tied output layer"


def gpt2_config(arch: dict[str, Any], specials: dict[str, int]) -> dict[str, Any]:
    """model.json of a decoder → GPT-2's config.json, or an InputError naming what GPT-2 cannot hold."""
    if arch.get("model") != "transformer" or arch.get("arch") != "decoder":
        raise InputError(f"a {arch.get('model')} {arch.get('arch', '')} model is not a decoder Transformer "
                         "and cannot be written as GPT-2".replace("  ", " "),
                         hint="--format hf exports train-transformer --arch decoder and finetune workspaces")
    differences = []
    if arch.get("positions") != "learned":
        differences.append(f"{arch.get('positions')} positions (which also scale the embeddings by "
                           "√d_model), not learned ones")
    if not arch.get("norm_first", True):
        differences.append("post-LN blocks, not pre-LN")
    if arch.get("activation") not in ACTIVATIONS:
        differences.append(f"activation {arch.get('activation')}")
    if not arch.get("bias", True):
        differences.append("no biases")
    if not arch.get("tie", True):
        differences.append("an output layer not tied to the embedding")
    if differences:
        raise InputError(f"this decoder cannot be written as GPT-2: it has {'; '.join(differences)}",
                         hint=f"{WHY_GPT2}: train with --positions learned --norm-first (and a gelu, "
                              "gelu-tanh or relu activation), or export --format onnx")
    vocab = int(arch["vocab_size"])
    drop = float(arch.get("dropout", 0.1))
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": vocab, "n_positions": int(arch["max_len"]), "n_embd": int(arch["d_model"]),
        "n_layer": int(arch["n_layers"]), "n_head": int(arch["n_heads"]), "n_inner": int(arch["d_ff"]),
        "activation_function": ACTIVATIONS[arch["activation"]], "layer_norm_epsilon": 1e-5,
        "resid_pdrop": drop, "embd_pdrop": _or(arch.get("embed_dropout"), drop),
        "attn_pdrop": _or(arch.get("attn_dropout"), drop), "initializer_range": 0.02,
        "scale_attn_weights": True, "tie_word_embeddings": True, "use_cache": True,
        "bos_token_id": specials["bos"], "eos_token_id": specials["eos"],
        **({"pad_token_id": specials["pad"]} if specials["pad"] != specials["eos"] else {}),
    }


def _or(value: float | None, default: float) -> float:
    return default if value is None else float(value)


def gpt2_state(state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """The decoder Transformer's weights → GPT-2's names and (Conv1D) layouts; the tied head is wte."""
    out = {}
    for theirs, ours in parameter_names(n_layers).items():
        tensor = state[ours]
        out[f"transformer.{theirs}"] = (tensor.t() if theirs.endswith(CONV1D) else tensor).contiguous()
    return out


def generation_config(config: dict[str, Any], tokenizer_size: int) -> dict[str, Any]:
    """generation_config.json; ids past the tokenizer (a padded vocabulary) are never generated, as in
    seqtool's `step`."""
    padded = list(range(tokenizer_size, config["vocab_size"])) if tokenizer_size > 0 else []
    return {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
            **({"pad_token_id": config["pad_token_id"]} if "pad_token_id" in config else {}),
            **({"suppress_tokens": padded} if padded else {})}


def save_gpt2(model: torch.nn.Module, tokenizer: Any, directory: Path) -> None:
    """Write config.json, generation_config.json, model.safetensors and the tokenizer files."""
    from safetensors.torch import save_file

    from seqtool.export.hf_tokenizer import save_hf_tokenizer

    arch = model.arch()
    specials = {"bos": tokenizer.bos_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id}
    config = gpt2_config(arch, specials)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_file(gpt2_state(state, config["n_layer"]), str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    _write_json(directory / "config.json", config)
    _write_json(directory / "generation_config.json",
                generation_config(config, int(arch.get("tokenizer_size") or 0)))
    save_hf_tokenizer(tokenizer, directory, model_max_length=config["n_positions"])
    if tokenizer.kind != "gpt2-bpe":  # so that finetune --from hf:DIR reads it back as the same kind
        tokenizer.save(directory / SEQTOOL_TOKENIZER)


def save_peft_adapter(state: dict[str, torch.Tensor], adapter: dict[str, Any], directory: Path) -> None:
    """adapters/NAME of a GPT-2-shaped workspace → PEFT's adapter_config.json + adapter_model.safetensors."""
    from safetensors.torch import save_file

    rank, alpha = int(adapter["rank"]), float(adapter["alpha"])
    out: dict[str, torch.Tensor] = {}
    modules: dict[str, int] = {}  # GPT-2 module name → G, the number of chunk adapters folded into it
    for key in sorted(k for k in state if k.endswith(".lora_a")):
        name = key.removesuffix(".lora_a")  # decoder.layers.{i}.self_attn.qkv
        parts = name.split(".")
        if parts[:2] != ["decoder", "layers"] or parts[-1] not in TARGET_MODULES:
            raise InputError(f"adapter weight {key} has no GPT-2 counterpart",
                             hint="only adapters on a decoder's self-attention and MLP can be exported")
        a, b = state[key], state[f"{name}.lora_b"]  # (G, r, in), (G, O, r)
        groups, chunk = a.size(0), b.size(1)
        fused = 3 if parts[-1] == "qkv" else 1
        chunks = _chunks(adapter.get("targets", []), parts[-1], groups)
        big_b = b.new_zeros(fused * chunk, groups * rank)  # (out, G·r): B_g in chunk g's rows only
        for g, c in enumerate(chunks):
            big_b[c * chunk:(c + 1) * chunk, g * rank:(g + 1) * rank] = b[g]
        theirs = f"base_model.model.transformer.h.{parts[2]}.{TARGET_MODULES[parts[-1]]}"
        out[f"{theirs}.lora_A.weight"] = a.reshape(groups * rank, -1).contiguous()  # (G·r, in)
        out[f"{theirs}.lora_B.weight"] = big_b
        modules[TARGET_MODULES[parts[-1]]] = groups
    if not out:
        raise InputError("the adapter holds no weights",
                         hint="train it again with seqtool finetune --lora-rank")
    save_file(out, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    wider = {name: g for name, g in modules.items() if g > 1}
    _write_json(directory / "adapter_config.json", {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": None,
        "r": rank, "lora_alpha": alpha, "lora_dropout": float(adapter.get("dropout", 0.0)),
        "target_modules": sorted(modules), "fan_in_fan_out": True, "bias": "none", "use_rslora": False,
        "rank_pattern": {name: g * rank for name, g in wider.items()},
        "alpha_pattern": {name: g * alpha for name, g in wider.items()},
        "inference_mode": True, "modules_to_save": None,
    })


def _chunks(targets: list[str], module: str, groups: int) -> list[int]:
    """Which of the fused projection's chunks the G adapters of `module` adapt, in lora.py's order
    (sorted chunk numbers): q → 0, k → 1, v → 2 of qkv."""
    if module != "qkv":
        return [0]
    chunks = sorted({"q": 0, "k": 1, "v": 2}[t] for t in targets if t in ("q", "k", "v"))
    if len(chunks) != groups:
        raise InputError(f"the adapter's targets {targets} do not match its {groups} q/k/v adapters",
                         hint="adapters/NAME.json does not belong to its weights")
    return chunks


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
