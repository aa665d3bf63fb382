"""The Transformer: masks, KV cache, attention paths, positions, MLM masking, overfitting per arch."""

from __future__ import annotations

import math

import pytest
import torch

from seqtool.data.masking import mask_tokens
from seqtool.errors import InputError
from seqtool.models.attention import attend
from seqtool.models.transformer import ARCHS, Transformer, TransformerConfig, sinusoidal_encoding

V, SRC_V, PAD = 23, 19, 0


def tiny(arch: str = "decoder", **kw) -> Transformer:
    torch.manual_seed(0)
    options = dict(arch=arch, vocab_size=V, src_vocab_size=SRC_V, n_layers=2, n_heads=2, d_model=16,
                   d_ff=32, dropout=0.0, max_len=48)
    return Transformer(TransformerConfig(**{**options, **kw})).eval()


def ids(*shape: int, vocab: int = V) -> torch.Tensor:
    return torch.randint(5, vocab, shape)


def batch_for(arch: str, B: int = 3, T: int = 9) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    x = ids(B, T)
    if arch == "encoder-decoder":
        src = ids(B, 7, vocab=SRC_V)
        src[0, 5:] = PAD
        return {"src": src, "tgt_in": x, "tgt_out": x}
    return {"inputs": x, "targets": x}


VARIANTS = [dict(), dict(norm_first=False), dict(positions="learned"), dict(activation="gelu"),
            dict(activation="gelu-tanh", tie=False, bias=False)]


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_loss(arch):
    logits, loss = tiny(arch)(batch_for(arch))
    assert logits.shape == (3, 9, V)
    assert loss.ndim == 0 and math.isfinite(loss.item())


def test_causal_mask_future_tokens_do_not_matter():
    model = tiny("decoder")
    x = ids(2, 10)
    y = x.clone()
    y[:, 6:] = ids(2, 4)
    a, b = model.logits({"inputs": x}), model.logits({"inputs": y})
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("arch", ["encoder", "encoder-decoder"])
def test_padding_changes_nothing(arch):
    model = tiny(arch)
    vocab = SRC_V if arch == "encoder-decoder" else V
    short = ids(1, 5, vocab=vocab)
    padded = torch.cat([short, torch.full((1, 4), PAD)], 1)
    if arch == "encoder":
        a, b = model.logits({"inputs": short}), model.logits({"inputs": padded})[:, :5]
    else:
        tgt = ids(1, 6)
        a = model.logits({"src": short, "tgt_in": tgt})
        b = model.logits({"src": padded, "tgt_in": tgt})
    assert (a - b).abs().max() < 1e-5


@pytest.mark.parametrize("arch", ["decoder", "encoder-decoder"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "-")
def test_kv_cache_steps_equal_full_recomputation(arch, variant):
    model = tiny(arch, **variant)
    batch = batch_for(arch)
    full = model.logits(batch)  # (B, T, V)
    x = batch["tgt_in"] if arch == "encoder-decoder" else batch["inputs"]
    state = model.start(batch.get("src"))
    logits, state = model.step(x[:, :4], state)  # a prompt, then one token at a time
    steps = [logits]
    for t in range(4, x.size(1)):
        logits, state = model.step(x[:, t:t + 1], state)
        steps.append(logits)
    assert state.length == x.size(1)
    assert (torch.stack(steps, 1) - full[:, 3:]).abs().max() <= 1e-5


def test_kv_cache_chunks_after_a_prefix_and_reorder():
    model = tiny("decoder")
    x = ids(3, 12)
    full = model.logits({"inputs": x})
    state = model.start()
    _, state = model.step(x[:, :5], state)
    state = model.reorder(state, torch.tensor([2, 0, 0]))
    logits, state = model.step(x[[2, 0, 0], 5:9], state)  # several new tokens after a cached prefix
    assert (logits - full[[2, 0, 0], 8]).abs().max() <= 1e-5


def test_decoder_slides_its_window_past_max_len():
    model = tiny("decoder", max_len=8)
    state = model.start()
    for t in range(20):
        logits, state = model.step(torch.tensor([[5 + t % 7]]), state)
        assert state.length <= 8
    assert logits.shape == (1, V)


def test_fused_and_explicit_attention_agree():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)
    weights: list[torch.Tensor] = []
    key_mask = torch.tensor([True, True, True, False, False]).view(1, 1, 1, 5)
    for causal, mask in ((True, None), (False, key_mask)):
        fused = attend(q, k, v, mask, causal, 0.0)
        explicit = attend(q, k, v, mask, causal, 0.0, weights)
        assert (fused - explicit).abs().max() < 1e-6
    assert torch.allclose(weights[-1].sum(-1), torch.ones(2, 2, 5))
    assert weights[-1][..., 3:].abs().max() == 0  # masked keys get no weight
    assert weights[0].triu(1).abs().max() == 0  # causal: nothing from the future


