"""The model a fine-tuning (or a classifier) starts from: a workspace's published model (+ its tokenizers and
the original run's config) or an imported GPT-2 (hf:DIR); the text its tokenizer cannot represent; and
--extend-vocab, which grows char/word vocabularies and the embeddings (and tied output layer) for it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from seqtool.errors import InputError
from seqtool.kinds import LM_KINDS, MLM_KINDS, MT_KINDS
from seqtool.models import MODELS, load_published
from seqtool.workspace import Workspace

TRAINABLE_KINDS = (*LM_KINDS, *MT_KINDS, *MLM_KINDS)  # every kind


@dataclass
class Source:
    kind: str
    model: nn.Module
    tokenizers: dict[str, Any]  # "" (one tokenizer) or "src" and "tgt"
    config: dict[str, Any]  # the source run's resolved config (empty for hf:DIR)

    @property
    def family(self) -> str:
        return str(self.model.arch()["model"])


def open_source(source: str) -> Source:
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.models.gpt2 import is_hf_source, load_hf_gpt2

    if is_hf_source(source):
        from seqtool.training.transformer import KIND_OF_ARCH

        model, tok = load_hf_gpt2(source)  # a decoder
        return Source(KIND_OF_ARCH[model.cfg.arch], model, {"": tok}, {})
    ws = Workspace.open(source, kinds=TRAINABLE_KINDS, purpose="fine-tuning")
    model = load_published(ws).train()
    root = ws.tokenizer_dir
    sides = ["src", "tgt"] if (root / "src").is_dir() else [""]
    config = ws.config
    while "source_config" in config:  # a fine-tuned workspace: the original run's settings
        config = config["source_config"] or {}
    return Source(ws.kind, model, {s: load_tokenizer(root / s) for s in sides}, config)


def side_tokenizers(src: Source) -> tuple[Any, Any]:
    toks = src.tokenizers
    return (toks[""], toks[""]) if "" in toks else (toks["src"], toks["tgt"])


def _same_tokenizers(ws: Workspace, tokenizers: dict[str, Any]) -> bool:
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.errors import SeqtoolError

    def pieces(tok: Any) -> tuple[str, list[str]]:
        return tok.kind, [tok.id_to_piece(i) for i in range(tok.vocab_size)]

    try:
        return all(pieces(load_tokenizer(ws.tokenizer_dir / side)) == pieces(tok)
                   for side, tok in tokenizers.items())
    except SeqtoolError:
        return False


# ---------------------------------------------------------------------------------------------
# unknown text and vocabulary growth

def count_unknown(tok: Any, lines: list[str]) -> Counter:
    """Characters (char/bpe/unigram) or words (word) of `lines` that `tok` turns into <unk>."""
    counts: Counter = Counter()
    for line in lines:
        counts.update(tok.unknown(line))
    return counts


def describe_unknown(counts: Counter, what: str, limit: int = 12) -> str:
    total = sum(counts.values())
    shown = ", ".join(f"{sym!r}×{n}" for sym, n in counts.most_common(limit))
    more = f", … {len(counts) - limit} more" if len(counts) > limit else ""
    return (f"{what}: {total} occurrences of {len(counts)} symbols the tokenizer cannot represent: "
            f"{shown}{more}")


def new_symbols(unknown: dict[str, Counter]) -> dict[str, list[str]]:
    """The symbols --extend-vocab adds to each side's vocabulary: the most frequent first."""
    return {side: sorted(counts, key=lambda p: (-counts[p], p)) for side, counts in unknown.items()}


def extend_vocab(src: Source, added: dict[str, list[str]]) -> Source:
    """Append `added` symbols to each side's char/word tokenizer and grow the model's embeddings and
    output rows to match (old rows kept, new rows freshly initialised; tied weights stay tied)."""
    from seqtool.data.vocab_tokenizer import VocabTokenizer

    family = MODELS[src.family]
    new_toks = dict(src.tokenizers)
    arch = src.model.arch()
    for side, symbols in added.items():
        tok = src.tokenizers[side]
        if not symbols:
            continue
        if not isinstance(tok, VocabTokenizer):
            raise InputError(f"--extend-vocab works for char and word tokenizers, not {tok.kind}",
                             hint="subword tokenizers spell new words from known pieces; drop --extend-vocab")
        new_toks[side] = type(tok)(tok.pieces + symbols, tok.options)
        for key in family.vocab_keys[side]:  # the arch keys that hold this side's vocabulary size
            arch[key] = new_toks[side].vocab_size
    if new_toks == src.tokenizers:
        return src
    grown = family.from_arch(arch)
    state = grown.state_dict()
    with torch.no_grad():
        for key, old in src.model.state_dict().items():
            rows = tuple(slice(0, n) for n in old.shape)
            state[key][rows] = old  # a vocabulary-sized axis keeps its old rows at the front
    grown.load_state_dict(state)
    return dataclasses.replace(src, model=grown, tokenizers=new_toks)


def grown_symbols(ws: Workspace | None, src: Source) -> dict[str, list[str]]:
    """The symbols a resumed round's workspace tokenizers hold beyond the source's."""
    from seqtool.data.tokenizers import load_tokenizer

    assert ws is not None
    grown = {}
    for side, tok in src.tokenizers.items():
        saved = load_tokenizer(ws.tokenizer_dir / side)
        pieces, have = getattr(saved, "pieces", []), getattr(tok, "pieces", [])
        grown[side] = pieces[len(have):] if pieces[: len(have)] == have else []
    return grown
