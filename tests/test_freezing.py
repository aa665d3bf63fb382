"""--freeze (models/freezing.py): each model class's freeze_groups pick the parameters a spec names."""

import pytest

from seqtool.errors import InputError
from seqtool.models.freezing import freeze
from seqtool.models.rnn_lm import RNNLM, RNNLMConfig
from seqtool.models.seq2seq import Seq2Seq, Seq2SeqConfig
from seqtool.models.transformer import Transformer, TransformerConfig


def frozen(model, *specs: str) -> set[str]:
    freeze(model, list(specs))
    return {name for name, p in model.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("cell", ["lstm", "ugrnn"])
def test_rnn_layers_freeze_that_layer_only(cell):
    model = RNNLM(RNNLMConfig(cell=cell, n_layers=2, hidden=8, embedding=8), 11)
    names = frozen(model, "layers:0")
    assert names and all(n.startswith(("rnn.", "layers.0.")) and "_l1" not in n for n in names)
    # a UGRNN's layer 1 is layers.1.*, whose weights also end in _l0: they stay trainable
    assert not any(n.startswith("layers.1.") for n in names)
    assert frozen(RNNLM(RNNLMConfig(cell=cell, n_layers=2, hidden=8, embedding=8), 11),
                  "embeddings") == {"embed.weight"}


def test_transformer_and_seq2seq_groups():
    model = Transformer(TransformerConfig(arch="encoder-decoder", vocab_size=11, src_vocab_size=12,
                                          n_layers=2, n_heads=2, d_model=8))
    names = frozen(model, "layers:1")
    assert names and all(".layers.1." in n for n in names) and any(n.startswith("decoder.") for n in names)
    assert frozen(Transformer(TransformerConfig(arch="decoder", vocab_size=11, n_layers=1, n_heads=2,
                                                d_model=8, positions="learned")),
                  "embeddings") == {"decoder.embed.weight", "decoder.pos.weight"}
    s2s = Seq2Seq(Seq2SeqConfig(n_layers=1), 11, 12, 0)
    encoder = {n for n, _ in s2s.named_parameters() if n.startswith(("encoder.", "src_embed."))}
    assert frozen(s2s, "encoder") == encoder


def test_a_group_the_model_lacks_is_one_error():
    with pytest.raises(InputError, match="--freeze encoder: this model has no such parameters"):
        freeze(RNNLM(RNNLMConfig(n_layers=1, hidden=8, embedding=8), 11), ["encoder"])
    with pytest.raises(InputError, match="is not one of embeddings, encoder, layers:A-B"):
        freeze(RNNLM(RNNLMConfig(n_layers=1, hidden=8, embedding=8), 11), ["wheels"])
