"""train-rnn → generate → evaluate through the real app: files written, every option, resume equal to an
uninterrupted run, same seed → same weights and text, and bad input → one error line and exit 2."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import yaml

from seqtool.data.tokenizers import save_tokenizers, train_tokenizer
from seqtool.workspace import Workspace, load_tensors

WORDS = ["soup", "bread", "cake", "stew", "salad", "pie", "rice", "tea"]
CORPUS = "".join(f"Stir the {WORDS[i % 8]} and bake for {i % 7 + 1} minutes.\n" for i in range(120))
VALID = "".join(f"Stir the {WORDS[i % 5]} and bake for {i % 4 + 2} minutes.\n" for i in range(12))
SMALL = ["--hidden", "16", "--n-layers", "1", "--bptt", "16", "--batch-size", "4", "--eval-every", "6",
         "--seed", "3"]



@pytest.fixture
def corpus(tmp_text):
    return tmp_text(CORPUS, "corpus.txt")


@pytest.fixture
def train(cli, corpus, tmp_path):
    """train("ws", "--max-steps", 12, ...) → the Result of `seqtool train-rnn corpus -w tmp/ws ...`."""
    def run(ws: str, *extra: object, files: tuple = (), small: bool = True):
        args = ["train-rnn", *(files or [corpus]), "-w", tmp_path / ws, *(SMALL if small else []), *extra]
        return cli(args)
    return run


def weights(path) -> dict[str, torch.Tensor]:
    return load_tensors(path)


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def one_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_train_generate_evaluate(cli, train, corpus, tmp_path, tmp_text):
    result = train("ws", "--max-steps", "12")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "summary" in result.stderr and "finished" in result.stderr
    ws = tmp_path / "ws"
    meta = yaml.safe_load((ws / "seqtool.yaml").read_text())
    assert meta["kind"] == "rnn-lm" and meta["config"]["model"]["hidden"] == 16
    [data] = meta["data"]
    assert data["role"] == "train" and data["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert data["bytes"] == corpus.stat().st_size
    events = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    valid = [e for e in events if e["event"] == "valid"]
    assert [e["step"] for e in valid] == [6, 12] and all({"loss", "ppl", "bpc"} <= e.keys() for e in valid)
    for name in ("plots/loss.png", "model.safetensors", "model.json", "samples/step-0000012.txt",
                 "checkpoints/step-0000012/trainer.pt", "tokenizer/tokenizer.json"):
        assert (ws / name).exists(), name
    assert json.loads((ws / "model.json").read_text())["model"] == "rnn-lm"

    out = cli(["generate", "-w", ws, "--prompt", "Stir the", "--max-tokens", "30", "--seed", "1"])
    assert out.exit_code == 0, out.stderr
    assert out.stdout.startswith("Stir the") and out.stderr == ""
    again = cli(["-w", ws, "--seed", "1", "generate", "--prompt", "Stir the", "--max-tokens", "30",
                 "--device", "cpu", "--encoding-errors", "replace"])
    assert again.stdout == out.stdout
    jsonl = cli(["generate", "-w", ws, "--max-tokens", "20", "-n", "2", "--format", "jsonl", "--top-k", "5",
                 "--top-p", "0.9", "--temperature", "0.7", "--seed", "2"])
    samples = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert len(samples) == 2 and samples[0]["text"] != samples[1]["text"]
    assert all(len(s["tokens"]) == len(s["logprobs"]) == len(s["ids"]) == 20 for s in samples)
    assert all(lp <= 0 for s in samples for lp in s["logprobs"]) and samples[0]["seed"] == 2
    greedy = cli(["generate", "-w", ws, "--prompt-file", "-", "--greedy", "--stop", r"\n", "--max-tokens",
                  "80"], input="Stir\nbake\n")
    assert greedy.exit_code == 0, greedy.stderr
    first, second = greedy.stdout.split("\n\n")
    assert first.startswith("Stir") and second.startswith("bake") and "\n" not in first
    odd = cli(["generate", "-w", ws, "--prompt", "Stir é€", "--max-tokens", "3", "--format", "jsonl"])
    assert odd.exit_code == 0 and "'é'" in odd.stderr and "'€'" in odd.stderr and "warning" in odd.stderr

    valid = tmp_text(VALID, "valid.txt")
    scored = cli(["evaluate", "-w", ws, "--data", valid, "--baseline", "ngram", "--order", "3", "--json",
                  "--device", "cpu", "--encoding-errors", "replace"])
    assert scored.exit_code == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["model"]["tokens"] == report["baseline"]["tokens"] == len(VALID)  # every char once
    assert report["baseline"]["bpc"] > 0 and report["model"]["ppl"] > 1
    table = cli(["evaluate", "-w", ws, "--data", valid, "--baseline", "ngram", "--smoothing", "addk",
                 "--add-k", "0.5", "--batch-size", "4"])
    assert table.exit_code == 0 and "5-gram addk" in table.stdout and "bpc" in table.stdout
    held_out = cli(["evaluate", "-w", ws, "--baseline", "ngram", "--json"])  # the run's held-out lines
    assert held_out.exit_code == 0, held_out.stderr
    assert json.loads(held_out.stdout)["model"]["tokens"] > 0
    assert cli(["info", "-w", ws, "--json"]).exit_code == 0
    no_map = cli(["attention-map", "-w", ws, "--source", "Stir the"])
    assert no_map.exit_code == 2 and "has no attention" in no_map.stderr


def test_every_option(cli, train, corpus, tmp_path, tmp_text):
    valid = tmp_text(VALID, "valid.txt")
    result = train(
        "word", "--cell", "gru", "--n-layers", "2", "--hidden", "12", "--embedding", "8", "--dropout", "0.1",
        "--residual", "--no-tie", "--objective", "window", "--window", "6", "--batch-size", "8",
        "--lr", "0.05", "--optimizer", "sgd", "--schedule", "cosine", "--warmup", "2", "--clip", "0.5",
        "--epochs", "2",
        "--max-steps", "10", "--time-budget", "5m", "--eval-every", "5", "--patience", "3", "--valid", valid,
        "--kind", "word", "--vocab-size", "30", "--min-count", "2", "--lowercase", "--seed", "5", "--device",
        "cpu", "--precision", "fp32", "--no-compile", "--set", "run.log_every=1", small=False)
    assert result.exit_code == 0, result.stderr
    cfg = yaml.safe_load((tmp_path / "word" / "seqtool.yaml").read_text())["config"]
    assert cfg["model"] == {"cell": "gru", "n_layers": 2, "hidden": 12, "embedding": 8, "dropout": 0.1,
                            "residual": True, "tie": False}
    assert cfg["data"]["objective"] == "window" and cfg["data"]["window"] == 6 and cfg["data"]["valid"] == [
        str(valid)]
    assert cfg["tokenizer"] == {**cfg["tokenizer"], "kind": "word", "vocab_size": 30, "min_count": 2,
                                "lowercase": True}
    assert cfg["optim"] == {**cfg["optim"], "optimizer": "sgd", "lr": 0.05, "schedule": "cosine",
                            "warmup_steps": 2, "clip": 0.5}
    assert cfg["run"] == {**cfg["run"], "epochs": 2.0, "max_steps": 10, "time_budget": "5m", "patience": 3,
                          "seed": 5, "device": "cpu", "precision": "fp32", "compile": False, "log_every": 1}
    out = cli(["generate", "-w", tmp_path / "word", "--prompt", "stir the", "--max-tokens", "5", "--greedy"])
    assert out.exit_code == 0 and out.stdout.startswith("stir the")
    bpc = json.loads(cli(["evaluate", "-w", tmp_path / "word", "--data", valid, "--json"]).stdout)["model"]
    assert "bpc" not in bpc and bpc["tokens"] > 0  # bits per character only for char models
    own = json.loads(cli(["evaluate", "-w", tmp_path / "word", "--json"]).stdout)["model"]
    assert own == bpc  # without --data: the run's own validation text (here its --valid file)

    tok_dir = tmp_path / "tok"
    save_tokenizers(tok_dir, {"": train_tokenizer("char", CORPUS.splitlines())})
    result = train("tok", "-t", tok_dir, "--cell", "ugrnn", "--valid-fraction", "0.2", "--optimizer", "adamw",
                   "--schedule", "step", "--no-lowercase", "--tie", "--no-residual", "--max-steps", "4")
    assert result.exit_code == 0, result.stderr
    assert "the last 24 of 120 lines" in result.stderr
    copied = tmp_path / "tok" / "tokenizer" / "tokenizer.json"
    assert copied.read_text() == (tok_dir / "tokenizer.json").read_text()


def test_config_file_and_reproducing_a_run_from_its_workspace(cli, corpus, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": {"train": [str(corpus)], "bptt": 12, "valid_fraction": 0.1},
        "tokenizer": {"kind": "char"},
        "model": {"cell": "lstm", "n_layers": 2, "hidden": 12, "dropout": 0.3},
        "optim": {"lr": 0.01, "clip": 1.0},
        "run": {"batch_size": 4, "max_steps": 6, "eval_every": 3, "seed": 11},
    }))
    first = cli(["train-rnn", "--config", recipe, "-w", tmp_path / "a"])
    assert first.exit_code == 0, first.stderr
    again = cli(["train-rnn", "--config", tmp_path / "a" / "seqtool.yaml", "-w", tmp_path / "b"])
    assert again.exit_code == 0, again.stderr
    assert same_weights(tmp_path / "a" / "model.safetensors", tmp_path / "b" / "model.safetensors")
    assert (tmp_path / "a" / "samples" / "step-0000006.txt").read_text() == (
        tmp_path / "b" / "samples" / "step-0000006.txt").read_text()
    assert cli(["train-rnn", "--config", recipe, "-w", tmp_path / "c", "--seed", "12"]).exit_code == 0
    assert not same_weights(tmp_path / "a" / "model.safetensors", tmp_path / "c" / "model.safetensors")


def test_layers_is_an_alias_of_n_layers(cli, train, tmp_path):
    assert "--n-layers" in cli(["train-rnn", "--help"]).stdout
    result = train("alias", "--max-steps", "2", "--layers", "2")  # after SMALL's --n-layers 1: the last wins
    assert result.exit_code == 0, result.stderr
    meta = yaml.safe_load((tmp_path / "alias" / "seqtool.yaml").read_text())
    assert meta["config"]["model"]["n_layers"] == 2


def write_old_names(ws) -> None:
    """Make `ws` look written before the RNN LM's model.layers became model.n_layers (the other models'
    name): seqtool.yaml says model.layers, model.json "layers"."""
    def old(section: dict) -> dict:
        return {("layers" if key == "n_layers" else key): value for key, value in section.items()}

    meta = yaml.safe_load((ws / "seqtool.yaml").read_text())
    meta["config"]["model"] = old(meta["config"]["model"])
    (ws / "seqtool.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    (ws / "model.json").write_text(json.dumps(old(json.loads((ws / "model.json").read_text())), indent=2))


def test_a_workspace_from_before_n_layers_loads_reproduces_and_resumes(cli, train, tmp_path):
    # n_layers 1 (SMALL), not the default 2: a dropped old key would build a model the weights do not fit
    assert train("old", "--max-steps", "6").exit_code == 0
    ws = tmp_path / "old"
    write_old_names(ws)
    assert "n_layers" not in (ws / "seqtool.yaml").read_text() + (ws / "model.json").read_text()

    out = cli(["generate", "-w", ws, "--prompt", "Stir the", "--max-tokens", "10", "--seed", "1"])
    assert out.exit_code == 0 and out.stdout.startswith("Stir the"), out.stderr
    scores = cli(["evaluate", "-w", ws, "--json"])
    assert scores.exit_code == 0 and json.loads(scores.stdout)["model"]["tokens"] > 0, scores.stderr
    assert json.loads(cli(["info", "-w", ws, "--json"]).stdout)["model"]["n_layers"] == 1
    again = cli(["train-rnn", "--config", ws / "seqtool.yaml", "-w", tmp_path / "again"])  # reproduce it
    assert again.exit_code == 0, again.stderr
    assert same_weights(ws / "model.safetensors", tmp_path / "again" / "model.safetensors")

    assert "nothing to do" in train("old", "--max-steps", "6").stderr
    one_error(train("old", "--max-steps", "12", "--n-layers", "2"), "model.n_layers=1 (this run: 2)")
    resumed = train("old", "--max-steps", "12")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resumed from step-0000006" in resumed.stderr
    model = yaml.safe_load((ws / "seqtool.yaml").read_text())["config"]["model"]
    assert model["n_layers"] == 1 and "layers" not in model  # written back under the new name
    assert json.loads((ws / "model.json").read_text())["n_layers"] == 1


def test_resume_equals_an_uninterrupted_run(cli, train, tmp_path):
    common = ["--dropout", "0.3", "--eval-every", "4", "--set", "run.checkpoint_every=4"]
    assert train("whole", "--max-steps", "8", *common).exit_code == 0
    assert train("parts", "--max-steps", "4", *common).exit_code == 0
    resumed = train("parts", "--max-steps", "8", *common)
    assert resumed.exit_code == 0, resumed.stderr
    assert "resumed from step-0000004" in resumed.stderr
    ckpt = "checkpoints/step-0000008/model.safetensors"
    assert same_weights(tmp_path / "whole" / ckpt, tmp_path / "parts" / ckpt)
    opt_a = torch.load(tmp_path / "whole" / "checkpoints/step-0000008/trainer.pt", weights_only=True)
    opt_b = torch.load(tmp_path / "parts" / "checkpoints/step-0000008/trainer.pt", weights_only=True)
    assert all(torch.equal(a["exp_avg"], b["exp_avg"]) for a, b in zip(
        opt_a["optimizer"]["state"].values(), opt_b["optimizer"]["state"].values(), strict=True))

    done = train("parts", "--max-steps", "8", *common)
    assert done.exit_code == 0 and "nothing to do" in done.stderr
    changed = train("parts", "--max-steps", "8", "--hidden", "24", *common)
    one_error(changed, "model.hidden=16 (this run: 24)")
    fresh = train("parts", "--max-steps", "2", "--hidden", "24", "--resume", "never")
    assert fresh.exit_code == 0, fresh.stderr
    assert [p.name for p in Workspace.open(tmp_path / "parts").checkpoint_dirs()] == ["step-0000002"]


@pytest.mark.parametrize(("args", "fragments"), [
    (["--set", "model.cell=transformer"], ["model.cell must be one of rnn, rnn-relu, gru, lstm, ugrnn"]),
    (["--batch-size", "64", "--bptt", "100"], ["training text is too short", "batch size 64 × bptt 100"]),
    (["--objective", "window", "--window", "5000"], ["too short"]),
    (["--set", "model.colour=blue"], ["unknown config key 'model.colour'"]),
])
def test_bad_options(train, args, fragments):
    one_error(train("bad", "--max-steps", "2", *args), *fragments)


def test_bad_input(cli, train, tmp_path, tmp_text):
    empty = tmp_text("\n  \n", "empty.txt")
    one_error(train("e", "--max-steps", "2", files=(empty,)), "empty corpus")
    one_error(train("m", "--max-steps", "2", files=(tmp_path / "missing.txt",)), "missing.txt")
    one_error(cli(["train-rnn", tmp_text("abc\n", "x.txt"), "--max-steps", "1"]), "no workspace given")
    Workspace.create(tmp_path / "mt", "seq2seq", {})
    one_error(cli(["generate", "-w", tmp_path / "mt"]), "holds a seq2seq model")
    one_error(cli(["evaluate", "-w", tmp_path / "mt", "--data", empty]), "reference translations")
    one_error(cli(["generate", "-w", tmp_path / "nope"]), "does not exist")
    one_error(cli(["evaluate", "-w", tmp_path / "nope", "--data", empty]), "does not exist")


def test_evaluate_baseline_needs_the_training_text(cli, train, corpus, tmp_path, tmp_text):
    assert train("ws", "--max-steps", "2").exit_code == 0
    valid = tmp_text(VALID, "valid.txt")
    corpus.rename(tmp_path / "moved.txt")
    one_error(cli(["evaluate", "-w", tmp_path / "ws", "--data", valid, "--baseline", "ngram"]),
              "corpus.txt", "--baseline-train")
    ok = cli(["evaluate", "-w", tmp_path / "ws", "--data", valid, "--baseline", "ngram", "--baseline-train",
              tmp_path / "moved.txt"])
    assert ok.exit_code == 0 and "5-gram kn" in ok.stdout
