"""Language-model decoding beyond sampling: beam search for `generate` (beam 1 == greedy, beam beats
greedy on a hand-built case, stop tokens end hypotheses), the window objective's "re-read the last N
tokens" generation, and seeded sampling in `translate`."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from seqtool.decoding import DecodeConfig, TextStream, WindowLM, lm_beam, reorder_state

NL, EOS, A, B, C = 0, 1, 2, 3, 4
PIECES = ["\n", "</s>", "a", "b", "c"]
#          next:  NL    EOS   A     B     C
TABLE = {NL: [0.0, 0.05, 0.5, 0.4, 0.05],
         A: [0.3, 0.0, 0.25, 0.25, 0.2],  # greedy: a then ⏎, p = 0.5 · 0.3 = 0.15
         B: [0.9, 0.0, 0.04, 0.03, 0.03],  # beam: b then ⏎, p = 0.4 · 0.9 = 0.36
         C: [0.97, 0.0, 0.01, 0.01, 0.01],
         EOS: [0.0, 1.0, 0.0, 0.0, 0.0]}


class Tok:
    """A character tokenizer over PIECES."""

    newline_id, eos_id, vocab_size, kind = NL, EOS, 5, "char"

    def encode(self, text):
        return [PIECES.index(c) for c in text]

    def decode(self, ids):
        return "".join(PIECES[i] for i in ids if i != EOS)


class TableLM(torch.nn.Module):
    """A bigram model (the next token depends on the last only); records what each step is fed."""

    def __init__(self):
        super().__init__()
        probs = torch.tensor([TABLE[i] for i in range(5)])
        self.table = torch.nn.Parameter(probs.clamp_min(1e-9).log(), requires_grad=False)
        self.fed: list[tuple[list[list[int]], object]] = []

    def start(self, src_ids=None, src_mask=None):
        return None

    def step(self, next_ids, state):
        self.fed.append((next_ids.tolist(), state))
        return self.table[next_ids[:, -1]], torch.zeros(next_ids.size(0))

    def reorder(self, state, index):
        return reorder_state(state, index)


def test_beam_finds_the_more_likely_line_that_greedy_misses():
    greedy = TextStream(TableLM(), Tok(), "", DecodeConfig(greedy=True, max_tokens=2))
    greedy_text = "".join(greedy)
    [best] = lm_beam(TableLM(), Tok(), "", DecodeConfig(beam=2, max_tokens=10), stop=["\n"])
    assert greedy_text == "a\n" and math.exp(sum(greedy.sample.logprobs)) == pytest.approx(0.15)
    assert best.text == "b" and best.stop_reason == "stop"  # the newline token ended the hypothesis
    assert math.exp(sum(best.logprobs)) == pytest.approx(0.36)


def test_beam_one_is_greedy():
    for prompt in ["", "c", "ab"]:
        greedy = TextStream(TableLM(), Tok(), prompt, DecodeConfig(greedy=True, max_tokens=7))
        text = "".join(greedy)
        [beam] = lm_beam(TableLM(), Tok(), prompt, DecodeConfig(beam=1, max_tokens=7))
        assert (beam.text, beam.ids) == (text, greedy.sample.ids)
        assert beam.logprobs == pytest.approx(greedy.sample.logprobs)


def test_beam_gives_the_n_best_ranked_and_cut_at_stop_strings():
    top = lm_beam(TableLM(), Tok(), "", DecodeConfig(beam=4, nbest=3, max_tokens=10), stop=["\n"])
    assert [s.text for s in top] == ["b", "a", ""]  # 0.36, 0.15, then </s> at once: 0.05 (c ⏎: 0.0485)
    assert [s.stop_reason for s in top] == ["stop", "stop", "eos"]
    best, second = lm_beam(TableLM(), Tok(), "", DecodeConfig(beam=4, nbest=2, max_tokens=3))
    assert (best.text, best.stop_reason) == ("b\na", "max_tokens")  # without a stop string: 3 tokens, p 0.18
    assert (second.ids, second.stop_reason) == ([EOS], "eos")  # only </s> ends a hypothesis early
    assert sum(best.logprobs) > sum(second.logprobs)


def test_window_generation_feeds_only_the_last_n_tokens_from_a_fresh_state():
    model = TableLM()
    stream = TextStream(WindowLM(model, 3), Tok(), "abcab", DecodeConfig(greedy=True, max_tokens=4))
    text = "".join(stream)
    history = [NL, A, B, C, A, B, *stream.sample.ids]
    assert len(model.fed) == 4
    for t, (fed, state) in enumerate(model.fed):
        assert state is None  # every window read from the model's start state
        assert fed == [history[t + 6 - 3:t + 6]]  # exactly the last 3 tokens before token t
    assert text == "".join(PIECES[i] for i in stream.sample.ids)
    # beam search drives the same wrapper: each row re-reads its own window
    model.fed.clear()
    lm_beam(WindowLM(model, 2), Tok(), "ab", DecodeConfig(beam=2, max_tokens=3))
    assert all(len(row) <= 2 for fed, _ in model.fed for row in fed)


# ---------------------------------------------------------------------------------------------
# through the CLI, on tiny trained models

CORPUS = "".join(f"mix the {w} well\n" for w in ["tea", "rice", "stew", "cake"] * 30)
SMALL = ["--hidden", "16", "--n-layers", "1", "--batch-size", "4", "--max-steps", "8", "--eval-every", "8",
         "--seed", "1"]


def test_generate_beam_and_window_from_the_cli(cli, tmp_path, tmp_text):
    corpus = tmp_text(CORPUS)
    ws = tmp_path / "win"
    trained = cli(["train-rnn", corpus, "-w", ws, "--objective", "window", "--window", "4", *SMALL])
    assert trained.exit_code == 0, trained.stderr

    # greedy generation re-reads the last 4 tokens from a zero state, as the window objective trained
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.models import load_published
    from seqtool.workspace import Workspace

    model = load_published(Workspace.open(ws), torch.device("cpu"))
    tok = load_tokenizer(ws / "tokenizer")
    ids = [tok.newline_id, *tok.encode("mix")]
    for _ in range(12):
        h, _ = model.hidden_states(torch.tensor([ids[-4:]]))
        ids.append(int(model.out(h[:, -1]).argmax()))
    expected = "mix" + tok.decode(ids[4:])
    out = cli(["generate", "-w", ws, "--prompt", "mix", "--greedy", "--max-tokens", "12"])
    assert out.exit_code == 0, out.stderr
    assert out.stdout == expected + "\n"
    beam_one = cli(["generate", "-w", ws, "--prompt", "mix", "--beam", "1", "--max-tokens", "12"])
    assert beam_one.stdout == out.stdout
    # the sample written after training reads the window too: the same text as generate gives
    sample = cli(["generate", "-w", ws, "--max-tokens", "300", "--temperature", "0.8", "--seed", "1"])
    assert (ws / "samples" / "step-0000008.txt").read_text() == sample.stdout

    beams = cli(["generate", "-w", ws, "--prompt", "mix", "--beam", "3", "-n", "2", "--stop", r"\n",
                 "--length-penalty", "1", "--max-tokens", "40", "--format", "jsonl"])
    assert beams.exit_code == 0, beams.stderr
    rows = [json.loads(line) for line in beams.stdout.splitlines()]
    assert [r["sample"] for r in rows] == [0, 1] and all(r["beam"] == 3 for r in rows)
    assert all("\n" not in r["text"] for r in rows)

    for bad, message in ((["--beam", "2", "--temperature", "0.5"], "does not sample"),
                         (["--length-penalty", "1"], "add --beam"), (["--window", "-1"], "--window"),
                         (["--beam", "2", "-n", "3"], "≤ the beam size 2")):
        result = cli(["generate", "-w", ws, *bad])
        assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_translate_sample_is_seeded_and_checks_its_options(cli, tmp_path):
    rng = random.Random(0)
    src, tgt = [], []
    for _ in range(80):
        words = [rng.choice("abcdefgh") for _ in range(rng.randint(2, 5))]
        src.append(" ".join(words))
        tgt.append(" ".join(w.upper() for w in reversed(words)))
    (tmp_path / "train.src").write_text("\n".join(src) + "\n")
    (tmp_path / "train.tgt").write_text("\n".join(tgt) + "\n")
    ws = tmp_path / "mt"
    trained = cli(["train-seq2seq", "-w", ws, "--src", tmp_path / "train.src", "--tgt",
                   tmp_path / "train.tgt", "--kind", "word", "--embedding", "8", "--hidden", "16",
                   "--batch-tokens", "200",
                   "--max-steps", "4", "--eval-every", "4", "--seed", "1"])
    assert trained.exit_code == 0, trained.stderr
    lines = "\n".join(src[:12]) + "\n"

    def translate(*extra):
        result = cli(["translate", "-w", ws, "-", "--batch-size", "5", *extra], input=lines)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    first = translate("--sample", "--temperature", "2", "--seed", "7")
    assert first == translate("--sample", "--temperature", "2", "--seed", "7")
    assert first != translate("--sample", "--temperature", "2", "--seed", "8")
    assert len(first.splitlines()) == 12
    assert translate("--sample", "--top-p", "0.9", "--seed", "7") == translate("--sample", "--top-p", "0.9",
                                                                             "--seed", "7")
    for bad, message in ((["--temperature", "0.5"], "add --sample"), (["--sample", "--beam", "3"], "--beam"),
                         (["--sample", "--top-p", "0"], "--top-p"),
                         (["--sample", "--temperature", "0"], "--temperature")):
        result = cli(["translate", "-w", ws, "-", *bad], input=lines)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and message in errors[0], result.stderr
