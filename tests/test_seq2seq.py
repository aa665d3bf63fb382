"""The attention seq2seq model, its step interface and decoding, and the parallel-data layer."""

from __future__ import annotations

import random

import pytest
import torch

from seqtool.data.parallel import (
    ParallelBatches,
    ParallelText,
    encode_pairs,
    make_batch,
    read_parallel,
    split_off,
)
from seqtool.decoding import DecodeConfig, beam_search, sample
from seqtool.errors import InputError
from seqtool.models.seq2seq import ATTENTIONS, Seq2Seq, Seq2SeqConfig, TeacherForcing, reverse_padded

PAD, BOS, EOS, V = 0, 2, 3, 13


def toy_batch():
    src = torch.tensor([[5, 6, 7, 8, EOS], [9, 10, EOS, PAD, PAD]])
    return {"src": src, "src_mask": src != PAD,
            "tgt_in": torch.tensor([[BOS, 8, 7, 6, 5], [BOS, 10, 9, PAD, PAD]]),
            "tgt_out": torch.tensor([[8, 7, 6, 5, EOS], [10, 9, EOS, PAD, PAD]])}


def model_for(attention: str, **kw) -> Seq2Seq:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(embedding=8, hidden=16, n_layers=2, attention=attention, dropout=0.0, **kw)
    return Seq2Seq(cfg, V, V).eval()


@pytest.mark.parametrize("attention", [a for a in ATTENTIONS if a != "none"])
@pytest.mark.parametrize("bidirectional,reverse", [(False, False), (True, True)])
def test_attention_sums_to_one_and_ignores_padding(attention, bidirectional, reverse):
    model = model_for(attention, bidirectional=bidirectional, reverse_source=reverse,
                      encoder_cell="gru" if bidirectional else "lstm")
    batch = toy_batch()
    state = model.start(batch["src"], batch["src_mask"])
    state.attention = {}
    model.step(batch["tgt_in"], state)
    (weights,) = state.attention["cross"]  # one layer: (B, 1, T, S)
    weights = weights[:, 0]
    assert weights.shape == (2, 5, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 5), atol=1e-6)
    assert (weights[1, :, 3:] == 0).all()  # padding gets exactly zero


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_stepping_matches_the_teacher_forced_forward(attention, cell):
    model = model_for(attention, decoder_cell=cell)
    batch = toy_batch()
    logits, loss = model(batch)
    assert logits.shape == (2, 5, V) and loss.ndim == 0
    state, steps = model.start(batch["src"]), []
    for t in range(5):
        step_logits, state = model.step(batch["tgt_in"][:, t:t + 1], state)
        steps.append(step_logits)
    assert torch.allclose(torch.stack(steps, 1), logits, atol=1e-5)


def test_reverse_padded_and_reorder():
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    assert reverse_padded(ids, torch.tensor([3, 2])).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]
    model = model_for("general")
    state = model.start(toy_batch()["src"])
    picked = model.reorder(state, torch.tensor([1, 1, 0]))
    assert picked.memory.shape[0] == 3 and torch.equal(picked.mask[0], state.mask[1])
    assert all(h.shape[0] == 3 for h in picked.hidden)


def test_teacher_forcing_schedules():
    assert TeacherForcing(0.9).ratio(10_000) == 0.9
    linear = TeacherForcing(1.0, "linear", steps=100, minimum=0.2)
    assert linear.ratio(0) == 1.0 and abs(linear.ratio(50) - 0.6) < 1e-9 and linear.ratio(500) == 0.2
    for decay in ("exponential", "inverse-sigmoid"):
        s = TeacherForcing(1.0, decay, steps=100, minimum=0.1)
        assert s.ratio(0) >= s.ratio(50) >= s.ratio(100) >= 0.1
    with pytest.raises(InputError):
        TeacherForcing(1.0, "cubic")
    model = Seq2Seq(Seq2SeqConfig(embedding=8, hidden=16, attention="dot"), V, V,
                    teacher_forcing=TeacherForcing(0.0))
    _, loss = model.train()({**toy_batch(), "batch_number": 5})  # scheduled sampling runs
    assert torch.isfinite(loss)


def test_label_smoothing_only_in_training():
    model = model_for("dot")
    model.label_smoothing = 0.1
    _, eval_loss = model.eval()(toy_batch())
    _, train_loss = model.train()(toy_batch())
    assert train_loss > eval_loss  # dropout is 0, so only the smoothing differs


# ---------------------------------------------------------------------------------------------
# learning: a reverse task, then decoding checks on the trained model


def reverse_pairs(n: int, rng: random.Random) -> list[tuple[list[int], list[int]]]:
    pairs = []
    for _ in range(n):
        s = [rng.randrange(5, V) for _ in range(rng.randint(2, 6))]
        pairs.append(([*s, EOS], s[::-1]))
    return pairs


