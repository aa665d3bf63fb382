"""The recurrent LM, its batches and the n-gram baseline: shapes, stepping == the full pass, carried
state == one pass, memorising a text, deterministic batches, normalised n-gram probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from seqtool.data.batching import StreamBatches, WindowBatches, stream_eval_batches, window_eval_batches
from seqtool.data.tokenizers import train_tokenizer
from seqtool.decoding import DecodeConfig, TextStream
from seqtool.errors import InputError
from seqtool.evaluation import lm_totals
from seqtool.metrics import lm_scores
from seqtool.models import load_model
from seqtool.models.ngram import NGramLM
from seqtool.models.rnn_lm import CELLS, RNNLM, RNNLMConfig
from seqtool.training.lm import encode

V = 20
TEXT = ("It was a bright cold day in April, and the clocks were striking thirteen.\n"
        "Winston Smith, his chin nuzzled into his breast in an effort to escape the vile wind,\n"
        "slipped quickly through the glass doors of Victory Mansions, though not quickly enough\n"
        "to prevent a swirl of gritty dust from entering along with him.\n")



def tiny(cell: str = "lstm", **kw) -> RNNLM:
    torch.manual_seed(0)
    cfg = RNNLMConfig(cell=cell, **{"n_layers": 2, "hidden": 16, "embedding": 8, "dropout": 0.0, **kw})
    return RNNLM(cfg, V).eval()


def batch(ids: torch.Tensor) -> dict:
    return {"inputs": ids[:, :-1], "targets": ids[:, 1:], "ntokens": ids[:, 1:].numel()}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("residual", [False, True])
def test_shapes_and_stepping_matches_the_full_pass(cell, residual):
    model = tiny(cell, residual=residual)
    ids = torch.randint(0, V, (3, 13), generator=torch.Generator().manual_seed(1))
    logits, loss, state = model(batch(ids))
    assert logits.shape == (3, 12, V) and loss.dim() == 0
    assert all(s.shape == (2, 3, 16) for s in state) and len(state) == (2 if cell == "lstm" else 1)
    # a prompt of 4 tokens in one step, then one token at a time through the cell kernels
    out, st = model.step(ids[:, :4], model.start())
    steps = [out]
    for t in range(4, 12):
        out, st = model.step(ids[:, t:t + 1], st)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), logits[:, 3:], atol=1e-5, rtol=1e-4)
    for layer, step_state in enumerate(st):  # per layer (h,) or (h, c), each (B, H)
        for a, b in zip(step_state, state, strict=True):
            torch.testing.assert_close(a, b[layer], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("residual", [False, True])
def test_the_relu_rnn_is_elmans_recurrence_with_relu(residual):
    """h_t = max(0, W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), checked by hand on the first layer; the
    fused path runs torch's RNN_RELU kernel (cuDNN's on GPU)."""
    model = tiny("rnn-relu", n_layers=1, residual=residual)
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(3))
    (h,) = model.hidden_states(ids)[1]
    w_ih, w_hh, b_ih, b_hh = model._layer_weights(0)
    x, expected = model.embed(ids), torch.zeros(2, 16)
    for t in range(ids.size(1)):
        expected = torch.relu(x[:, t] @ w_ih.t() + b_ih + expected @ w_hh.t() + b_hh)
    torch.testing.assert_close(h[0], expected, atol=1e-5, rtol=1e-4)
    if not residual:
        assert model.rnn.nonlinearity == "relu"
    tanh = tiny("rnn", n_layers=1, residual=residual)
    tanh.load_state_dict(model.state_dict())
    assert not torch.allclose(tanh.hidden_states(ids)[1][0], h)


def test_window_batches_give_one_prediction_per_row():
    model = tiny()
    logits, loss = model({"inputs": torch.randint(0, V, (5, 7)), "targets": torch.randint(0, V, (5,))})
    assert logits.shape == (5, V) and loss.dim() == 0


@pytest.mark.parametrize("cell", ["lstm", "ugrnn"])
def test_chunks_with_carried_state_equal_one_pass(cell):
    model = tiny(cell)
    ids = torch.randint(0, V, (2, 31), generator=torch.Generator().manual_seed(2))
    full_logits, _, full_state = model(batch(ids))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    state, chunks = None, []
    for a in range(0, 30, 7):
        logits, _, state = model({"inputs": inputs[:, a:a + 7], "targets": targets[:, a:a + 7]}, state=state)
        chunks.append(logits)
    torch.testing.assert_close(torch.cat(chunks, 1), full_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state[0], full_state[0], atol=1e-5, rtol=1e-4)


def test_causal_and_reorder():
    model = tiny("gru")
    ids = torch.randint(0, V, (1, 10))
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % V
    a, b = model(batch(ids))[0], model(batch(changed))[0]
    torch.testing.assert_close(a[:, :5], b[:, :5])
    _, state = model.step(torch.randint(0, V, (3, 4)), None)
    picked = model.reorder(state, torch.tensor([2, 2, 0]))
    for layer in range(2):
        (h,), (before,) = picked[layer], state[layer]
        assert torch.equal(h[0], before[2]) and torch.equal(h[1], before[2]) and torch.equal(h[2], before[0])


def test_tying_and_arch_round_trip():
    tied, untied = tiny(embedding=0), tiny(embedding=8)
    assert tied.tied and tied.out.weight is tied.embed.weight
    assert not untied.tied
    assert not tiny(embedding=16, tie=False).tied
    rebuilt = load_model(tied.arch())
    rebuilt.load_state_dict(tied.state_dict())
    ids = torch.randint(0, V, (2, 6))
    torch.testing.assert_close(rebuilt(batch(ids))[0], tied(batch(ids))[0])


def test_config_checks():
    with pytest.raises(InputError, match="model.cell must be one of rnn, rnn-relu, gru, lstm, ugrnn"):
        RNNLMConfig(cell="transformer")
    for bad in ({"n_layers": 0}, {"hidden": -1}, {"embedding": -2}, {"dropout": 1.0}):
        with pytest.raises(InputError):
            RNNLMConfig(**bad)


def test_memorises_a_300_character_text_and_greedy_reproduces_it():
    text = TEXT[:300]
    tok = train_tokenizer("char", text.splitlines())
    ids = encode(tok, text.splitlines())
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(cell="lstm", n_layers=1, hidden=96, embedding=32, dropout=0.0), tok.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    data = {"inputs": ids[None, :-1], "targets": ids[None, 1:]}
    for _ in range(300):
        _, loss, _ = model(data)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if loss.item() < 0.02:
            break
    assert loss.item() < 0.05
    model.eval()
    prompt = text[:12]
    stream = TextStream(model, tok, prompt, DecodeConfig(greedy=True, max_tokens=len(text) - len(prompt)))
    assert prompt + "".join(stream) == text


def test_stream_batches_are_contiguous_and_resumable():
    ids = torch.arange(103)
    source = StreamBatches(ids, batch_size=4, bptt=10)
    assert source.steps_per_epoch == 3  # 25 tokens per row: 10 + 10 + 5
    batches = list(source.batches(0, 0))
    rows = torch.cat([b["inputs"] for b in batches], 1)
    assert torch.equal(rows, torch.arange(100).view(4, 25))
    assert all(torch.equal(b["targets"], b["inputs"] + 1) for b in batches)
    assert torch.equal(list(source.batches(5, 1))[0]["inputs"], batches[1]["inputs"])
    with pytest.raises(InputError, match="too short.*batch size 8 × bptt 20 needs at least 161"):
        StreamBatches(ids, batch_size=8, bptt=20)


def test_window_batches_shuffle_per_epoch_deterministically():
    ids = torch.arange(50) * 3
    source = WindowBatches(ids, batch_size=4, window=5, seed=1)
    epoch0 = [b["inputs"] for b in source.batches(0, 0)]
    assert all(torch.equal(a, b["inputs"]) for a, b in zip(epoch0, source.batches(0, 0), strict=True))
    assert not all(torch.equal(a, b["inputs"]) for a, b in zip(epoch0, source.batches(1, 0), strict=True))
    assert torch.equal(next(iter(source.batches(0, 2)))["inputs"], epoch0[2])
    b = epoch0[0]
    assert torch.equal(b[:, 1:] - b[:, :-1], torch.full((4, 4), 3))
    first = next(iter(source.batches(0, 0)))
    assert torch.equal(first["targets"], first["inputs"][:, -1] + 3)
    starts = torch.cat([x[:, 0] for x in epoch0]) // 3
    assert len(set(starts.tolist())) == len(starts) == source.steps_per_epoch * 4  # no example twice
    with pytest.raises(InputError, match="fewer than one batch"):
        WindowBatches(torch.arange(8), batch_size=4, window=6, seed=0)


def test_window_order_is_a_seeded_permutation_without_a_list_of_all_starts(monkeypatch):
    from seqtool.data import batching

    def no_randperm(*args, **kwargs):
        raise AssertionError("a randperm over every start holds 8 bytes per token")

    monkeypatch.setattr(torch, "randperm", no_randperm)
    monkeypatch.setattr(batching, "ORDER_CHUNK", 12)  # 3 batches' starts at a time: resumes cross chunks
    ids = torch.arange(45)  # 40 windows of 5: 10 batches of 4, every start once per epoch
    source = WindowBatches(ids, batch_size=4, window=5, seed=3)
    epoch = [b["inputs"][:, 0] for b in source.batches(2, 0)]
    visited = torch.cat(epoch).tolist()
    assert sorted(visited) == list(range(40)) and visited != list(range(40))
    for start in range(10):  # a resume at any step continues bit-identically
        assert all(torch.equal(a, b["inputs"][:, 0]) for a, b in zip(epoch[start:], source.batches(2, start),
                                                                     strict=True))
    assert torch.cat([b["inputs"][:, 0] for b in source.batches(3, 0)]).tolist() != visited
    for n in (1, 2, 3, 7, 64, 1000, 4097):
        for seed in (0, 1):
            order = batching.Permutation(n, seed)(torch.arange(n))
            assert sorted(order.tolist()) == list(range(n))
    big = batching.Permutation(250_000_000, 1)  # a 1 GB corpus's starts: any position, in O(1) memory
    assert torch.equal(big(torch.arange(10**6, 10**6 + 8)), big(torch.arange(10**6 + 8))[10**6:])
    assert int(big(torch.arange(1000)).max()) > 200_000_000  # spread over the whole range


def test_eval_batches_score_every_token_once():
    ids = torch.arange(57)
    targets = torch.cat([b["targets"].flatten() for b in stream_eval_batches(ids, 4, 5)])
    assert sorted(targets.tolist()) == list(range(1, 57))  # 4 rows of 14
    short = list(stream_eval_batches(torch.arange(6), 32, 100))
    assert len(short) == 1 and short[0]["targets"].tolist() == [[1, 2, 3, 4, 5]]
    windows = list(window_eval_batches(ids, 10, 7))
    assert sum(b["ntokens"] for b in windows) == 50 and windows[0]["targets"][0] == 7


def test_lm_nll_and_scores():
    model = tiny()
    ids = torch.randint(0, V, (40,))
    nll, n, _ = lm_totals(model, stream_eval_batches(ids, 1, 8), carries_state=True)
    _, loss, _ = model(batch(ids[None]))
    assert n == 39 and nll / n == pytest.approx(loss.item(), rel=1e-5)
    scores = lm_scores(nll, n, char_level=True)
    assert scores["ppl"] == pytest.approx(math.exp(scores["loss"])) and scores["bpc"] == pytest.approx(
        scores["loss"] / math.log(2))
    assert "bpc" not in lm_scores(nll, n)


@pytest.mark.parametrize("smoothing", ["kn", "addk"])
@pytest.mark.parametrize("order", [1, 2, 4])
def test_ngram_is_a_distribution(smoothing, order):
    ids = [int(x) for x in torch.randint(2, 9, (500,), generator=torch.Generator().manual_seed(0))]
    lm = NGramLM(order, 12, smoothing).fit(ids)
    for context in [(), (3,), (4, 4, 4), (11, 11), (2, 3, 4)]:
        assert sum(lm.prob(context, w) for w in range(12)) == pytest.approx(1.0, abs=1e-9)
    nll, n = lm.nll(ids[:100])
    assert n == 99 and nll > 0


def test_ngram_values_and_baseline_ordering():
    lm = NGramLM(1, 4, "addk", k=1.0).fit([0, 0, 1])  # counts 2, 1, 0, 0 (+1 each) over 3 + 4
    assert lm.prob((), 0) == pytest.approx(3 / 7) and lm.prob((), 3) == pytest.approx(1 / 7)
    text = [int(c) for c in "0123456789" * 30]
    held = [int(c) for c in "0123456789" * 3]
    for smoothing in ("kn", "addk"):
        bigram, unigram = (NGramLM(n, 10, smoothing).fit(text) for n in (2, 1))
        assert bigram.nll(held)[0] < unigram.nll(held)[0]
    with pytest.raises(InputError):
        NGramLM(0, 10)
    with pytest.raises(InputError):
        NGramLM(3, 10, "witten-bell")
