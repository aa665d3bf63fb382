"""Classification: labelled data and its errors, the classifier's pooling, scores against hand-computed
values, train-rnn / train-transformer / finetune --task classify (resume bit-identical, frozen body, LoRA,
hf GPT-2), and the classify and evaluate commands. Tiny models and data made here."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from seqtool.classification import confusion_matrix, scores
from seqtool.data.labelled import LabelledDataConfig, read_labelled
from seqtool.errors import InputError
from seqtool.models import load_published
from seqtool.models.classifier import Classifier, HeadConfig
from seqtool.models.rnn_lm import RNNLM, RNNLMConfig
from seqtool.models.transformer import Transformer, TransformerConfig
from seqtool.workspace import Workspace

WORDS = {"soup": ["broth", "leek", "simmer", "stock"], "cake": ["sugar", "flour", "bake", "frost"],
         "drink": ["ice", "lemon", "shake", "glass"]}


def _rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(WORDS)[i % 3]
        rows.append(" ".join(rng.choice(WORDS[label]) for _ in range(4)) + "\t" + label)
    return "\n".join(rows) + "\n"


@pytest.fixture
def data(tmp_text):
    return tmp_text(_rows(36, 0), "train.tsv"), tmp_text(_rows(12, 1), "valid.tsv")


def _ok(result):
    assert result.exit_code == 0, result.stderr + result.stdout
    return result


def _error(result, *needles):
    assert result.exit_code == 2, result.stderr + result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("summary")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr  # training adds a summary line
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


SMALL_RNN = ("--task", "classify", "--kind", "word", "--hidden", 16, "--n-layers", 1, "--batch-size", 8,
             "--eval-every", 4, "--device", "cpu")


# ---------------------------------------------------------------------------------------------
# scores


def test_scores_match_hand_computed_values():
    gold = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 2, 2]
    confusion = confusion_matrix(gold, predicted, 3)
    assert confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    s = scores(confusion, ["a", "b", "c"])
    assert s["accuracy"] == pytest.approx(4 / 6)
    # a: P 2/2, R 2/3, F1 0.8 · b: P 1/2, R 1/2, F1 0.5 · c: P 1/2, R 1/1, F1 2/3
    assert s["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert s["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert s["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert s["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_a_class_never_predicted_scores_zero_not_nan():
    s = scores(confusion_matrix([0, 1], [0, 0], 2), ["a", "b"])
    assert s["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


# ---------------------------------------------------------------------------------------------
# data


def test_tsv_and_jsonl_rows(tmp_text):
    tsv = tmp_text("a b\tx\n\nc\td\ty\n", "d.tsv")
    rows = read_labelled([str(tsv)], LabelledDataConfig())
    assert (rows.texts, rows.labels, rows.where) == (["a b", "c\td"], ["x", "y"], [f"{tsv}:1", f"{tsv}:3"])
    first = read_labelled([str(tsv)], LabelledDataConfig(label_column=1))
    assert first.labels == ["a b", "c"]
    jsonl = tmp_text('{"review": "good", "stars": 5}\n{"review": "bad", "stars": 1}\n', "d.jsonl")
    rows = read_labelled([str(jsonl)], LabelledDataConfig(text_key="review", label_key="stars"))
    assert (rows.texts, rows.labels) == (["good", "bad"], ["5", "1"])


@pytest.mark.parametrize(("content", "name", "needle"), [
    ("fine\tx\nno tab here\n", "d.tsv", ":2: no tab"),
    ("fine\tx\n \ty\n", "d.tsv", ":2: empty text"),
    ("fine\tx\nstill fine\t\n", "d.tsv", ":2: empty label"),
    ('{"text": "a", "label": "x"}\n{"text": "b"\n', "d.jsonl", ":2: not a JSON object"),
    ('{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n', "d.jsonl", ":2: no key 'text'"),
])
def test_bad_rows_name_file_and_line(tmp_text, content, name, needle):
    path = tmp_text(content, name)
    with pytest.raises(InputError, match=needle):
        read_labelled([str(path)], LabelledDataConfig())


def test_bad_training_data_fails_with_one_line(cli, tmp_path, tmp_text, data):
    one = tmp_text("a\tx\nb\tx\nc\tx\n", "one.tsv")
    _error(cli(["train-rnn", one, "-w", tmp_path / "a", "--max-steps", 2, *SMALL_RNN]),
           "only one label", "'x'")
    bad = tmp_text("a\tx\nb\ty\nno label\n", "bad.tsv")
    _error(cli(["train-rnn", bad, "-w", tmp_path / "b", "--max-steps", 2, *SMALL_RNN]), "bad.tsv:3")
    unseen = tmp_text("broth\tsoup\nice ice\tpizza\n", "unseen.tsv")
    _error(cli(["train-rnn", data[0], "--valid", unseen, "-w", tmp_path / "c", "--max-steps", 2, *SMALL_RNN]),
           "unseen.tsv:2: unknown label 'pizza'")
    _error(cli(["train-rnn", data[0], "-w", tmp_path / "d", "--max-steps", 2, "--pooling", "mean"]),
           "--pooling applies to --task classify")
    _error(cli(["train-rnn", data[0], "-w", tmp_path / "e", "--max-steps", 2, *SMALL_RNN, "--pooling",
                "first"]), "--pooling first")


def test_batches_are_full_cover_every_row_and_restart_where_asked():
    from seqtool.data.labelled import LabelledBatches

    rows = [[5, i] for i in range(7)]
    source = LabelledBatches(rows, list(range(7)), 3, 0, seed=1)
    epoch = list(source.batches(0, 0))
    assert source.steps_per_epoch == len(epoch) == 3
    assert all(b["inputs"].shape == (3, 2) for b in epoch)  # the last wraps round: DDP ranks get rows
    assert {i for b in epoch for i in b["labels"].tolist()} == set(range(7))
    assert [b["labels"].tolist() for b in source.batches(0, 1)] == [b["labels"].tolist() for b in epoch[1:]]
    assert [b["labels"].tolist() for b in source.batches(1, 0)] != [b["labels"].tolist() for b in epoch]


# ---------------------------------------------------------------------------------------------
# the model


def _bodies():
    torch.manual_seed(0)
    yield RNNLM(RNNLMConfig(cell="gru", n_layers=2, hidden=8, dropout=0.0), 12)
    for arch in ("encoder", "decoder"):
        yield Transformer(TransformerConfig(arch=arch, vocab_size=12, n_layers=1, n_heads=2, d_model=8,
                                            d_ff=16, dropout=0.0, max_len=16))


@pytest.mark.parametrize("pooling", ["", "mean", "attention"])
def test_padding_never_changes_a_text_s_vector(pooling):
    """A short text batched with a longer one (so padded) gets the vector it gets alone."""
    for body in _bodies():
        model = Classifier(body, ["a", "b"], HeadConfig(pooling=pooling, dropout=0.0)).eval()
        short, longer = [5, 3, 4, 5], [5, 6, 7, 8, 9, 10, 5]
        inputs = torch.zeros(2, 7, dtype=torch.long)
        inputs[0, :4], inputs[1] = torch.tensor(short), torch.tensor(longer)
        together = model.features(inputs, torch.tensor([4, 7]))
        alone = model.features(torch.tensor([short]), torch.tensor([4]))
        torch.testing.assert_close(together[0], alone[0], rtol=0, atol=1e-5)


def test_the_lm_output_layer_is_gone_so_every_parameter_trains():
    """DDP needs every parameter to get a gradient: the body's token output layer is taken off."""
    for body in _bodies():
        model = Classifier(body, ["a", "b", "c"], HeadConfig(dropout=0.0))
        batch = {"inputs": torch.tensor([[5, 3, 4], [5, 6, 0]]), "lengths": torch.tensor([3, 2]),
                 "labels": torch.tensor([0, 2])}
        logits, loss = model(batch)
        assert logits.shape == (2, 3)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# training, resuming, classify, evaluate


