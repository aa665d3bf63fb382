"""seqtool.embeddings and `seqtool embeddings`: which table each family exports, neighbours and
analogies on a hand-made table, and the files and errors of the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seqtool.data.tokenizers import train_tokenizer
from seqtool.embeddings import Table, analogy, find_tables, neighbours
from seqtool.errors import InputError
from seqtool.models.rnn_lm import RNNLM, RNNLMConfig
from seqtool.models.seq2seq import Seq2Seq, Seq2SeqConfig
from seqtool.models.transformer import Transformer, TransformerConfig

WORDS = ["king", "queen", "man", "woman", "apple", "pear"]


def hand_made() -> Table:
    """Vectors (royal, male, fruit): king − man + woman lands on queen; pear is apple's neighbour."""
    tok = train_tokenizer("word", [" ".join(WORDS)])
    vectors = {"king": [1, 1, 0], "queen": [1, -1, 0], "man": [0, 1, 0], "woman": [0, -1, 0],
               "apple": [0, 0.1, 1], "pear": [0.1, 0, 1]}
    weight = torch.full((tok.vocab_size, 3), 0.5)  # specials and the newline: all alike
    for word, v in vectors.items():
        weight[tok.piece_to_id(word)] = torch.tensor(v, dtype=torch.float)
    return Table("embed", "", weight, tok)


def test_neighbours_and_analogy_on_a_hand_made_table():
    table = hand_made()
    near = neighbours(table, "apple", k=2)
    assert near[0][0] == "pear" and near[0][1] == pytest.approx(1 / 1.01)
    assert "apple" not in [t for t, _ in neighbours(table, "apple", k=20)]  # itself and specials left out
    assert not {"<pad>", "<unk>", "<s>", "</s>", "<mask>"} & {t for t, _ in neighbours(table, "king", k=20)}
    assert analogy(table, "man", "king", "woman", k=1)[0][0] == "queen"
    assert analogy(table, "king", "queen", "man", k=1)[0][0] == "woman"
    with pytest.raises(InputError, match="'plum' is not a token of embed"):
        neighbours(table, "plum")
    with pytest.raises(InputError, match="-k must be ≥ 1"):
        neighbours(table, "king", k=0)


def test_each_family_names_its_token_tables():
    assert find_tables(RNNLM(RNNLMConfig(hidden=8, n_layers=1), 20)) == {"embed": ""}
    s2s = Seq2Seq(Seq2SeqConfig(hidden=8, embedding=8, n_layers=1), 20, 30)
    assert find_tables(s2s) == {"src_embed": "src", "tgt_embed": "tgt"}
    small = dict(n_layers=1, d_model=8, n_heads=2, d_ff=16, max_len=16)
    decoder = Transformer(TransformerConfig(arch="decoder", vocab_size=20, positions="learned", **small))
    assert find_tables(decoder) == {"decoder.embed": ""}  # positions are not token embeddings
    mt = Transformer(TransformerConfig(arch="encoder-decoder", vocab_size=20, src_vocab_size=25, **small))
    assert find_tables(mt) == {"encoder.embed": "src", "decoder.embed": "tgt"}


def ok(result) -> None:
    assert result.exit_code == 0, result.stderr or result.stdout


CORPUS = "\n".join(" ".join(WORDS[(i * j) % 6] for j in range(7)) for i in range(30)) + "\n"


