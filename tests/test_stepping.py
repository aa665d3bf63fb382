"""The cheaper decoding step (issue 18): the output layer read through a cached (D, V) copy, the KV cache
and its token ids written in place, no dropout calls or position lookups in eval mode, the chosen ids
kept as tensors until the end. What comes out must not change: greedy and seeded samples equal a
decoder that recomputes the whole prefix with `logits()` at every token, at batch 1 and 16."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqtool.decoding import DecodeConfig, choose, sample
from seqtool.models.rnn_lm import RNNLM, RNNLMConfig
from seqtool.models.stepping import step_logits
from seqtool.models.transformer import Transformer, TransformerConfig

V = 300  # more than a handful of ids, so that the head is a real matrix


def decoder(**kw) -> Transformer:
    torch.manual_seed(0)
    options = dict(arch="decoder", vocab_size=V, n_layers=2, n_heads=2, d_model=32, d_ff=64, dropout=0.1,
                   max_len=64, positions="learned", activation="gelu-tanh")
    return Transformer(TransformerConfig(**{**options, **kw})).eval()


def recomputed(model: Transformer, prompt: torch.Tensor, cfg: DecodeConfig, seed: int | None) -> list:
    """The reference: every token chosen from logits() over the whole sequence so far (no cache)."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    seq, out = prompt, []
    with torch.no_grad():
        for _ in range(cfg.max_tokens):
            ids, _ = choose(model.logits({"inputs": seq})[:, -1], cfg, generator)
            out.append(ids)
            seq = torch.cat([seq, ids.view(-1, 1)], 1)
    return torch.stack(out, 1).tolist()


@pytest.mark.parametrize("rows", [1, 16])
@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "seeded-sample"])
def test_cached_steps_choose_what_full_recomputation_chooses(rows, greedy):
    model = decoder()
    torch.manual_seed(3)
    prompt = torch.randint(5, V, (rows, 3))
    cfg = DecodeConfig(max_tokens=20, greedy=greedy, temperature=0.9, top_k=50, top_p=0.95)
    seed = None if greedy else 7
    generator = None if greedy else torch.Generator().manual_seed(seed)
    got = [h.ids for h in sample(model, model.start(), prompt, cfg, generator)]
    assert got == recomputed(model, prompt, cfg, seed)


def test_sample_cuts_each_row_at_its_first_end_of_sequence():
    class Scripted(nn.Module):  # row r emits token 2 (= eos) at step r, else 5
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def start(self, src_ids=None, src_mask=None):
            return 0

        def step(self, next_ids, t):
            logits = torch.zeros(next_ids.size(0), 8)
            logits[:, 5] = 1.0
            logits[torch.arange(next_ids.size(0)) == t, 2] = 9.0
            return logits, t + 1

        def reorder(self, state, index):
            return state

    hyps = sample(Scripted(), 0, torch.zeros(4, 1, dtype=torch.long), DecodeConfig(max_tokens=3, greedy=True),
                  eos_id=2)
    assert [h.ids for h in hyps] == [[2], [5, 2], [5, 5, 2], [5, 5, 5]]
    assert [h.finished for h in hyps] == [True, True, True, False]
    assert all(h.score == pytest.approx(sum(h.logprobs)) and len(h.logprobs) == len(h.ids) for h in hyps)


def test_cache_and_token_ids_are_written_in_place():
    model = decoder()
    state = model.start()
    _, state = model.step(torch.tensor([[7, 8, 9]]), state)
    keys, tokens = state.keys[0].data_ptr(), state.tokens.data_ptr()
    for t in range(20):  # within the first buffer's capacity: nothing is re-allocated or concatenated
        _, state = model.step(torch.tensor([[10 + t]]), state)
    assert (state.keys[0].data_ptr(), state.tokens.data_ptr()) == (keys, tokens)
    assert state.tokens[0, :state.length].tolist() == [7, 8, 9, *range(10, 30)]


def test_the_step_head_copy_follows_the_weights_and_is_dropped_for_training():
    model = decoder()
    h = torch.randn(1, 32)
    with torch.no_grad():
        assert torch.allclose(step_logits(model.head, h), model.head(h), atol=1e-6)
        model.head.weight.mul_(2.0)  # an in-place change (an optimizer step, load_state_dict)
        assert torch.allclose(step_logits(model.head, h), model.head(h), atol=1e-6)
    assert "_step_weight" in model.head.__dict__
    model.train()
    assert "_step_weight" not in model.head.__dict__
    step_logits(model.head, h).sum().backward()  # with gradients on: the layer itself, so they reach it
    assert model.head.weight.grad is not None


def test_an_eval_step_calls_no_dropout_concatenation_or_position_range():
    from torch.profiler import ProfilerActivity, profile

    model = decoder()
    state = model.start()
    with torch.no_grad():
        _, state = model.step(torch.tensor([[5, 6]]), state)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.step(torch.tensor([[7]]), state)
    names = [e.key for e in prof.key_averages()]
    assert "aten::dropout" not in names and "aten::cat" not in names and "aten::arange" not in names


def test_rnn_lm_steps_through_the_head_copy_with_the_same_tokens():
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(cell="lstm", n_layers=2, hidden=32, dropout=0.0), V).eval()
    prompt = torch.randint(5, V, (2, 4))
    cfg = DecodeConfig(max_tokens=15, greedy=True)
    got = [h.ids for h in sample(model, model.start(), prompt, cfg)]
    seq, want = prompt, []
    with torch.no_grad():
        for _ in range(cfg.max_tokens):  # the fused nn.LSTM over the whole sequence, then nn.Linear
            h, _ = model.hidden_states(seq)
            ids = model.out(h[:, -1]).argmax(-1)
            want.append(ids)
            seq = torch.cat([seq, ids.view(-1, 1)], 1)
    assert got == torch.stack(want, 1).tolist()
    assert "_step_weight" in model.out.__dict__
