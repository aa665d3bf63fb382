"""Measures beside per-token perplexity: next-token accuracy, bits per byte and per-word perplexity
against hand-computed values, in validation, the run summary and `seqtool evaluate`; the gradient
norm each step equals what clip_grad_norm_ returns, and is drawn in plots/."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from toytask import ToyData, ToyLM, make_task

from seqtool.config import OptimConfig, RunConfig
from seqtool.evaluation import text_scores
from seqtool.metrics import lm_scores, text_size
from seqtool.training.trainer import Trainer
from seqtool.workspace import Workspace

NL, E_ACUTE, A, UNUSED = 0, 1, 2, 3  # ids of a four-token vocabulary: "\n", "é", "a", never seen
LINES = ["é é a", "a"]  # as a word tokenizer reads them: é é a ⏎ a ⏎
IDS = torch.tensor([NL, E_ACUTE, E_ACUTE, A, NL, A, NL])  # training.lm.encode: a newline, then each line + ⏎


class RepeatLM(torch.nn.Module):
    """Predicts the token it was just given with probability 1/2, each other token with 1/6."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, batch):
        probs = torch.full((*batch["inputs"].shape, 4), 1 / 6).scatter(-1, batch["inputs"][..., None], 0.5)
        logits = probs.log()  # (B, T, V)
        return logits, F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())


def test_text_size_counts_utf8_bytes_and_words_with_each_line_end():
    size = text_size(LINES, IDS.numel() - 1)
    # "é é a\n" is 2+1+2+1+1+1 = 8 bytes, "a\n" 2; words: 3 + ⏎, 1 + ⏎
    assert (size.tokens, size.bytes, size.words) == (6, 10, 6)
    assert text_size(["", "  x  y "], 4).words == 1 + 3  # an empty line is its end alone


def test_accuracy_bits_per_byte_and_word_perplexity_by_hand():
    scores = text_scores(RepeatLM(), SimpleNamespace(kind="word"), IDS, "block", 16, 1,
                         size=text_size(LINES, IDS.numel() - 1))
    # targets é é a ⏎ a ⏎ after inputs ⏎ é é a ⏎ a: only "é after é" repeats its input
    nll = math.log(2) + 5 * math.log(6)
    assert scores["tokens"] == 6
    assert scores["loss"] == pytest.approx(nll / 6)
    assert scores["accuracy"] == pytest.approx(1 / 6)
    assert scores["bpb"] == pytest.approx(nll / math.log(2) / 10)  # every token scored: total bits / bytes
    assert scores["word_ppl"] == pytest.approx(math.exp(nll / 6))  # one token per word: = per-token ppl
    assert scores["ppl"] == pytest.approx(math.exp(nll / 6))


def test_scores_of_part_of_a_text_stand_for_the_whole():
    size = text_size(["ab cd"], 12)  # 6 bytes, 3 words, 12 tokens (say, BPE pieces)
    scores = lm_scores(nll=3.0, ntokens=4, size=size, correct=1)  # 4 of the 12 scored: 0.75 nats each
    assert scores["accuracy"] == 0.25
    assert scores["bpb"] == pytest.approx(0.75 / math.log(2) * 12 / 6)
    assert scores["word_ppl"] == pytest.approx(math.exp(0.75 * 12 / 3))
    assert "bpb" not in lm_scores(3.0, 4) and "accuracy" not in lm_scores(3.0, 4)