def test_export_neighbours_and_errors_from_the_command_line(cli, tmp_text, tmp_path):
    text = tmp_text(CORPUS)
    ws = tmp_path / "lm"
    ok(cli(["train-rnn", text, "-w", ws, "--kind", "word", "--hidden", "8", "--n-layers", "1", "--bptt", "8",
            "--batch-size", "2", "--max-steps", "2", "--device", "cpu"]))
    ok(cli(["embeddings", "-w", ws, "--format", "npy", "-o", tmp_path / "e.npy"]))
    weight = np.load(tmp_path / "e.npy")
    tokens = (tmp_path / "e.metadata.tsv").read_text(encoding="utf-8").split("\n")[:-1]
    assert weight.shape == (len(tokens), 8) and tokens[:5] == ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
    assert tokens[5] == "\\n"  # the newline piece, escaped so that every token stays on its line
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(weight, load_file(ws / "model.safetensors")["embed.weight"])
    # tsv: token + values; projector: vectors.tsv + metadata.tsv; both carry the same numbers
    result = cli(["embeddings", "-w", ws, "-o", "-"])
    ok(result)
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == tokens and np.allclose([[float(v) for v in r[1:]] for r in rows], weight,
                                                          atol=1e-5)
    assert "table embed: the input token embeddings" in result.stderr
    ok(cli(["embeddings", "-w", ws, "--format", "projector", "-o", tmp_path / "proj"]))
    assert np.allclose(np.loadtxt(tmp_path / "proj" / "vectors.tsv", delimiter="\t"), weight, atol=1e-5)
    assert (tmp_path / "proj" / "metadata.tsv").read_text(encoding="utf-8").split("\n")[:-1] == tokens
    # neighbours: the cosine ranking of the exported table, specials and the word itself left out
    result = cli(["embeddings", "-w", ws, "--neighbours", "king", "-k", "3", "--json"])
    ok(result)
    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    cosine = unit @ unit[tokens.index("king")]
    expected = [tokens[i] for i in np.argsort(-cosine) if i >= 5 and tokens[i] != "king"][:3]
    rows = json.loads(result.stdout)  # raw tokens; the plain lines escape them as the TSV files do
    assert [row["token"].replace("\n", "\\n") for row in rows] == expected
    best = sorted(cosine[[tokens.index(t) for t in expected]], reverse=True)
    assert [row["cosine"] for row in rows] == pytest.approx(best, abs=1e-5)
    result = cli(["embeddings", "-w", ws, "--neighbours", "king", "-k", "3"])
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == expected
    result = cli(["embeddings", "-w", ws, "--analogy", "man", "king", "woman", "-k", "2"])
    ok(result)
    assert len(result.stdout.splitlines()) == 2 and "\t" in result.stdout
    # one line and exit 2 for what a user can get wrong
    for argv, message in ((["--neighbours", "plum"], "'plum' is not a token of embed"),
                          (["--table", "tgt", "--neighbours", "king"], "has one embedding table"),
                          ([], "give one of -o PATH"),
                          (["--format", "npy", "-o", "-"], "writes files, not stdout")):
        result = cli(["embeddings", "-w", ws, *argv])
        assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, \
            result.stderr
    result = cli(["embeddings", "-w", tmp_path / "nowhere", "--neighbours", "king"])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_a_translation_model_exports_the_table_asked_for(cli, tmp_text, tmp_path):
    pairs = "".join(f"{a} {b}\t{b.upper()} {a.upper()}\n" for a in WORDS for b in WORDS)
    tsv = tmp_text(pairs, name="pairs.tsv")
    ws = tmp_path / "s2s"
    ok(cli(["train-seq2seq", "-w", ws, "--tsv", tsv, "--kind", "word", "--hidden", "8", "--embedding", "6",
            "--n-layers", "1", "--max-steps", "1", "--eval-every", "1", "--device", "cpu"]))
    from safetensors.numpy import load_file

    published = load_file(ws / "model.safetensors")
    for side, name, word in (("src", "src_embed", "king"), ("tgt", "tgt_embed", "KING")):
        result = cli(["embeddings", "-w", ws, "--table", side, "-o", "-"])
        ok(result)
        assert f"table {name}" in result.stderr
        rows = {line.split("\t")[0]: line.split("\t")[1:] for line in result.stdout.splitlines()}
        assert word in rows and len(rows) == published[f"{name}.weight"].shape[0]
    result = cli(["embeddings", "-w", ws, "--neighbours", "KING"])  # the default table is the source's
    assert result.exit_code == 2 and "'KING' is not a token of src_embed" in result.stderr
