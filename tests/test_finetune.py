"""finetune: continued training, unknown text, --extend-vocab, --freeze, LoRA (resume, adapters,
merge), --promote-if-better, and hf:DIR errors. Tiny models built here; the CLI drives every run."""

from __future__ import annotations

import json

import pytest
import torch

from seqtool.data.tokenizers import load_tokenizer, train_tokenizer
from seqtool.models import load_published
from seqtool.models.transformer import Transformer, TransformerConfig
from seqtool.workspace import Workspace

TEXT = "\n".join(["beat the eggs with the sugar", "fold in the flour and bake",
                  "serve the cake warm with cream", "whisk the butter until pale"] * 12) + "\n"
NEW = "\n".join(["melt the chocolate gently", "pour the batter into the tin"] * 15) + "\n"


def _lm_workspace(path, kind="char", arch="decoder"):
    """A tiny GPT-2-shaped transformer-lm workspace (random weights), as train-transformer leaves one."""
    tok = train_tokenizer(kind, TEXT.splitlines())
    torch.manual_seed(0)
    cfg = TransformerConfig(arch=arch, vocab_size=tok.vocab_size, n_layers=2, n_heads=2, d_model=16, d_ff=32,
                            dropout=0.0, positions="learned", max_len=64, activation="gelu-tanh")
    model = Transformer(cfg)
    ws = Workspace.create(path, "transformer-lm", {"data": {"bptt": 16}})
    tok.save(ws.tokenizer_dir)
    ws.publish(model.state_dict(), model.arch())
    return ws


def _run(cli, *args):
    result = cli(["finetune", *map(str, args)])
    assert result.exit_code == 0, result.stderr + result.stdout
    return result


def _loss(ws_path, adapter=None):
    ws = Workspace.open(ws_path)
    model = load_published(ws, adapter=adapter)
    tok = load_tokenizer(ws.tokenizer_dir)
    ids = torch.tensor([tok.encode("melt the chocolate gently")])
    with torch.no_grad():
        return model({"inputs": ids[:, :-1], "targets": ids[:, 1:]})[1].item(), model, ids


COMMON = ("--max-steps", 6, "--eval-every", 3, "--batch-size", 4, "--context", 16, "--lr", 3e-3,
          "--device", "cpu")


def test_full_finetune_continues_training_and_reports_unknown_text(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW + "zesty jam!\n", name="new.txt")
    result = _run(cli, "--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", *COMMON)
    assert "cannot represent" in result.stderr and "'z'" in result.stderr and "'!'" in result.stderr
    assert "trainable parameters" in result.stderr
    ws = Workspace.open(tmp_path / "ft")
    assert ws.kind == "transformer-lm" and ws.status["best_step"] > 0
    assert ws.fixed_data("valid.txt").is_file()
    before, _, _ = _loss(tmp_path / "base")
    after, _, _ = _loss(tmp_path / "ft")
    assert after < before


def test_extend_vocab_grows_embeddings_and_tied_output(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW + "zesty jam!\n" * 10, name="new.txt")
    _run(cli, "--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", "--extend-vocab", *COMMON)
    old, new_tok = load_tokenizer(tmp_path / "base"), load_tokenizer(tmp_path / "ft")
    assert new_tok.vocab_size > old.vocab_size and not new_tok.unknown("zesty jam!")
    state, arch = Workspace.open(tmp_path / "ft").load_published()
    assert arch["vocab_size"] == new_tok.vocab_size
    assert state["decoder.embed.weight"].shape[0] == new_tok.vocab_size
    assert state["head.weight"].data_ptr() == state["decoder.embed.weight"].data_ptr()  # still tied


def test_freeze_keeps_the_named_parameters(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    _run(cli, "--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", "--freeze", "embeddings",
         "--freeze", "layers:0", *COMMON)
    a, _ = Workspace.open(tmp_path / "base").load_published()
    b, _ = Workspace.open(tmp_path / "ft").load_published()
    for key in ("decoder.embed.weight", "decoder.pos.weight", "decoder.layers.0.self_attn.qkv.weight"):
        assert torch.equal(a[key], b[key]), key
    key = "decoder.layers.1.self_attn.qkv.weight"
    assert not torch.equal(a[key], b[key])
    result = cli(["finetune", "--from", tmp_path / "base", "--data", new, "-w", tmp_path / "x",
                  "--freeze", "wheels", *COMMON])
    assert result.exit_code == 2 and "--freeze" in result.stderr


def test_seed_controls_the_lora_matrices(cli, tmp_path, tmp_text):
    """--seed decides the adapters' random A matrices, as it decides a trained model's initial weights."""
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")

    def adapter(name, seed):
        _run(cli, "--from", tmp_path / "base", "--data", new, "-w", tmp_path / name, "--lora-rank", 2,
             "--seed", seed, *COMMON[:1], 1, *COMMON[2:])
        return Workspace.open(tmp_path / name).load_adapter("default")[0]

    first, again, other = adapter("a", 7), adapter("b", 7), adapter("c", 8)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first if k.endswith("lora_a"))


