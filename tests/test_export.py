"""seqtool export: GPT-2 directories that transformers loads and decodes exactly as seqtool does (and that
seqtool imports back), PEFT adapters that peft loads with the same outputs, ONNX graphs that onnxruntime
runs to the same logits, and one clear line for everything that cannot be exported. The optional packages
(transformers, peft, onnxscript, onnxruntime) are skipped cleanly when absent."""

from __future__ import annotations

import json

import pytest
import torch

from seqtool.data.tokenizers import train_tokenizer
from seqtool.models import load_published
from seqtool.models.lora import LoraConfig, adapter_state_dict, add_lora, lora_modules, resolve_targets
from seqtool.models.transformer import Transformer, TransformerConfig
from seqtool.workspace import Workspace

TEXTS = ["Beat the eggs with the sugar until pale.", "Fold in the flour, then bake 20 minutes.",
         "Whisk 2 eggs; add milk & butter!\nServe warm.", "Crème brûlée — très bien."] * 20
GPT2_SHAPE = {"positions": "learned", "norm_first": True, "activation": "gelu-tanh", "max_len": 64}


def _noisy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random biases and norms, so that a wrongly mapped tensor cannot hide behind zeros and ones."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return model


def _workspace(path, tok, kind="transformer-lm", tokenizers=None, **arch):
    torch.manual_seed(0)
    cfg = {"arch": "decoder", "vocab_size": tok.vocab_size, "n_layers": 2, "n_heads": 2, "d_model": 16,
           "d_ff": 32, "dropout": 0.0, **GPT2_SHAPE, **arch}
    model = _noisy(Transformer(TransformerConfig(**cfg)), 1)
    ws = Workspace.create(path, kind, {})
    ws.save_tokenizers(tokenizers or {"": tok})
    ws.publish(model.state_dict(), model.arch())
    return ws


def _with_adapter(ws, targets=("q", "v", "o", "mlp"), rank=2):
    """Add adapters/default to `ws`: LoRA on `targets` with random (non-zero) B."""
    model = load_published(ws)
    config = LoraConfig(rank=rank, alpha=6.0, targets=list(targets))
    add_lora(model, resolve_targets("transformer", config.targets), config)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in lora_modules(model).values():
            module.lora_b.copy_(torch.randn(module.lora_b.shape, generator=generator) * 0.2)
    ws.publish_adapter("default", adapter_state_dict(model), {**config.to_dict(), "family": "transformer"})
    return ws


@pytest.fixture(scope="module")
def gpt2_ws(tmp_path_factory):
    """A workspace as finetune --from hf:DIR leaves it: GPT-2's byte-level BPE, pad = ignore index."""
    tokenizers = pytest.importorskip("tokenizers")
    from seqtool.data.gpt2_tokenizer import from_hf_dir
    from seqtool.models.gpt2 import IGNORE_INDEX

    directory = tmp_path_factory.mktemp("bpe")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(directory))
    tok = from_hf_dir(directory)
    return _with_adapter(_workspace(tmp_path_factory.mktemp("ws") / "gpt2", tok, pad_id=IGNORE_INDEX,
                                    tokenizer_size=tok.vocab_size, vocab_size=304))


@pytest.fixture(scope="module")
def char_ws(tmp_path_factory):
    tok = train_tokenizer("char", TEXTS[:3], user_symbols=["<b>"])  # é, ü... never seen: <unk>
    return _workspace(tmp_path_factory.mktemp("ws") / "char", tok)


def _export(cli, ws, out, *extra):
    result = cli(["export", "-w", ws.path, "-o", out, *extra])
    assert result.exit_code == 0, result.stderr
    return out


def _logits(model, ids):
    with torch.no_grad():
        return model.logits({"inputs": ids}) if hasattr(model, "arch") else model(ids).logits


def _greedy_seqtool(cli, ws, prompt, n, *extra):
    result = cli(["generate", "-w", ws.path, "--prompt", prompt, "--greedy", "--max-tokens", n,
                  "--format", "jsonl", *extra])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["ids"]


def _until(ids, eos):
    return ids[:ids.index(eos)] if eos in ids else ids


def test_gpt2_export_gives_transformers_the_same_logits_tokens_and_greedy_text(gpt2_ws, cli, tmp_path):
    transformers = pytest.importorskip("transformers")
    from seqtool.data.tokenizers import load_tokenizer

    out = _export(cli, gpt2_ws, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in out.iterdir()}
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    tok = load_tokenizer(gpt2_ws.tokenizer_dir)
    ours = load_published(gpt2_ws)
    ids = torch.randint(0, tok.vocab_size, (2, 13), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(_logits(hf, ids), _logits(ours, ids), rtol=0, atol=1e-5)
    for text in TEXTS[:4] + ["unseen wørds ☃ 123"]:
        assert hf_tok(text)["input_ids"] == tok.encode(text), text
    # greedy decoding: seqtool generate (the bare prompt, as transformers takes it) == transformers' generate;
    # the padded ids 300..303 are never generated by either (generation_config's suppress_tokens)
    prompt = "Beat the"
    expected = _greedy_seqtool(cli, gpt2_ws, prompt, 12, "--no-newline-prefix")
    inputs = torch.tensor([tok.encode(prompt)])
    new = hf.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=12, do_sample=False,
                      pad_token_id=tok.eos_id)[0, inputs.size(1):].tolist()
    assert _until(new, tok.eos_id) == _until(expected, tok.eos_id)
    assert len(_until(expected, tok.eos_id)) > 3