def test_train_validates_with_accuracy_and_bpb_and_evaluate_reports_them(cli, tmp_path, tmp_text):
    corpus = tmp_text("".join(f"mix the {w} well\n" for w in ["tea", "rice", "stew", "cake"] * 30))
    valid = tmp_text("mix the tea well\nmix the cake well\n", "valid.txt")
    ws = tmp_path / "ws"
    result = cli(["train-rnn", corpus, "-w", ws, "--hidden", "16", "--n-layers", "1",  # held-out tail
                  "--bptt", "8", "--batch-size", "4", "--max-steps", "6", "--eval-every", "3", "--seed", "1",
                  "--log-format", "json"])
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    valid_events = [e for e in events if e["event"] == "valid"]
    assert all({"accuracy", "bpb", "word_ppl", "bpc"} <= e.keys() for e in valid_events)
    # ASCII text read by a char model: one token per byte, so bits per byte = bits per character
    assert all(e["bpb"] == pytest.approx(e["bpc"]) for e in valid_events)
    [summary] = [e for e in events if e["event"] == "summary"]
    best = [e for e in valid_events if e["step"] == summary["best_step"]][0]
    assert summary["best_scores"] == {k: pytest.approx(best[k]) for k in summary["best_scores"]}
    assert {"accuracy", "bpb", "word_ppl"} <= summary["best_scores"].keys()

    report = json.loads(cli(["evaluate", "-w", ws, "--data", valid, "--baseline", "ngram", "--json"]).stdout)
    model = report["model"]
    assert model["tokens"] == len("mix the tea well\nmix the cake well\n")
    assert 0 <= model["accuracy"] <= 1 and model["bpb"] == pytest.approx(model["bpc"])
    # 8 words (and 2 line ends) in 35 tokens: a word is 3.5 tokens
    assert model["word_ppl"] == pytest.approx(math.exp(model["loss"] * 35 / 10))
    assert report["baseline"]["bpb"] == pytest.approx(report["baseline"]["bpc"])
    table = cli(["evaluate", "-w", ws, "--data", valid]).stdout
    assert "accuracy" in table and "bpb" in table and "word ppl" in table and "10 words" in table


def test_grad_norm_each_step_is_what_clip_grad_norm_returns_before_clipping(tmp_path, monkeypatch):
    returned, by_hand = [], []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(params, max_norm, *args, **kwargs):
        params = list(params)
        by_hand.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None)))
        returned.append(float(clip(params, max_norm, *args, **kwargs)))
        return torch.tensor(returned[-1])

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    events: list = []
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {})
    torch.manual_seed(0)
    run = RunConfig(max_steps=6, eval_every=3, log_every=1, seed=0)
    Trainer(ws, make_task(ToyLM(), ToyData()), OptimConfig(optimizer="adam", lr=0.01, clip=0.2), run,
            events.append, torch.device("cpu")).fit()
    train = [e for e in events if e["event"] == "train"]
    assert [e["grad_norm"] for e in train] == pytest.approx(returned)
    assert returned == pytest.approx(by_hand, rel=1e-5)
    assert min(returned) > 0.2  # every step was clipped: the logged norm is the one before clipping
    assert all(e["grad_norm_max"] == e["grad_norm"] for e in train)  # one step per interval
    logged = [e for e in ws.read_metrics() if e["event"] == "train"]
    assert [e["grad_norm"] for e in logged] == pytest.approx(returned)
    assert (ws.path / "plots" / "grad_norm.png").stat().st_size > 0


def test_grad_norm_over_a_logging_interval_is_its_mean_and_max(tmp_path, monkeypatch):
    returned = []
    total_norm = torch.nn.utils.get_total_norm  # what the trainer takes without clipping

    def recording(*args, **kwargs):
        returned.append(total_norm(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(torch.nn.utils, "get_total_norm", recording)
    torch.manual_seed(0)
    events: list = []
    run = RunConfig(max_steps=6, eval_every=6, log_every=3, seed=0)
    ws = Workspace.create(tmp_path / "ws", "rnn-lm", {})
    Trainer(ws, make_task(ToyLM(), ToyData()), OptimConfig(optimizer="adam", lr=0.01, clip=0.0), run,
            events.append, torch.device("cpu")).fit()
    norms = [float(n) for n in returned]
    train = {e["step"]: e for e in events if e["event"] == "train"}
    assert sorted(train) == [1, 3, 6]  # the first step, then every 3rd
    for step, steps in ((1, norms[:1]), (3, norms[1:3]), (6, norms[3:6])):
        assert train[step]["grad_norm"] == pytest.approx(sum(steps) / len(steps))
        assert train[step]["grad_norm_max"] == pytest.approx(max(steps))