def test_seed_controls_the_grown_vocabulary_rows(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW + "zesty jam!\n" * 10, name="new.txt")

    def weights(name):
        _run(cli, "--from", tmp_path / "base", "--data", new, "-w", tmp_path / name, "--extend-vocab",
             "--seed", 7, *COMMON[:1], 1, *COMMON[2:])
        return Workspace.open(tmp_path / name).load_published()[0]

    first, again = weights("a"), weights("b")
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_optimizer_schedule_clip_and_precision_options_reach_the_config(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    _run(cli, "--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", "--optimizer", "sgd",
         "--schedule", "cosine", "--warmup", 2, "--clip", 0.5, "--precision", "fp32", "--patience", 3,
         *COMMON[:1], 2, *COMMON[2:])
    config = Workspace.open(tmp_path / "ft").config["finetune"]
    assert config["optim"] | {"optimizer": "sgd", "schedule": "cosine", "warmup_steps": 2, "clip": 0.5} \
        == config["optim"]
    assert config["run"]["precision"] == "fp32" and config["run"]["patience"] == 3


def test_lora_adapter_resume_and_merge(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    args = ("--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", "--lora-rank", 4,
            "--lora-targets", "q,v,mlp", "--adapter-name", "cakes", "--checkpoint-every", 3)
    result = _run(cli, *args, *COMMON)
    assert "trainable parameters" in result.stderr
    ws = Workspace.open(tmp_path / "ft")
    base_a, _ = Workspace.open(tmp_path / "base").load_published()
    base_b, _ = ws.load_published()
    assert all(torch.equal(base_a[k], base_b[k]) for k in base_a)  # the base is untouched
    adapter, config = ws.load_adapter("cakes")
    assert config["rank"] == 4 and config["targets"] == ["q", "v", "mlp"]
    assert all(k.endswith(("lora_a", "lora_b")) for k in adapter)
    size = ws.adapter_file("cakes").stat().st_size
    assert size < ws.weights_file.stat().st_size / 2
    info = json.loads(cli(["info", "-w", str(tmp_path / "ft"), "--json"]).stdout)
    assert info["finetuned_from"] == {"source": str(tmp_path / "base"), "method": "LoRA rank 4",
                                      "promote_if_better": False}
    [described] = info["adapters"]
    assert described["name"] == "cakes" and described["targets"] == ["q", "v", "mlp"]
    assert described["parameters"] == sum(t.numel() for t in adapter.values()) and described["bytes"] == size
    ckpt = ws.checkpoint_dirs()[-1]
    assert all(k.endswith(("lora_a", "lora_b")) for k in ws.load_checkpoint(ckpt)[0])

    # the same command again: the round has finished, nothing to do
    result = _run(cli, *args, *COMMON)
    assert "nothing to do" in result.stderr
    # a raised --max-steps continues the round: two more steps from the adapter-only checkpoint
    result = _run(cli, *args, *COMMON[:1], 8, *COMMON[2:])
    assert "resumed from" in result.stderr and max(e.get("step", 0) for e in ws.read_metrics()) == 8

    with_adapter, model, ids = _loss(tmp_path / "ft", "cakes")
    base_loss, _, _ = _loss(tmp_path / "ft")
    assert with_adapter < base_loss
    _run(cli, "--merge", "-w", tmp_path / "ft", "--adapter", "cakes", "-o", tmp_path / "merged")
    merged, merged_model, _ = _loss(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged_model.logits({"inputs": ids}), model.logits({"inputs": ids}),
                                   rtol=1e-5, atol=1e-5)
    assert merged == pytest.approx(with_adapter, abs=1e-5)
    assert not Workspace.open(tmp_path / "merged").adapters()
    result = cli(["finetune", "--merge", "-w", tmp_path / "ft", "--adapter", "nope", "-o", tmp_path / "m2"])
    assert result.exit_code == 2 and "no adapter 'nope'" in result.stderr


def test_promote_if_better_records_the_decision(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    base = ("--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", "--promote-if-better")
    _run(cli, *base, *COMMON)
    events = [e for e in Workspace.open(tmp_path / "ft").read_metrics() if e.get("event") == "promote"]
    assert events[-1]["decision"] == "promoted" and events[-1]["candidate"] < events[-1]["baseline"]
    # a run that cannot improve (lr tiny, one step) keeps the published weights, and exits 0
    before, _ = Workspace.open(tmp_path / "ft").load_published()
    _run(cli, "--from", tmp_path / "ft", "--data", new, "-w", tmp_path / "ft", "--promote-if-better",
         "--max-steps", 1, "--lr", 1e-9, "--batch-size", 4, "--context", 16, "--set", "optim.optimizer=sgd")
    events = [e for e in Workspace.open(tmp_path / "ft").read_metrics() if e.get("event") == "promote"]
    assert events[-1]["decision"] == "kept"
    assert {"baseline", "candidate"} <= set(events[-1])
    # (compare tensors, not bytes: safetensors may order its header's metadata differently per write)
    after, _ = Workspace.open(tmp_path / "ft").load_published()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_hf_source_errors_list_what_is_missing(cli, tmp_path, tmp_text):
    new = tmp_text(NEW, name="new.txt")
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    result = cli(["finetune", "--from", f"hf:{tmp_path / 'gpt2'}", "--data", new, "-w", tmp_path / "ft",
                  "--max-steps", 1])
    assert result.exit_code == 2
    assert "model.safetensors or pytorch_model.bin" in result.stderr and "vocab.json" in result.stderr
    result = cli(["finetune", "--from", tmp_path / "nothing", "--data", new, "-w", tmp_path / "ft",
                  "--max-steps", 1])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_adapter_option_on_generate_and_evaluate(cli, tmp_path, tmp_text):
    """generate/evaluate --adapter NAME load base + adapter; an unknown name is a clear error."""
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    _run(cli, "--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ad", "--lora-rank", 2,
         "--lora-targets", "q,v", "--adapter-name", "pastry", *COMMON)
    ws = str(tmp_path / "ad")
    out = cli(["generate", "-w", ws, "--adapter", "pastry", "--max-tokens", "5", "--seed", "1"])
    assert out.exit_code == 0, out.stderr
    out = cli(["evaluate", "-w", ws, "--adapter", "pastry", "--data", str(new), "--json"])
    assert out.exit_code == 0, out.stderr
    bad = cli(["generate", "-w", ws, "--adapter", "nope", "--max-tokens", "5"])
    assert bad.exit_code == 2 and "no adapter 'nope'" in bad.stderr


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_continued_training_of_rnn_workspaces(cli, tmp_path, tmp_text, lora):
    """finetune --from an RNN LM and from an attention seq2seq workspace (full, and LoRA where useful)."""
    text = tmp_text(TEXT, name="lm.txt")
    run = ["--max-steps", "4", "--eval-every", "2", "--device", "cpu", "--seed", "1"]
    out = cli(["train-rnn", str(text), "-w", str(tmp_path / "lm"), "--kind", "char", "--hidden", "16",
               "--layers", "1", "--bptt", "8", "--batch-size", "4", *run])
    assert out.exit_code == 0, out.stderr
    if not lora:
        _run(cli, "--from", tmp_path / "lm", "--data", tmp_text(NEW, name="new.txt"), "-w", tmp_path / "lm2",
             "--max-steps", 3, "--eval-every", 3, "--batch-size", 4, "--context", 8, "--device", "cpu")
        assert Workspace.open(tmp_path / "lm2").kind == "rnn-lm"
        assert cli(["generate", "-w", str(tmp_path / "lm2"), "--max-tokens", "5"]).exit_code == 0
    src = tmp_text("\n".join(["the soup is hot", "add the salt", "stir the sauce"] * 8) + "\n", name="s.en")
    tgt = tmp_text("\n".join(["la soupe est chaude", "ajoutez le sel", "remuez la sauce"] * 8) + "\n",
                   name="s.fr")
    out = cli(["train-seq2seq", "-w", str(tmp_path / "mt"), "--src", str(src), "--tgt", str(tgt), "--kind",
               "word", "--embedding", "8", "--hidden", "16", "--batch-tokens", "64", *run])
    assert out.exit_code == 0, out.stderr
    extra = ("--lora-rank", 2, "--lora-targets", "q,k,o,out") if lora else ()
    _run(cli, "--from", tmp_path / "mt", "--src", src, "--tgt", tgt, "-w", tmp_path / "mt2", "--max-steps", 3,
         "--eval-every", 3, "--device", "cpu", *extra)
    ws = Workspace.open(tmp_path / "mt2")
    assert ws.kind == "seq2seq" and (ws.adapters() == ["default"]) == lora
    args = ["translate", "-w", str(tmp_path / "mt2"), *(["--adapter", "default"] if lora else [])]
    out = cli(args, input="the soup is hot\n")
    assert out.exit_code == 0 and len(out.stdout.splitlines()) == 1, out.stderr