def test_train_resume_is_bit_identical_then_classify_and_evaluate(cli, tmp_path, data, tmp_text):
    train, valid = data
    _ok(cli(["train-rnn", train, "--valid", valid, "-w", tmp_path / "once", "--max-steps", 8, *SMALL_RNN]))
    _ok(cli(["train-rnn", train, "--valid", valid, "-w", tmp_path / "twice", "--max-steps", 4, *SMALL_RNN]))
    result = _ok(cli(["train-rnn", train, "--valid", valid, "-w", tmp_path / "twice", "--max-steps", 8,
                      *SMALL_RNN]))
    assert "resumed from step-0000004" in result.stderr
    once = load_file(tmp_path / "once/checkpoints/step-0000008/model.safetensors")
    twice = load_file(tmp_path / "twice/checkpoints/step-0000008/model.safetensors")
    assert once.keys() == twice.keys()
    assert all(torch.equal(once[k], twice[k]) for k in once)
    ws = Workspace.open(tmp_path / "once")
    assert ws.kind == "classifier"

    texts = [line.split("\t")[0] for line in valid.read_text().splitlines()]
    labels = _ok(cli(["classify", "-w", tmp_path / "once", "--batch-size", 5], input="\n".join(texts) + "\n"))
    predicted = labels.stdout.splitlines()
    assert len(predicted) == len(texts) and set(predicted) <= set(WORDS)
    probs = [json.loads(line) for line in _ok(cli(["classify", "-w", tmp_path / "once", "--probs", "-"],
                                                  input="\n".join(texts) + "\n")).stdout.splitlines()]
    assert [p["label"] for p in probs] == predicted
    assert all(sum(p["probs"].values()) == pytest.approx(1.0, abs=1e-4) for p in probs)
    _error(cli(["classify", "-w", tmp_path / "once"], input="broth\n\nice\n"), "<stdin>:2: empty text")

    # evaluate agrees with the predictions classify printed
    gold = [line.split("\t")[1] for line in valid.read_text().splitlines()]
    report = json.loads(_ok(cli(["evaluate", "-w", tmp_path / "once", "--data", valid, "--json"])).stdout)
    names = sorted(WORDS)
    gold_ids, predicted_ids = [names.index(g) for g in gold], [names.index(p) for p in predicted]
    expected = scores(confusion_matrix(gold_ids, predicted_ids, 3), names)
    assert report["model"]["confusion"] == expected["confusion"]
    assert report["model"]["macro_f1"] == pytest.approx(expected["macro_f1"])
    table = _ok(cli(["evaluate", "-w", tmp_path / "once"])).stdout  # the run's own validation rows
    assert "macro-F1" in table and "confusion matrix" in table and "precision" in table
    assert (tmp_path / "once/plots/confusion.png").stat().st_size > 0
    unknown = tmp_text("broth leek\tsoup\nice\tpizza\n", "test.tsv")
    _error(cli(["evaluate", "-w", tmp_path / "once", "--data", unknown]), "test.tsv:2: unknown label 'pizza'")
    _error(cli(["evaluate", "-w", tmp_path / "once", "--baseline", "ngram"]), "do not apply to a classifier")
    _error(cli(["classify", "-w", tmp_path / "once", "--batch-size", 0], input="ice\n"), "--batch-size")


