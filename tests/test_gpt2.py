"""GPT-2 import: a tiny random GPT2LMHeadModel saved by Hugging Face transformers gives the same logits
and the same tokens in seqtool (skipped when transformers is not installed)."""

from __future__ import annotations

import json

import pytest
import torch

from seqtool.errors import InputError
from seqtool.models import gpt2

TEXTS = ["Beat the eggs with the sugar until pale.", "Fold in the flour, then bake 20 minutes.",
         "Whisk 2 eggs; add milk & butter!\nServe warm.", "Crème brûlée — très bien."] * 20


def _tiny_bpe(directory):
    tokenizers = pytest.importorskip("tokenizers")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(directory))
    return directory


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    directory = _tiny_bpe(tmp_path_factory.mktemp("gpt2"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     eos_token_id=0, bos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random biases and norms, so a wrongly mapped tensor cannot hide behind zeros
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(directory)
    return directory


def test_logits_match_transformers(hf_dir):
    transformers = pytest.importorskip("transformers")
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    model, _ = gpt2.load_hf_gpt2(f"hf:{hf_dir}")
    model.eval()
    ids = torch.randint(0, 300, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(ids).logits
        ours = model.logits({"inputs": ids})
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)
    state = model.start()  # the KV-cache path gives the same last-position logits
    with torch.no_grad():
        last, state = model.step(ids[:, :10], state)
        last, state = model.step(ids[:, 10:], state)
    torch.testing.assert_close(last, expected[:, -1], rtol=0, atol=1e-4)


def test_pytorch_model_bin_and_prefixless_keys(hf_dir, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(hf_dir / "model.safetensors"))
    bare = {k.removeprefix("transformer."): v for k, v in state.items()}
    for name in ("config.json", "vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((hf_dir / name).read_bytes())
    torch.save(bare, tmp_path / "pytorch_model.bin")
    a, _ = gpt2.load_hf_gpt2(f"hf:{hf_dir}")
    b, _ = gpt2.load_hf_gpt2(f"hf:{tmp_path}")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_tokenizer_matches_transformers_and_round_trips(hf_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    from seqtool.data.tokenizers import load_tokenizer

    reference = transformers.GPT2TokenizerFast.from_pretrained(hf_dir)
    _, tok = gpt2.load_hf_gpt2(f"hf:{hf_dir}")
    for text in TEXTS[:4] + ["unseen wørds ☃ 123", "a<|endoftext|>b"]:
        assert tok.encode(text) == reference(text)["input_ids"], text
        assert tok.decode(tok.encode(text)) == text.replace("<|endoftext|>", "")
    assert tok.eos_id == tok.pad_id == reference.eos_token_id
    assert not tok.unknown("anything at all ☃")
    tok.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.kind == "gpt2-bpe" and again.encode(TEXTS[2]) == tok.encode(TEXTS[2])
    assert again.newline_id == tok.newline_id
    reference.save_pretrained(tmp_path / "hf")  # a directory with tokenizer.json instead
    from seqtool.data.gpt2_tokenizer import from_hf_dir

    assert from_hf_dir(tmp_path / "hf").encode(TEXTS[2]) == tok.encode(TEXTS[2])


def test_padding_with_end_of_text_keeps_end_of_text_in_the_loss(hf_dir):
    model, tok = gpt2.load_hf_gpt2(f"hf:{hf_dir}")
    assert model.cfg.pad_id != tok.eos_id  # the loss ignores IGNORE_INDEX, not <|endoftext|>
    ids = torch.tensor([tok.encode("Serve warm.", add_eos=True)])
    _, loss_all = model({"inputs": ids[:, :-1], "targets": ids[:, 1:]})
    _, loss_without_eos = model({"inputs": ids[:, :-2], "targets": ids[:, 1:-1]})
    assert loss_all.item() != pytest.approx(loss_without_eos.item())


def test_missing_files_are_listed_and_nothing_is_downloaded(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        gpt2.hf_directory(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(InputError) as err:
        gpt2.hf_directory(f"hf:{tmp_path}")
    message = str(err.value)
    assert "config.json" in message and "model.safetensors or pytorch_model.bin" in message
    assert "vocab.json and merges.txt" in message and "never downloads" in message
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(InputError, match="model_type"):
        gpt2.load_hf_gpt2(f"hf:{tmp_path}")


def test_finetune_from_hf_dir_then_generate_evaluate_and_attention_map(hf_dir, cli, tmp_path, tmp_text):
    """The issue's flow from the CLI: import a local GPT-2 directory, fine-tune it (full and LoRA), and
    use the result with generate, evaluate and attention-map."""
    from seqtool.workspace import Workspace

    data = tmp_text("\n".join(TEXTS), name="recipes.txt")
    run = ["--data", str(data), "--max-steps", "3", "--eval-every", "3", "--batch-size", "2", "--context",
           "16", "--device", "cpu"]
    for name, extra in (("full", []), ("lora", ["--lora-rank", "4", "--lora-targets", "q,v"])):
        ws = tmp_path / name
        result = cli(["finetune", "--from", f"hf:{hf_dir}", "-w", str(ws), *run, *extra])
        assert result.exit_code == 0, result.stderr
        assert "cannot represent" not in result.stderr  # byte-level BPE spells every string
        assert Workspace.open(ws).kind == "transformer-lm"
        adapter = ["--adapter", "default"] if extra else []
        out = cli(["generate", "-w", str(ws), *adapter, "--prompt", "Beat the", "--max-tokens", "8",
                   "--seed", "1"])
        assert out.exit_code == 0 and out.stdout.startswith("Beat the"), out.stderr
        out = cli(["evaluate", "-w", str(ws), *adapter, "--json"])  # the fixed validation text
        assert out.exit_code == 0 and json.loads(out.stdout)["model"]["ppl"] > 1, out.stderr
        out = cli(["attention-map", "-w", str(ws), *adapter, "--source", "Fold in the flour", "-o",
                   str(tmp_path / f"{name}.png"), "--dump", "npy"])
        assert out.exit_code == 0 and (tmp_path / f"{name}.npy").is_file(), out.stderr
    grown = cli(["finetune", "--from", f"hf:{hf_dir}", "-w", str(tmp_path / "x"), *run, "--extend-vocab"])
    assert grown.exit_code == 0, grown.stderr  # nothing unknown: nothing to extend


def _gpt2_dir(bpe_dir, directory, scale_padding: float = 1.0, **config):
    """A tiny GPT-2 saved by transformers next to a copy of `bpe_dir`'s tokenizer files."""
    transformers = pytest.importorskip("transformers")
    directory.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (directory / name).write_bytes((bpe_dir / name).read_bytes())
    torch.manual_seed(0)
    base = dict(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4, eos_token_id=0,
                bos_token_id=0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**base, **config})).eval()
    with torch.no_grad():  # padding rows (ids ≥ 300) made the likeliest next tokens
        model.transformer.wte.weight[300:] *= scale_padding
    model.save_pretrained(directory)
    return directory


def test_padded_vocab_never_decodes_a_padding_id(hf_dir, tmp_path, cli, tmp_text):
    """nanoGPT pads vocab_size past the tokenizer (50304 for 50257): greedy, sampling and beam search
    must never pick a padding id, while the logits stay those of transformers."""
    transformers = pytest.importorskip("transformers")
    from seqtool.decoding import DecodeConfig, beam_search, sample

    padded = _gpt2_dir(hf_dir, tmp_path / "padded", scale_padding=100.0, vocab_size=320)
    model, tok = gpt2.load_hf_gpt2(f"hf:{padded}")
    model.eval()
    assert tok.vocab_size == 300 and model.cfg.vocab_size == 320
    reference = transformers.GPT2LMHeadModel.from_pretrained(padded).eval()
    ids = torch.tensor([tok.encode("Beat the eggs")])
    with torch.no_grad():
        expected = reference(ids).logits[:, -1]
        last, _ = model.step(ids, model.start())
    torch.testing.assert_close(last[:, :300], expected[:, :300], rtol=0, atol=1e-4)
    assert expected[:, 300:].max() > expected[:, :300].max()  # unmasked, a padding id would win
    assert torch.isneginf(last[:, 300:]).all()
    for cfg in (DecodeConfig(greedy=True, max_tokens=10), DecodeConfig(temperature=10, max_tokens=30)):
        (hyp,) = sample(model, model.start(), ids, cfg, torch.Generator().manual_seed(1))
        assert max(hyp.ids) < 300
    (beams,) = beam_search(model, model.start(), ids, DecodeConfig(beam=3, nbest=3, max_tokens=10),
                           tok.eos_id)
    assert all(max(h.ids) < 300 for h in beams)
    ws, data = tmp_path / "ws", tmp_text("\n".join(TEXTS), name="recipes.txt")
    result = cli(["finetune", "--from", f"hf:{padded}", "-w", ws, "--data", data, "--max-steps", "1",
                  "--batch-size", "2", "--context", "16", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    for seed in (1, 2, 3):  # the issue: exit 2 "token id … is out of range" on 2 seeds of 3
        out = cli(["generate", "-w", ws, "--temperature", "10", "--max-tokens", "30", "--seed", seed])
        assert out.exit_code == 0, out.stderr
    out = cli(["generate", "-w", ws, "--prompt", "Beat the", "--no-newline-prefix", "--max-tokens", "5"])
    assert out.exit_code == 0 and out.stdout.startswith("Beat the"), out.stderr


def test_all_three_gpt2_dropouts_are_honoured(hf_dir, tmp_path):
    from seqtool.models.attention import MultiHeadAttention

    hf = _gpt2_dir(hf_dir, tmp_path / "drop", resid_pdrop=0.1, attn_pdrop=0.2, embd_pdrop=0.3)
    model, _ = gpt2.load_hf_gpt2(f"hf:{hf}")
    assert {m.dropout for m in model.modules() if isinstance(m, MultiHeadAttention)} == {0.2}
    assert model.decoder.drop.p == 0.3 and {b.drop.p for b in model.decoder.layers} == {0.1}
    # attn_pdrop alone must make training-mode outputs random, as it does in transformers
    attn_only = _gpt2_dir(hf_dir, tmp_path / "attn", resid_pdrop=0.0, attn_pdrop=0.5, embd_pdrop=0.0)
    model, _ = gpt2.load_hf_gpt2(f"hf:{attn_only}")
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model.logits({"inputs": ids}), model.logits({"inputs": ids}))


def test_no_newline_prefix_continues_as_transformers_generate(hf_dir):
    """generate conditions on a newline before the prompt; --no-newline-prefix gives transformers'
    greedy continuation of the bare prompt."""
    transformers = pytest.importorskip("transformers")
    from seqtool.decoding import DecodeConfig, TextStream

    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    model, tok = gpt2.load_hf_gpt2(f"hf:{hf_dir}")
    model.eval()
    prompt = "Beat the eggs"
    for prefix, ids in ((False, tok.encode(prompt)), (True, [tok.newline_id, *tok.encode(prompt)])):
        expected = reference.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=12,
                                      pad_token_id=tok.eos_id)[0, len(ids):].tolist()
        cfg = DecodeConfig(greedy=True, max_tokens=12)
        stream = TextStream(model, tok, prompt, cfg, newline_prefix=prefix)
        list(stream)
        assert stream.sample.ids == expected[:len(stream.sample.ids)] and stream.sample.ids, prefix