@pytest.mark.parametrize("arch", ARCHS)
def test_model_level_weights_on_request(arch):
    model = tiny(arch)
    batch = batch_for(arch)
    weights: dict[str, list[torch.Tensor]] = {}
    assert torch.allclose(model.logits(batch), model.logits(batch, weights=weights), atol=1e-5)
    expected = {"decoder": ["decoder"], "encoder": ["encoder"],
                "encoder-decoder": ["encoder", "decoder", "cross"]}[arch]
    assert sorted(weights) == sorted(expected)
    assert all(len(w) == 2 for w in weights.values())  # one per layer
    if arch == "encoder-decoder":
        assert weights["cross"][0].shape == (3, 2, 9, 7)
        assert weights["cross"][0][0, :, :, 5:].abs().max() == 0  # source padding is never attended


def test_sinusoidal_encoding_values():
    pe = sinusoidal_encoding(50, 8)
    assert pe.shape == (50, 8)
    assert torch.equal(pe[0, 0::2], torch.zeros(4)) and torch.equal(pe[0, 1::2], torch.ones(4))
    pos, i = 7, 2  # PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)
    angle = pos / 10000 ** (2 * i / 8)
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_options_change_the_modules():
    tied, untied = tiny(tie=True), tiny(tie=False)
    assert tied.head.weight is tied.decoder.embed.weight
    assert untied.head.weight is not untied.decoder.embed.weight
    assert hasattr(tiny(positions="learned").decoder, "pos") and not hasattr(tiny().decoder, "pos")
    assert isinstance(tiny(norm_first=False).decoder.norm, torch.nn.Identity)
    assert tiny(bias=False).decoder.layers[0].self_attn.qkv.bias is None
    assert tiny(activation="gelu").decoder.layers[0].ff.activation.approximate == "none"
    assert tiny("encoder-decoder").encoder.embed.num_embeddings == SRC_V
    assert tiny("encoder").encoder.embed.num_embeddings == V
    assert tiny().arch()["model"] == "transformer"


def test_dropout_and_label_smoothing_act_in_training():
    model = tiny(dropout=0.5).train()
    batch = batch_for("decoder")
    assert not torch.equal(model(batch)[0], model(batch)[0])
    plain, smooth = tiny().train(), tiny().train()
    smooth.label_smoothing = 0.1
    assert smooth(batch)[1] != plain(batch)[1]
    assert smooth.eval()(batch)[1] == plain.eval()(batch)[1]  # validation loss stays honest


@pytest.mark.parametrize("bad", [dict(arch="rnn"), dict(d_model=15, n_heads=4), dict(positions="rope"),
                                 dict(activation="tanh"), dict(dropout=1.0), dict(n_layers=0),
                                 dict(d_model=9, n_heads=1)])
def test_bad_config_is_an_input_error(bad):
    with pytest.raises(InputError, match="model\\."):
        TransformerConfig(**bad)


def test_encoder_refuses_to_generate():
    with pytest.raises(InputError, match="--fill"):
        tiny("encoder").start()