@pytest.mark.parametrize(("arch", "pooling"), [("encoder", "first"), ("decoder", "last")])
def test_train_transformer_classifier(cli, tmp_path, data, arch, pooling):
    train, valid = data
    _ok(cli(["train-transformer", train, "--valid", valid, "-w", tmp_path / "ws", "--task", "classify",
             "--arch", arch, "--kind", "word", "--d-model", 16, "--heads", 2, "--layers", 1, "--d-ff", 32,
             "--max-steps", 4, "--batch-size", 8, "--device", "cpu"]))
    model = load_published(Workspace.open(tmp_path / "ws"))
    assert model.pooling == pooling and model.body.cfg.arch == arch and model.labels == sorted(WORDS)


# ---------------------------------------------------------------------------------------------
# fine-tuning a language model with a new head


def _lm_workspace(path):
    from seqtool.data.tokenizers import train_tokenizer

    tok = train_tokenizer("word", [" ".join(words) for words in WORDS.values()])
    torch.manual_seed(0)
    cfg = TransformerConfig(arch="decoder", vocab_size=tok.vocab_size, n_layers=1, n_heads=2, d_model=16,
                            d_ff=32, dropout=0.0, positions="learned", max_len=32)
    model = Transformer(cfg)
    ws = Workspace.create(path, "transformer-lm", {"data": {"block_size": 32}})
    tok.save(ws.tokenizer_dir)
    ws.publish(model.state_dict(), model.arch())
    return model