def test_an_exported_gpt2_imports_back_with_the_same_weights(gpt2_ws, cli, tmp_path):
    pytest.importorskip("tokenizers")
    from seqtool.models.gpt2 import load_hf_gpt2

    out = _export(cli, gpt2_ws, tmp_path / "hf")
    again, tok = load_hf_gpt2(f"hf:{out}")
    ours = load_published(gpt2_ws)
    for key, value in ours.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    assert again.cfg.tokenizer_size == ours.cfg.tokenizer_size == tok.vocab_size


def test_a_char_model_exported_imports_back_with_its_own_tokenizer(char_ws, cli, tmp_path):
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.models.gpt2 import load_hf_gpt2

    out = _export(cli, char_ws, tmp_path / "hf")
    again, tok = load_hf_gpt2(f"hf:{out}")
    for key, value in load_published(char_ws).state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    ours = load_tokenizer(char_ws.tokenizer_dir)
    assert tok.kind == "char" and tok.encode(TEXTS[2]) == ours.encode(TEXTS[2])


def test_peft_loads_the_adapter_onto_the_export_with_the_same_outputs(gpt2_ws, cli, tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")

    out = _export(cli, gpt2_ws, tmp_path / "hf", "--adapter", "default")
    config = json.loads((out / "adapters/default/adapter_config.json").read_text())
    assert config["rank_pattern"] == {"attn.c_attn": 4}  # q and v of rank 2: one adapter of rank 4
    base = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, 300, (2, 11), generator=torch.Generator().manual_seed(4))
    plain = _logits(base, ids)
    adapted = peft.PeftModel.from_pretrained(base, out / "adapters/default").eval()
    expected = _logits(load_published(gpt2_ws, adapter="default"), ids)
    assert (expected - plain).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(_logits(adapted, ids), expected, rtol=0, atol=1e-5)
    merged = _export(cli, gpt2_ws, tmp_path / "merged", "--adapter", "default", "--merge")
    assert not (merged / "adapters").exists()
    model = transformers.AutoModelForCausalLM.from_pretrained(merged).eval()
    torch.testing.assert_close(_logits(model, ids), expected, rtol=0, atol=1e-5)


def test_the_peft_weights_are_seqtools_chunk_adapters_side_by_side(gpt2_ws, tmp_path):
    """Without peft: lora_B·lora_A · alpha/r of PEFT's config equals LoRALinear.delta(), layer by layer."""
    from safetensors.torch import load_file

    from seqtool.export.hf import save_peft_adapter
    from seqtool.models.gpt2 import CONV1D, parameter_names

    save_peft_adapter(*gpt2_ws.load_adapter("default"), tmp_path)
    state = load_file(str(tmp_path / "adapter_model.safetensors"))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    model = load_published(gpt2_ws, adapter="default")
    names = {ours.removesuffix(".weight"): theirs.removesuffix(".weight")
             for theirs, ours in parameter_names(2).items() if theirs.endswith(CONV1D)}
    for name, module in lora_modules(model).items():
        theirs = names[name]
        key = f"base_model.model.transformer.{theirs}"
        short = theirs.split(".", 2)[2]  # attn.c_attn
        r = config["rank_pattern"].get(short, config["r"])
        scale = config["alpha_pattern"].get(short, config["lora_alpha"]) / r
        delta = state[f"{key}.lora_B.weight"] @ state[f"{key}.lora_A.weight"] * scale  # (out, in)
        torch.testing.assert_close(delta, module.delta(), rtol=0, atol=1e-6)


def test_char_tokenizer_exports_as_tokenizers_json_with_the_same_ids_and_greedy_ids(char_ws, cli, tmp_path):
    transformers = pytest.importorskip("transformers")
    from seqtool.data.tokenizers import load_tokenizer

    out = _export(cli, char_ws, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    tok = load_tokenizer(char_ws.tokenizer_dir)
    for text in ["Beat the eggs", "  two  spaces\n\nand <b>bold</b> ünknown ☃", ""]:
        assert hf_tok(text)["input_ids"] == tok.encode(text), text
    assert hf_tok.decode(tok.encode("Serve warm.\nBeat")) == "Serve warm.\nBeat"
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    expected = _greedy_seqtool(cli, char_ws, "Whisk", 15)  # after a newline, as seqtool reads lines
    inputs = torch.tensor([[tok.newline_id, *tok.encode("Whisk")]])
    new = hf.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=15,
                      do_sample=False)[0, inputs.size(1):].tolist()
    assert _until(new, tok.eos_id) == _until(expected, tok.eos_id)