def test_mlm_masking_proportions():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, 1000, (64, 256))
    x[:, :3] = PAD  # padding and other specials are never selected
    inputs, targets = mask_tokens(x, mask_id=4, pad_id=PAD, vocab_size=1000, special_ids=(0, 1, 2, 3, 4),
                                  generator=g)
    selected = targets != PAD
    real = x != PAD
    assert not selected[~real].any()
    assert selected.sum() / real.sum() == pytest.approx(0.15, abs=0.01)
    masked = inputs[selected] == 4
    kept = inputs[selected] == x[selected]
    random = ~masked & ~kept
    n = selected.sum().item()
    assert masked.sum() / n == pytest.approx(0.8, abs=0.02)
    assert kept.sum() / n == pytest.approx(0.1 + 0.1 / 995, abs=0.02)
    assert random.sum() / n == pytest.approx(0.1, abs=0.02)
    assert (inputs[selected][random] >= 5).all()  # random replacements are ordinary tokens
    assert torch.equal(inputs[~selected], x[~selected])
    assert torch.equal(targets[selected], x[selected])


def _overfit(model: Transformer, batch: dict[str, torch.Tensor], steps: int) -> float:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        _, loss = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


@pytest.mark.parametrize("arch", ARCHS)
def test_overfits_a_tiny_copy_task(arch):
    """The Annotated Transformer's smoke test: copy a sequence (MLM: recover the masked tokens)."""
    torch.manual_seed(0)
    model = tiny(arch, d_model=32, d_ff=64, n_heads=4)
    x = torch.randint(5, V, (8, 10))
    if arch == "encoder-decoder":
        src = x.clamp(max=SRC_V - 1)
        bos = torch.full((8, 1), 2)
        batch = {"src": src, "tgt_in": torch.cat([bos, src[:, :-1]], 1), "tgt_out": src}
    elif arch == "decoder":
        batch = {"inputs": torch.cat([x, x], 1)[:, :-1], "targets": torch.cat([x, x], 1)[:, 1:]}
    else:
        inputs, targets = mask_tokens(x, mask_id=4, pad_id=PAD, vocab_size=V, special_ids=(0, 1, 2, 3, 4),
                                      generator=torch.Generator().manual_seed(0))
        batch = {"inputs": inputs, "targets": targets}
    assert _overfit(model, batch, 200) < 0.1
    if arch == "encoder-decoder":  # and greedy decoding through the cache copies the source
        model.eval()
        state = model.start(batch["src"])
        out, token = [], torch.full((8, 1), 2)
        for _ in range(10):
            logits, state = model.step(token, state)
            token = logits.argmax(-1, keepdim=True)
            out.append(token)
        assert (torch.cat(out, 1) == batch["src"]).float().mean() > 0.9


def test_block_batches_shuffle_per_epoch_and_resume():
    from seqtool.data.batching import BlockBatches

    ids = torch.arange(1000)
    source = BlockBatches(ids, batch_size=4, block=10, seed=3)
    assert source.steps_per_epoch == (1000 - 10) // 10 // 4
    epochs = [list(source.batches(e, 0)) for e in (0, 1)]
    for batches in epochs:
        for b in batches:
            assert b["inputs"].shape == (4, 10) and torch.equal(b["targets"], b["inputs"] + 1)
            assert torch.equal(b["inputs"][:, 1:], b["inputs"][:, :-1] + 1)  # contiguous text
        starts = torch.cat([b["inputs"][:, 0] for b in batches])
        assert len(set(starts.tolist())) == len(starts)  # no block twice in an epoch
        assert len({int(s) % 10 for s in starts}) == 1  # one offset per epoch
    assert not torch.equal(epochs[0][0]["inputs"], epochs[1][0]["inputs"])  # reshuffled
    again = list(source.batches(1, 2))  # resuming mid-epoch gives the same batches
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(again, epochs[1][2:], strict=True))
    tiny = BlockBatches(torch.arange(35), batch_size=8, block=10, seed=0)  # 2 blocks: one small batch
    assert tiny.steps_per_epoch == 1 and next(tiny.batches(0, 0))["inputs"].shape == (2, 10)
    with pytest.raises(InputError, match="too short"):
        BlockBatches(torch.arange(15), batch_size=2, block=10, seed=0)