FT = ("--task", "classify", "--max-steps", 4, "--eval-every", 2, "--batch-size", 8, "--lr", 3e-3,
      "--device", "cpu")


@pytest.mark.parametrize("mode", [(), ("--freeze", "body"), ("--lora-rank", 2)])
def test_finetune_an_lm_workspace_with_a_new_head(cli, tmp_path, data, mode):
    source = _lm_workspace(tmp_path / "lm")
    train, valid = data
    _ok(cli(["finetune", "--from", tmp_path / "lm", "--data", train, "--valid", valid, "-w", tmp_path / "ft",
             *mode, *FT]))
    model = load_published(Workspace.open(tmp_path / "ft", kinds=("classifier",)))
    before = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    after = {k.removeprefix("body."): v for k, v in model.state_dict().items() if k.startswith("body.")}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if mode:  # feature-based or LoRA: the source's weights stay as they were
        assert not changed
    else:
        assert changed
    assert any(k.startswith("body.") and "lora_b" in k for k in model.state_dict()) == ("--lora-rank" in mode)
    out = _ok(cli(["classify", "-w", tmp_path / "ft"], input="broth leek\nice lemon\n")).stdout.split()
    assert len(out) == 2 and set(out) <= set(WORDS)


def test_finetune_refuses_a_translation_source_and_freeze_with_lora(cli, tmp_path, data):
    _lm_workspace(tmp_path / "lm")
    _error(cli(["finetune", "--from", tmp_path / "lm", "--data", data[0], "-w", tmp_path / "ft", "--freeze",
                "body", "--lora-rank", 2, *FT]), "--freeze does not apply")
    _error(cli(["finetune", "--from", tmp_path / "lm", "--data", data[0], "-w", tmp_path / "ft2", "--pooling",
                "first", *FT]), "--pooling first")


def test_finetune_an_hf_gpt2_with_a_new_head(cli, tmp_path, data):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    directory = tmp_path / "gpt2"
    directory.mkdir()
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(w) for w in WORDS.values()] * 5, vocab_size=280, min_frequency=1,
                            special_tokens=["<|endoftext|>"])
    bpe.save_model(str(directory))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=280, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                     eos_token_id=0, bos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    train, valid = data
    _ok(cli(["finetune", "--from", f"hf:{directory}", "--data", train, "--valid", valid, "-w",
             tmp_path / "ft", "--pooling", "mean", *FT]))
    model = load_published(Workspace.open(tmp_path / "ft"))
    assert model.pooling == "mean" and model.body.cfg.tokenizer_size > 0
    out = _ok(cli(["classify", "-w", tmp_path / "ft", "--probs"], input="broth leek\n")).stdout
    assert set(json.loads(out)["probs"]) == set(WORDS)


def test_two_processes_train_the_same_classifier_as_one(cli, tmp_path, data):
    """DDP (torchrun, gloo): each rank scores its share of a batch's rows, weighted by its share of them,
    so two processes end with the weights of one (up to float reduction order)."""
    import os
    import subprocess
    import sys

    train, valid = data
    args = ["train-rnn", str(train), "--valid", str(valid), "--max-steps", "4", "--dropout", "0", "--set",
            "head.dropout=0", "--set", "run.checkpoint_every=4", *map(str, SMALL_RNN)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID")}
    env["OMP_NUM_THREADS"] = "1"
    _ok(cli([*args, "-w", tmp_path / "one"]))
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "seqtool", *args, "-w", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=300)  # seconds on an idle machine; minutes on a loaded one
    assert two.returncode == 0, two.stderr[-2000:]
    a = load_file(tmp_path / "one/checkpoints/step-0000004/model.safetensors")
    b = load_file(tmp_path / "two/checkpoints/step-0000004/model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name
