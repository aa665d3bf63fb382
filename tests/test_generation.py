"""Batched language-model generation (generation.py, `generate --prompt-file/--num-samples/--batch-size`):
prompts of different lengths decoded together give what one prompt at a time gives (greedy), N samples
are N seeded rows, and `--quantize int8` loads, generates and stays close to the float model."""

from __future__ import annotations

import json
import random

import pytest
import torch

from seqtool.decoding import DecodeConfig, TextStream
from seqtool.generation import sample_batch

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "big", "small", "red", "blue"]
MODEL = ["--layers", "1", "--heads", "2", "--d-model", "16", "--d-ff", "32", "--seed", "1", "--device", "cpu"]


class HistoryLM(torch.nn.Module):
    """Each row's next token is a hash of its whole history (every token and its position), so a row that
    saw another row's tokens, a padding token or a shifted position goes wrong at once."""

    V = 12

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def start(self, src_ids=None, src_mask=None):
        return None

    def step(self, next_ids, state):
        seen = next_ids if state is None else torch.cat([state, next_ids], 1)  # (B, length)
        position = torch.arange(1, seen.size(1) + 1)
        h = (seen * position * 7 + position).sum(1)  # (B,)
        logits = torch.zeros(seen.size(0), self.V)
        logits[torch.arange(seen.size(0)), 3 + h % (self.V - 3)] = 5.0
        return logits, seen

    def reorder(self, state, index):
        return state.index_select(0, index)


class Tok:
    """Letters a.. are ids 3..; id 0 is the newline, 1 </s>."""

    newline_id, eos_id = 0, 1

    def encode(self, text):
        return [3 + ord(ch) - ord("a") for ch in text]

    def decode(self, ids):
        return "".join("\n" if i == 0 else chr(ord("a") + i - 3) if i >= 3 else "" for i in ids)


def test_batched_prompts_of_different_lengths_equal_one_at_a_time():
    prompts = ["", "a", "bcd", "abcdefg", "b"]
    cfg = DecodeConfig(greedy=True, max_tokens=9)
    batched = sample_batch(HistoryLM(), Tok(), prompts, cfg, stop=["ii"])
    for prompt, got in zip(prompts, batched, strict=True):
        stream = TextStream(HistoryLM(), Tok(), prompt, cfg, stop=["ii"])
        text = "".join(stream)
        assert (got.ids, got.text, got.stop_reason) == (stream.sample.ids, text, stream.sample.stop_reason)
        assert got.logprobs == pytest.approx(stream.sample.logprobs)


def test_seeded_samples_are_reproducible_rows():
    def draw(seed: int) -> list:
        return sample_batch(HistoryLM(), Tok(), ["ab"] * 4, DecodeConfig(max_tokens=12),
                            torch.Generator().manual_seed(seed))

    first, again, other = draw(1), draw(1), draw(2)
    assert [s.ids for s in first] == [s.ids for s in again]
    assert all(len(s.ids) == 12 for s in first)
    assert len({tuple(s.ids) for s in first}) > 1  # rows are different samples
    assert [s.ids for s in first] != [s.ids for s in other]


# ---------------------------------------------------------------------------------------------
# through the CLI, on a tiny trained Transformer


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from typer.testing import CliRunner

    from seqtool.cli import app

    tmp = tmp_path_factory.mktemp("gen")
    rng = random.Random(0)
    text = "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "\n" for _ in range(120))
    (tmp / "corpus.txt").write_text(text)
    result = CliRunner().invoke(app, ["train-transformer", str(tmp / "corpus.txt"), "-w", str(tmp / "lm"),
                                      "--arch", "decoder", "--block-size", "16", *MODEL, "--max-steps", "60",
                                      "--batch-size", "8", "--warmup", "2", "--eval-every", "60",
                                      "--lr", "0.01", "--dropout", "0"])
    assert result.exit_code == 0, result.stderr
    return tmp / "lm"


PROMPTS = "the\nthe cat sat on a\n\nred dog\nmat far away big small blue\n"


def test_cli_prompt_file_batched_equals_one_at_a_time(cli, lm):
    for fmt in ("text", "jsonl"):
        # 40 new tokens pass the model's 16 positions: the window slides while batched, too
        args = ["generate", "-w", lm, "--prompt-file", "-", "--greedy", "--max-tokens", "40", "--format", fmt,
                "--seed", "1"]
        one = cli([*args, "--batch-size", "1"], input=PROMPTS)
        many = cli([*args, "--batch-size", "4"], input=PROMPTS)
        assert one.exit_code == many.exit_code == 0, many.stderr
        if fmt == "text":
            assert many.stdout == one.stdout
    lines = [json.loads(line) for line in many.stdout.splitlines()]
    alone = [json.loads(line) for line in one.stdout.splitlines()]
    assert [x["prompt"] for x in lines] == PROMPTS.splitlines()
    for x, y in zip(lines, alone, strict=True):  # the same tokens; log-probs up to float rounding
        assert (x["ids"], x["text"], x["stop_reason"]) == (y["ids"], y["text"], y["stop_reason"])
        assert x["logprobs"] == pytest.approx(y["logprobs"], abs=1e-4)
    assert len({tuple(x["ids"]) for x in lines}) > 2  # the model does not say the same thing to every prompt