def test_word_tokenizer_exports_with_the_same_ids_and_text(tmp_path):
    transformers = pytest.importorskip("transformers")
    from seqtool.export.hf_tokenizer import save_hf_tokenizer

    tok = train_tokenizer("word", TEXTS[:3], lowercase=True)
    save_hf_tokenizer(tok, tmp_path, model_max_length=64)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    for text in ["Hot-water -- sponge cake!", "Beat  the\teggs\n\nServe WARM.", "unseen words_here"]:
        assert hf_tok(text)["input_ids"] == tok.encode(text), text
        assert hf_tok.decode(tok.encode(text)) == tok.decode(tok.encode(text)), text


def test_onnx_graphs_give_the_torch_logits(char_ws, cli, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")

    out = _export(cli, char_ws, tmp_path / "lm", "--format", "onnx")
    session = ort.InferenceSession(str(out / "model.onnx"))
    model = load_published(char_ws)
    for shape in ((1, 1), (3, 9)):
        ids = torch.randint(5, 20, shape, generator=torch.Generator().manual_seed(5))
        (logits,) = session.run(None, {"input_ids": ids.numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), _logits(model, ids), rtol=0, atol=1e-4)
    meta = json.loads((out / "export.json").read_text())
    assert meta["special_ids"]["eos"] == 3 and (out / "tokenizer/tokenizer.json").is_file()

    tok = train_tokenizer("char", TEXTS[:3])
    ws = _workspace(tmp_path / "mt", tok, kind="transformer-mt", tokenizers={"src": tok, "tgt": tok},
                    arch="encoder-decoder", positions="sinusoidal", norm_first=False, activation="relu")
    out = _export(cli, ws, tmp_path / "mt.onnx", "--format", "onnx")
    session = ort.InferenceSession(str(out / "model.onnx"))
    model = load_published(ws)
    src = torch.randint(5, 20, (2, 7), generator=torch.Generator().manual_seed(6))
    src[1, 4:] = tok.pad_id  # a padded source row
    tgt = torch.randint(5, 20, (2, 5), generator=torch.Generator().manual_seed(7))
    (logits,) = session.run(None, {"src_ids": src.numpy(), "tgt_ids": tgt.numpy()})
    with torch.no_grad():
        expected = model.logits({"src": src, "tgt_in": tgt})
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=0, atol=1e-4)
    # the masked LM's graph (not exported again here, to keep this file quick): the module that is exported
    # gives seqtool's logits, padding masked as in seqtool
    from seqtool.export.onnx import graph_of

    mlm = load_published(_workspace(tmp_path / "mlm", tok, kind="transformer-mlm", arch="encoder"))
    graph, names = graph_of(mlm)
    with torch.no_grad():
        torch.testing.assert_close(graph(src), _logits(mlm, src), rtol=0, atol=1e-5)
    assert names == ("input_ids",)


def _refused(cli, args, *words):
    result = cli(["export", *map(str, args)])
    assert result.exit_code == 2, result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr
    return lines[0]


def test_what_cannot_be_exported_is_refused_in_one_line_and_nothing_is_written(char_ws, cli, tmp_path):
    tok = train_tokenizer("char", TEXTS[:3])
    out = tmp_path / "out"
    _refused(cli, ["-w", tmp_path / "nope", "-o", out], "does not exist")
    paper = _workspace(tmp_path / "paper", tok, positions="sinusoidal", norm_first=False, activation="relu")
    _refused(cli, ["-w", paper.path, "-o", out], "sinusoidal positions", "post-LN", "--positions learned")
    mlm = _workspace(tmp_path / "mlm", tok, kind="transformer-mlm", arch="encoder")
    _refused(cli, ["-w", mlm.path, "-o", out], "masked language model", "LayerNorm")
    Workspace.create(tmp_path / "rnn", "rnn-lm", {})
    _refused(cli, ["-w", tmp_path / "rnn", "-o", out, "--format", "onnx"], "rnn-lm", "Transformers")
    _refused(cli, ["-w", tmp_path / "rnn", "-o", out], "rnn-lm", "GPT-2")
    _refused(cli, ["-w", char_ws.path, "-o", out, "--merge"], "--merge needs --adapter")
    _refused(cli, ["-w", char_ws.path, "-o", out, "--adapter", "none"], "no adapter 'none'")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # no half-written export is left
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _refused(cli, ["-w", char_ws.path, "-o", out], "not empty", "never writes over")
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    _refused(cli, ["-w", char_ws.path, "-o", char_ws.path / "inside"], "inside workspace")


def test_sentencepiece_tokenizers_are_refused_not_approximated(cli, tmp_path):
    tok = train_tokenizer("bpe", TEXTS, vocab_size=60)
    ws = _workspace(tmp_path / "bpe", tok)
    _refused(cli, ["-w", ws.path, "-o", tmp_path / "out"], "bpe (sentencepiece) tokenizer", "--format onnx")
    assert not (tmp_path / "out").exists()
