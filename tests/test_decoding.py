"""decoding.py on a hand-built model whose best path is known: greedy, seeded sampling, top-k/top-p,
beam search (beam ≥ greedy, beam 1 == greedy, batched == one at a time), n-gram blocking, streaming."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from seqtool.decoding import (
    DecodeConfig,
    TextStream,
    beam_search,
    choose,
    reorder_state,
    sample,
    sample_stream,
    top_k_filter,
    top_p_filter,
)
from seqtool.errors import InputError

START, EOS, A, B, C = 0, 1, 2, 3, 4
#       next:   START  EOS   A     B     C
TABLE = {START: [0.0, 0.05, 0.5, 0.4, 0.05],
         A: [0.0, 0.3, 0.25, 0.25, 0.2],  # greedy: A then </s>, p = 0.5 · 0.3 = 0.15
         B: [0.0, 0.9, 0.04, 0.03, 0.03],  # beam: B then </s>, p = 0.4 · 0.9 = 0.36
         C: [0.0, 0.97, 0.01, 0.01, 0.01],
         EOS: [0.0, 1.0, 0.0, 0.0, 0.0]}


@dataclass
class CountState:
    steps: torch.Tensor  # (B,) tokens seen per row: checks that reorder keeps rows together
    name: str = "state"


class TableLM(torch.nn.Module):
    """A bigram model: the next-token distribution depends on the last token only."""

    def __init__(self):
        super().__init__()
        probs = torch.tensor([TABLE[i] for i in range(5)])
        self.logits = torch.nn.Parameter(probs.clamp_min(1e-9).log(), requires_grad=False)
        self.calls = 0

    def start(self, src_ids=None, src_mask=None):
        return None

    def step(self, next_ids, state):
        self.calls += 1
        steps = torch.zeros(next_ids.size(0), dtype=torch.long) if state is None else state.steps
        return self.logits[next_ids[:, -1]], CountState(steps + next_ids.size(1))

    def reorder(self, state, index):
        return reorder_state(state, index)


def logprob(path: list[int], first: int = START) -> float:
    prev, total = first, 0.0
    for tok in path:
        total += math.log(TABLE[prev][tok])
        prev = tok
    return total


def starts(*ids: int) -> torch.Tensor:
    return torch.tensor([[i] for i in ids])


def test_greedy_follows_the_local_maximum():
    [hyp] = sample(TableLM(), None, starts(START), DecodeConfig(greedy=True, max_tokens=10), eos_id=EOS)
    assert hyp.ids == [A, EOS] and hyp.finished
    assert hyp.score == pytest.approx(math.log(0.15), abs=1e-5)
    assert [round(math.exp(lp), 4) for lp in hyp.logprobs] == [0.5, 0.3]


def test_temperature_zero_is_greedy_and_max_tokens_caps():
    [hyp] = sample(TableLM(), None, starts(C), DecodeConfig(temperature=0, max_tokens=1), eos_id=None)
    assert hyp.ids == [EOS]
    [hyp] = sample(TableLM(), None, starts(A), DecodeConfig(greedy=True, max_tokens=3), eos_id=None)
    assert len(hyp.ids) == 3 and not hyp.finished


def test_beam_finds_the_better_path_and_beats_greedy():
    model = TableLM()
    [[best]] = beam_search(model, None, starts(START), DecodeConfig(beam=2, max_tokens=10), EOS)
    [greedy] = sample(model, None, starts(START), DecodeConfig(greedy=True, max_tokens=10), eos_id=EOS)
    assert best.ids == [B, EOS] and best.finished
    assert best.score == pytest.approx(logprob([B, EOS]), abs=1e-5)
    assert best.score >= greedy.score
    assert sum(best.logprobs) == pytest.approx(best.score, abs=1e-5)


def test_beam_one_equals_greedy():
    for first in (START, A, B, C):
        for max_tokens in (1, 2, 5):
            cfg = DecodeConfig(beam=1, max_tokens=max_tokens)
            [[beam]] = beam_search(TableLM(), None, starts(first), cfg, EOS)
            greedy_cfg = DecodeConfig(greedy=True, max_tokens=max_tokens)
            [greedy] = sample(TableLM(), None, starts(first), greedy_cfg, eos_id=EOS)
            assert beam.ids == greedy.ids
            assert beam.score == pytest.approx(greedy.score, abs=1e-6)


def test_beam_batched_equals_one_at_a_time_and_nbest():
    cfg = DecodeConfig(beam=3, nbest=3, max_tokens=6, length_penalty=0.6)
    batched = beam_search(TableLM(), None, starts(START, A, B, C), cfg, EOS)
    for first, result in zip((START, A, B, C), batched, strict=True):
        [alone] = beam_search(TableLM(), None, starts(first), cfg, EOS)
        assert [h.ids for h in alone] == [h.ids for h in result]
        assert [h.score for h in alone] == pytest.approx([h.score for h in result], abs=1e-6)
        assert len(result) == 3 and result[0].score >= result[1].score >= result[2].score


def test_beam_stops_early_and_respects_max_lengths():
    model = TableLM()
    beam_search(model, None, starts(C), DecodeConfig(beam=2, max_tokens=50), EOS)
    assert model.calls <= 3  # </s> is the best first candidate: done after one or two steps
    cfg = DecodeConfig(beam=2, max_tokens=50)
    out = beam_search(TableLM(), None, starts(A, A), cfg, EOS, max_lengths=[1, 3])
    assert len(out[0][0].ids) == 1 and len(out[1][0].ids) <= 3


def test_no_repeat_ngram_blocks_repeats():
    cfg = DecodeConfig(beam=2, max_tokens=6, no_repeat_ngram=1)
    [[hyp]] = beam_search(TableLM(), None, starts(A), cfg, eos_id=99)  # no end: it must keep going
    assert len(hyp.ids) == len(set(hyp.ids)) == 5  # then every token is used up


def test_seeded_sampling_is_reproducible_and_follows_the_distribution():
    cfg = DecodeConfig(max_tokens=5)
    runs = [sample(TableLM(), None, starts(*[START] * 8), cfg, torch.Generator().manual_seed(7), EOS)
            for _ in range(2)]
    assert [h.ids for h in runs[0]] == [h.ids for h in runs[1]]
    hyps = sample(TableLM(), None, starts(*[START] * 4000), DecodeConfig(max_tokens=1),
                  torch.Generator().manual_seed(1), EOS)
    share = sum(h.ids[0] == A for h in hyps) / len(hyps)
    assert abs(share - 0.5) < 0.03


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[True, True, False, False]]
    assert torch.equal(top_k_filter(logits, 0), logits)
    probs = logits.softmax(-1)  # ≈ 0.03, 0.09, 0.24, 0.64
    kept = ~torch.isinf(top_p_filter(logits, 0.8))
    assert kept.tolist() == [[False, False, True, True]] and probs[0, 2:].sum() >= 0.8
    assert (~torch.isinf(top_p_filter(logits, 0.1))).sum() == 1  # always the most likely one


def test_top_k_one_samples_the_argmax():
    logits = torch.randn(32, 50, generator=torch.Generator().manual_seed(3))
    ids, _ = choose(logits, DecodeConfig(top_k=1), torch.Generator().manual_seed(0))
    assert torch.equal(ids, logits.argmax(-1))
    ids, _ = choose(logits, DecodeConfig(top_p=1e-6), torch.Generator().manual_seed(0))
    assert torch.equal(ids, logits.argmax(-1))


def test_stream_yields_each_step():
    cfg = DecodeConfig(greedy=True, max_tokens=9)
    steps = list(sample_stream(TableLM(), None, starts(START), cfg, None, EOS))
    assert [int(ids[0]) for ids, _ in steps] == [A, EOS]


def test_reorder_state_nested():
    state = {"a": (torch.arange(3), [torch.arange(6).view(3, 2)]), "b": CountState(torch.arange(3)), "n": 4}
    out = reorder_state(state, torch.tensor([2, 2, 0]))
    assert out["a"][0].tolist() == [2, 2, 0] and out["a"][1][0].tolist() == [[4, 5], [4, 5], [0, 1]]
    assert out["b"].steps.tolist() == [2, 2, 0] and out["b"].name == "state" and out["n"] == 4
    h = torch.arange(6).view(1, 3, 2)  # (L, B, H): batch on axis 1
    assert reorder_state(h, torch.tensor([1]), dim=1).tolist() == [[[2, 3]]]


class CharTok:
    """Just enough of a tokenizer for TextStream: ids 5.. are the letters a, b, c."""

    newline_id, eos_id = START, EOS

    def encode(self, text):
        return [5 + "abc".index(ch) for ch in text]

    def decode(self, ids):
        return "".join("\n" if i == START else "abc"[i - 5] if i >= 5 else "" for i in ids)


class CycleLM(TableLM):
    """Always continues a → b → c → newline → a … deterministically."""

    def step(self, next_ids, state):
        nxt = {5: 6, 6: 7, 7: START, START: 5}
        logits = torch.full((next_ids.size(0), 8), -10.0)
        for r, last in enumerate(next_ids[:, -1].tolist()):
            logits[r, nxt[last]] = 10.0
        return logits, state


def test_text_stream_stops_at_a_stop_string_and_holds_it_back():
    stream = TextStream(CycleLM(), CharTok(), "ab", DecodeConfig(greedy=True, max_tokens=50), stop=["\na"])
    pieces = list(stream)
    assert "".join(pieces) == "c" and stream.sample.stop_reason == "stop"
    assert all("\n" not in p for p in pieces)
    stream = TextStream(CycleLM(), CharTok(), "", DecodeConfig(greedy=True, max_tokens=7))
    assert "".join(stream) == "abc\nabc" and stream.sample.stop_reason == "max_tokens"
    assert len(stream.sample.ids) == len(stream.sample.logprobs) == 7


def test_text_stream_conditions_on_a_newline_unless_told_not_to():
    seen = []

    class Recording(CycleLM):
        def step(self, next_ids, state):
            seen.append(next_ids[0].tolist())
            return super().step(next_ids, state)

    cfg = DecodeConfig(greedy=True, max_tokens=1)
    for prompt, prefix in (("ab", True), ("ab", False), ("", False)):
        list(TextStream(Recording(), CharTok(), prompt, cfg, newline_prefix=prefix))
    assert seen == [[START, 5, 6], [5, 6], [START]]  # an empty prompt still starts after a newline


def test_decode_config_checks():
    for bad in ({"max_tokens": 0}, {"top_p": 0.0}, {"top_k": -1}, {"beam": 0}, {"beam": 2, "nbest": 3},
                {"temperature": -1.0}):
        with pytest.raises(InputError):
            DecodeConfig(**bad)