def test_cli_num_samples_are_n_seeded_samples(cli, lm):
    args = ["generate", "-w", lm, "--prompt", "the cat", "-n", "5", "--max-tokens", "12", "--format", "jsonl"]
    first = cli([*args, "--seed", "4"])
    again = cli([*args, "--seed", "4"])
    other = cli([*args, "--seed", "5"])
    assert first.exit_code == 0, first.stderr
    samples = [json.loads(line) for line in first.stdout.splitlines()]
    assert [s["sample"] for s in samples] == [0, 1, 2, 3, 4] and all(s["seed"] == 4 for s in samples)
    assert len({s["text"] for s in samples}) > 1
    assert again.stdout == first.stdout and other.stdout != first.stdout
    text = cli(["generate", "-w", lm, "--prompt", "the", "-n", "3", "--max-tokens", "5", "--seed", "1"])
    assert text.exit_code == 0 and text.stdout.count("\n\n") == 2 and text.stdout.startswith("the")


def test_cli_bad_batch_size_is_one_error_line(cli, lm):
    result = cli(["generate", "-w", lm, "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size must be ≥ 1" in result.stderr


# ---------------------------------------------------------------------------------------------
# --quantize int8


def _loss(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model({"inputs": ids[:, :-1], "targets": ids[:, 1:]})[1])


def test_quantized_transformer_keeps_its_perplexity(lm, tmp_path):
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.models import load_published
    from seqtool.models.quantize import quantize_int8
    from seqtool.workspace import Workspace

    ws = Workspace.open(lm)
    tok = load_tokenizer(ws.tokenizer_dir)
    rng = random.Random(5)
    rows = [tok.encode(" ".join(rng.choice(WORDS) for _ in range(6)))[:12] for _ in range(16)]
    ids = torch.tensor([r + [tok.pad_id] * (12 - len(r)) for r in rows])
    model = load_published(ws)
    quantized = quantize_int8(load_published(ws))
    assert type(quantized.head).__name__ == "Linear" and "quantized" in type(quantized.head).__module__
    assert abs(_loss(quantized, ids) / _loss(model, ids) - 1) < 0.05  # perplexity within ~5%


def test_quantized_rnn_lm_steps_like_the_float_one():
    from seqtool.models.quantize import quantize_int8
    from seqtool.models.rnn_lm import RNNLM, RNNLMConfig

    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(cell="lstm", n_layers=2, hidden=32, dropout=0.0), vocab_size=20).eval()
    quantized = quantize_int8(model)  # a quantized copy: the output layer is int8, the cells float
    assert "quantized" in type(quantized.out).__module__ and "quantized" not in type(model.out).__module__
    ids = torch.randint(0, 20, (3, 6))
    float_state = quantized_state = None
    with torch.no_grad():
        for feed in (ids[:, :5], ids[:, 5:]):  # a prompt through the fused layers, then one token
            f, float_state = model.step(feed, float_state)
            q, quantized_state = quantized.step(feed, quantized_state)
            assert q.shape == f.shape == (3, 20)
            assert (q - f).abs().max() < 0.05 * f.abs().max()


def test_cli_quantize_int8_generates_and_translates(cli, lm, tmp_text, tmp_path):
    out = cli(["generate", "-w", lm, "--prompt", "the", "--greedy", "--max-tokens", "10",
               "--quantize", "int8"])
    assert out.exit_code == 0 and out.stdout.startswith("the"), out.stderr
    pairs = "".join(f"{a} {b}\t{c} {d}\n" for a, b, c, d in [("one", "two", "un", "deux"),
                                                             ("two", "one", "deux", "un")] * 30)
    mt = tmp_path / "mt"
    trained = cli(["train-transformer", "-w", mt, "--arch", "encoder-decoder",
                   "--tsv", tmp_text(pairs, "pairs.tsv"), "--kind", "word", *MODEL,
                   "--max-steps", "4", "--batch-size", "4", "--warmup", "2"])
    assert trained.exit_code == 0, trained.stderr
    result = cli(["translate", "-w", mt, "--quantize", "int8"], input="one two\n\ntwo\n")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.split("\n")) == 4 and result.stdout.split("\n")[1] == ""
    bad = cli(["translate", "-w", mt, "--quantize", "int4"], input="one\n")
    assert bad.exit_code == 2
