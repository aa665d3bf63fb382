"""BERT's masked-language-model corruption (Devlin et al., 2019, §3.1): pick 15% of the tokens; of
those, 80% become <mask>, 10% a random token, 10% stay; deterministic per (seed, epoch, batch).
And the use of a trained masked LM: the top candidates for each <mask> of a text."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor


def mask_tokens(ids: Tensor, *, mask_id: int, pad_id: int, vocab_size: int, special_ids: Sequence[int],
                generator: torch.Generator, rate: float = 0.15) -> tuple[Tensor, Tensor]:
    """ids (B, T) → (inputs, targets), both (B, T). targets hold the original token where one was
    selected and pad_id elsewhere (so the loss ignores it). Special tokens are never selected, and
    random replacements are never special."""
    special = torch.tensor(sorted(set(special_ids)), dtype=ids.dtype)
    candidates = ~torch.isin(ids, special)
    selected = (torch.rand(ids.shape, generator=generator) < rate) & candidates
    targets = torch.where(selected, ids, torch.full_like(ids, pad_id))
    roll = torch.rand(ids.shape, generator=generator)
    ordinary = torch.tensor([i for i in range(vocab_size) if i not in set(special_ids)], dtype=ids.dtype)
    random = ordinary[torch.randint(len(ordinary), ids.shape, generator=generator)]
    inputs = torch.where(selected & (roll < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(selected & (roll >= 0.8) & (roll < 0.9), random, inputs)
    return inputs, targets


def masking_options(tok: Any) -> dict[str, Any]:
    """mask_tokens' keyword arguments for a tokenizer: its mask and pad ids, vocabulary, and the
    special ids that are never selected."""
    return dict(mask_id=tok.mask_id, pad_id=tok.pad_id, vocab_size=tok.vocab_size,
                special_ids=(tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id))


class MaskedBatches:
    """Wraps a language-model batch source: each batch's `inputs` (B, T) become masked inputs and their
    targets. The mask of batch i of epoch e depends only on (seed, e, i), so a resumed run and every
    validation pass see the same corruption."""

    def __init__(self, source: Any, *, mask_id: int, pad_id: int, vocab_size: int,
                 special_ids: Sequence[int], seed: int):
        self.source, self.seed = source, seed
        self.options = dict(mask_id=mask_id, pad_id=pad_id, vocab_size=vocab_size, special_ids=special_ids)

    @property
    def steps_per_epoch(self) -> int:
        return self.source.steps_per_epoch

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        generator = torch.Generator()
        for i, batch in enumerate(self.source.batches(epoch, start), start):
            generator.manual_seed(self.seed * 1_000_003 + epoch * 100_003 + i)
            inputs, targets = mask_tokens(batch["inputs"], generator=generator, **self.options)
            yield {**batch, "inputs": inputs, "targets": targets, "ntokens": int(inputs.numel()),
                   "row_tokens": (targets != self.options["pad_id"]).sum(1)}  # the masked, scored tokens


# ---------------------------------------------------------------------------------------------
# using a masked LM: fill in the blanks

MASK_TEXT = "<mask>"


def fill_masks(model: Any, tokenizer: Any, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """The top_k (piece, probability) candidates for each "<mask>" of `text`, in order. The text is
    read as one line of the training stream (a newline before and after it)."""
    from seqtool.errors import InputError

    parts = text.split(MASK_TEXT)
    if len(parts) == 1:
        raise InputError(f"the text has no {MASK_TEXT}",
                         hint='e.g. --fill "the students opened their <mask>"')
    ids, positions = [tokenizer.newline_id], []
    for i, part in enumerate(parts):
        ids += tokenizer.encode(part) if part else []
        if i < len(parts) - 1:
            positions.append(len(ids))
            ids.append(tokenizer.mask_id)
    ids.append(tokenizer.newline_id)
    limit = model.cfg.max_len
    if len(ids) > limit:
        raise InputError(f"the text is {len(ids)} tokens long; the model reads at most {limit}",
                         hint="shorten the text around the masks")
    device = next(model.parameters()).device
    probs, candidates = model.fill_mask(torch.tensor([ids], device=device), top_k)  # (1, T, k) each
    return [[(tokenizer.id_to_piece(int(c)), float(p))
             for p, c in zip(probs[0, i], candidates[0, i], strict=True)] for i in positions]
