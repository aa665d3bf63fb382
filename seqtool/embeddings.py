"""A trained model's input token embeddings: the tables a workspace holds, export (TSV, the Embedding
Projector's vectors + metadata, NPY), nearest neighbours by cosine and analogies (b − a + c, Mikolov
et al. 2013: king − man + woman ≈ queen).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seqtool.errors import InputError
from seqtool.storage import atomic_write, atomic_write_with

FORMATS = ("tsv", "projector", "npy")
SIDES = ("src", "tgt")


@dataclass
class Table:
    """One embedding table: the module that holds it, the tokenizer side that numbers its rows ("" for a
    model with one tokenizer, else src or tgt), the weights (V, D) and the vocabulary."""

    name: str  # e.g. embed, src_embed, encoder.embed
    side: str
    weight: torch.Tensor  # (V, D)
    tokenizer: Any

    @property
    def description(self) -> str:
        V, D = self.weight.shape
        where = {"src": "the encoder's source", "tgt": "the decoder's target"}.get(self.side, "the input")
        return f"table {self.name}: {where} token embeddings, {V:,} tokens × {D}"

    def tokens(self) -> list[str]:
        return [self.tokenizer.id_to_piece(i) for i in range(self.weight.size(0))]


def find_tables(model: nn.Module) -> dict[str, str]:
    """{module name: side} of the token embeddings in `model` (positions left out). A model with an
    encoder and a decoder has a src and a tgt table; any other has one, side ""."""
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Embedding) and name.rsplit(".", 1)[-1] != "pos"]

    def side(name: str) -> str:
        if len(names) < 2:
            return ""
        return "src" if "src" in name or name.split(".")[-2:-1] == ["encoder"] else "tgt"

    return {name: side(name) for name in names}


def open_table(ws: Any, side: str | None = None) -> Table:
    """The embedding table of a workspace's published model: its only one, or the `side` (src | tgt) of
    a translation model (default src)."""
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.models import load_published

    model = load_published(ws)
    tables = find_tables(model)
    if not tables:
        raise InputError(f"the {ws.kind} model in {ws.path} has no token embedding",
                         hint="use a language-model, translation or classifier workspace")
    sides = {s: name for name, s in tables.items()}
    if side and "" in sides:
        raise InputError(f"--table {side}: the {ws.kind} model in {ws.path} has one embedding table",
                         hint="leave --table out")
    want = "" if "" in sides else (side or "src")
    if want not in sides:
        raise InputError(f"--table must be one of {', '.join(SIDES)}; got {side!r}")
    name = sides[want]
    weight = model.get_submodule(name).weight.detach().float().cpu()
    tok = load_tokenizer(ws.tokenizer_dir, want or None)
    if tok.vocab_size != weight.size(0):
        raise InputError(f"workspace {ws.path} is damaged: its tokenizer has {tok.vocab_size:,} tokens but "
                         f"{name} has {weight.size(0):,} rows", hint="restore it or retrain")
    return Table(name, want, weight, tok)


# ---------------------------------------------------------------------------------------------
# export


def tsv_cell(token: str) -> str:
    """A token as one TSV cell: backslash, tab, newline and carriage return escaped."""
    return token.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _rows(weight: torch.Tensor) -> list[str]:
    return ["\t".join(f"{v:.6g}" for v in row) for row in weight.tolist()]


def export(table: Table, fmt: str, path: Path) -> list[Path]:
    """Write the table as `fmt`; returns the files written.
    tsv: token<TAB>v1<TAB>…<TAB>vD per row, in id order (PATH may be '-': stdout, done by the caller)
    projector: PATH/vectors.tsv (values) + PATH/metadata.tsv (one token a line), the TensorFlow
      Embedding Projector's pair
    npy: PATH, a (V, D) float32 array, + PATH without .npy + .metadata.tsv (the tokens)"""
    if fmt == "tsv":
        atomic_write(path, tsv_text(table))
        return [path]
    metadata = "".join(tsv_cell(t) + "\n" for t in table.tokens())
    if fmt == "projector":
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} is a file; --format projector writes a directory",
                             hint="pass a directory for -o")
        atomic_write(path / "vectors.tsv", "".join(r + "\n" for r in _rows(table.weight)))
        atomic_write(path / "metadata.tsv", metadata)
        return [path / "vectors.tsv", path / "metadata.tsv"]
    if fmt == "npy":
        import numpy as np

        stem = path.with_suffix("") if path.suffix == ".npy" else path
        atomic_write_with(path, lambda tmp: tmp.write_bytes(_npy_bytes(np, table.weight.numpy())))
        atomic_write(stem.with_name(stem.name + ".metadata.tsv"), metadata)
        return [path, stem.with_name(stem.name + ".metadata.tsv")]
    raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")


def _npy_bytes(np: Any, array: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array.astype("float32"), allow_pickle=False)
    return buffer.getvalue()


def tsv_text(table: Table) -> str:
    """The tsv format as text (for -o -)."""
    tokens = [tsv_cell(t) for t in table.tokens()]
    return "".join(f"{t}\t{r}\n" for t, r in zip(tokens, _rows(table.weight), strict=True))


# ---------------------------------------------------------------------------------------------
# neighbours and analogies


def token_id(table: Table, word: str) -> int:
    """The row of `word`: a piece of the vocabulary, or text the tokenizer turns into one known token."""
    tok = table.tokenizer
    found = tok.piece_to_id(word)
    if found != tok.unk_id or word == tok.id_to_piece(tok.unk_id):
        return int(found)
    ids = tok.encode(word)
    if len(ids) == 1 and ids[0] != tok.unk_id:
        return int(ids[0])
    split = f" (it splits into {len(ids)} pieces: {' '.join(tok.id_to_piece(i) for i in ids)})" \
        if len(ids) > 1 else ""
    raise InputError(f"{word!r} is not a token of {table.name}{split}",
                     hint="pass a token of the model's vocabulary: seqtool embeddings -w WS -o - lists them")


def _specials(tok: Any, size: int) -> set[int]:
    ids = (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id)
    return {int(i) for i in ids if i is not None and 0 <= int(i) < size}


def nearest(table: Table, vector: torch.Tensor, k: int, exclude: set[int]) -> list[tuple[str, float]]:
    """The k tokens whose embeddings have the highest cosine with `vector` (D,), special tokens and
    `exclude` left out: [(token, cosine)], best first."""
    if k < 1:
        raise InputError(f"-k must be ≥ 1, got {k}")
    cosine = F.cosine_similarity(table.weight, vector[None, :], dim=-1)  # (V,)
    for i in exclude | _specials(table.tokenizer, table.weight.size(0)):
        cosine[i] = float("-inf")
    best = torch.topk(cosine, min(k, int(torch.isfinite(cosine).sum())))
    return [(table.tokenizer.id_to_piece(int(i)), float(c)) for c, i in zip(best.values, best.indices,
                                                                            strict=True)]


def neighbours(table: Table, word: str, k: int = 10) -> list[tuple[str, float]]:
    i = token_id(table, word)
    return nearest(table, table.weight[i], k, {i})


def analogy(table: Table, a: str, b: str, c: str, k: int = 10) -> list[tuple[str, float]]:
    """a is to b as c is to ?: the tokens nearest to b − a + c (a, b and c left out, as Mikolov et al.
    do)."""
    ia, ib, ic = (token_id(table, w) for w in (a, b, c))
    w = table.weight
    return nearest(table, w[ib] - w[ia] + w[ic], k, {ia, ib, ic})