@pytest.fixture(scope="module")
def reverser():
    """A model that learned to reverse sequences, and 100 held-out pairs (trained until exact)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = random.Random(0)
    model = Seq2Seq(Seq2SeqConfig(embedding=32, hidden=64, attention="additive", dropout=0.0), V, V)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    held_out = reverse_pairs(100, random.Random(1))
    accuracy = 0.0
    for step in range(1, 401):
        pairs = reverse_pairs(64, rng)
        _, loss = model.train()(make_batch([p[0] for p in pairs], [p[1] for p in pairs], PAD, BOS, EOS))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            accuracy = exact_match(model.eval(), held_out)
            if accuracy == 1.0:
                break
    return model.eval(), held_out, accuracy


def greedy(model, pairs):
    src = make_batch([p[0] for p in pairs], [p[1] for p in pairs], PAD, BOS, EOS)["src"]
    bos = torch.full((len(pairs), 1), BOS)
    return sample(model, model.start(src), bos, DecodeConfig(max_tokens=10, greedy=True), eos_id=EOS), src


def exact_match(model, pairs) -> float:
    hyps, _ = greedy(model, pairs)
    return sum(h.ids == [*p[1], EOS] for h, p in zip(hyps, pairs, strict=True)) / len(pairs)


def test_reverse_task_is_learned_exactly(reverser):
    _, _, accuracy = reverser
    assert accuracy == 1.0


def test_beam_scores_at_least_greedy_and_beam_one_is_greedy(reverser):
    model, pairs, _ = reverser
    hyps, src = greedy(model, pairs)
    bos = torch.full((len(pairs), 1), BOS)
    beams = beam_search(model, model.start(src), bos, DecodeConfig(max_tokens=10, beam=5), EOS)
    for g, b in zip(hyps, beams, strict=True):
        assert b[0].score >= g.score - 1e-5
    ones = beam_search(model, model.start(src), bos, DecodeConfig(max_tokens=10, beam=1), EOS)
    assert [b[0].ids for b in ones] == [g.ids for g in hyps]


def test_batched_beam_equals_one_at_a_time(reverser):
    model, pairs, _ = reverser
    src = make_batch([p[0] for p in pairs[:8]], [p[1] for p in pairs[:8]], PAD, BOS, EOS)["src"]
    cfg = DecodeConfig(max_tokens=10, beam=3, nbest=2, length_penalty=0.6)
    batched = beam_search(model, model.start(src), torch.full((8, 1), BOS), cfg, EOS)
    for i in range(8):
        row = src[i:i + 1, : int((src[i] != PAD).sum())]
        alone = beam_search(model, model.start(row), torch.full((1, 1), BOS), cfg, EOS)[0]
        assert [h.ids for h in alone] == [h.ids for h in batched[i]]


def test_max_lengths_cap_each_row(reverser):
    model, pairs, _ = reverser
    _, src = greedy(model, pairs[:3])
    out = beam_search(model, model.start(src), torch.full((3, 1), BOS), DecodeConfig(max_tokens=10, beam=2),
                      EOS, max_lengths=[1, 2, 10])
    assert len(out[0][0].ids) <= 1 and len(out[1][0].ids) <= 2


# ---------------------------------------------------------------------------------------------
# parallel data


class Ids:
    """A whitespace tokenizer over fixed ids, enough for the data layer."""

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    def encode_batch(self, texts):
        return [[5 + len(w) for w in t.split()] for t in texts]


def test_read_parallel_line_counts_and_tsv(tmp_path):
    (tmp_path / "a.src").write_text("a\nb\nc\n")
    (tmp_path / "a.tgt").write_text("x\ny\n")
    with pytest.raises(InputError, match="3 lines.*2"):
        read_parallel(str(tmp_path / "a.src"), str(tmp_path / "a.tgt"))
    (tmp_path / "p.tsv").write_text("a b\tx y\nc\tz\n")
    text = read_parallel(tsv=str(tmp_path / "p.tsv"))
    assert text.src == ["a b", "c"] and text.tgt == ["x y", "z"]
    (tmp_path / "bad.tsv").write_text("a\tb\nno tab here\n")
    with pytest.raises(InputError, match="bad.tsv:2"):
        read_parallel(tsv=str(tmp_path / "bad.tsv"))
    train, valid = split_off(ParallelText(["1", "2", "3", "4"], ["a", "b", "c", "d"], "x"), 0.25)
    assert train.src == ["1", "2", "3"] and valid.src == ["4"]


def test_skipped_pairs_are_counted_and_listed():
    text = ParallelText(["a b", "", "c", "a b c d e f", "d"], ["x", "y", " ", "z", "w w"], "t")
    data = encode_pairs(text, Ids(), Ids(), max_len=4)
    assert data.kept == [1, 5]
    assert data.skipped == {"an empty source": [2], "an empty target": [3],
                            "more than 4 tokens (--max-len)": [4]}
    assert any("1 pair(s) with an empty source (lines 2)" in line for line in data.report("t"))
    assert data.src[0][-1] == EOS


def test_batches_are_bucketed_deterministic_and_resumable():
    rng = random.Random(0)
    lines = [" ".join("w" * rng.randint(1, 3) for _ in range(rng.randint(1, 12))) for _ in range(300)]
    data = encode_pairs(ParallelText(lines, lines, "t"), Ids(), Ids())
    source = ParallelBatches(data, batch_tokens=120, pad_id=0, bos_id=2, eos_id=3, seed=7)
    epoch = list(source.batches(1, 0))
    assert len(epoch) == source.steps_per_epoch == len(list(source.batches(2, 0)))
    assert all(b["src"].numel() <= 120 and b["tgt_in"].numel() <= 120 for b in epoch)
    assert sum(b["src"].size(0) for b in epoch) == 300
    resumed = list(source.batches(1, 5))
    assert all(torch.equal(a["src"], b["src"]) for a, b in zip(epoch[5:], resumed, strict=True))
    assert resumed[0]["batch_number"] == source.steps_per_epoch + 5
    assert not torch.equal(epoch[0]["src"], next(source.batches(2, 0))["src"])  # reshuffled per epoch
    with pytest.raises(InputError, match="batch-tokens"):
        ParallelBatches(data, batch_tokens=4, pad_id=0, bos_id=2, eos_id=3)
