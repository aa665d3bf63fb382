"""A language model trained on several corpora with weights (data.mix): each corpus is its own token
store entry (adding a corpus encodes only that one) with its own held-out lines; batches are drawn from
the corpora by weight (data/mixing.py's MixedBatches), and validation scores every corpus apart.

The validation loss is the weighted mean of the corpora's losses, with the mixture's weights: the loss
the mixture's batches train on, whatever the sizes of the held-out texts (a mean over all held-out
tokens would be ruled by the biggest corpus). It picks the published weights; each corpus's own loss is
logged beside it as loss_NAME.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqtool.config import RunConfig
from seqtool.data.io import expand_paths
from seqtool.data.mixing import MixedBatches, parse_mix
from seqtool.errors import InputError
from seqtool.evaluation import check_length
from seqtool.metrics import TextSize
from seqtool.training import tasks
from seqtool.training.streams import Streams, split_held_out, stored, tokenizer
from seqtool.training.tasks import TrainTask
from seqtool.workspace import Workspace

Note = Callable[[str], None]


@dataclass
class Part:
    """One corpus of a mixture, as training/streams.Streams holds one corpus."""

    name: str
    weight: float
    train_ids: Any
    valid_ids: Any
    valid_text: TextSize | tuple
    note: str


def mixed_streams(data: Any, tok_cfg: Any, ws: Workspace, resuming: bool, seed: int, note: Note) -> Streams:
    """streams.token_streams for data.mix: one tokenizer (learned from every corpus's training lines
    when none is given), and each corpus's store entry split into its training and held-out lines."""
    parts = parse_mix(data.mix)
    files = [expand_paths(list(p.files)) for p in parts]
    tok = tokenizer(tok_cfg, data, files, ws, resuming, seed, note)
    root = Path(data.store) if data.store else ws.store_dir
    mixed = []
    for part, paths in zip(parts, files, strict=True):
        corpus = stored(root, "train", paths, dataclasses.replace(data, train=paths, mix=[]), ws, tok, note)
        train_ids, valid_ids, size, where = split_held_out(corpus, data.valid_fraction, data.valid_tokens)
        mixed.append(Part(part.name, part.weight, train_ids, valid_ids, size, where))
    about = "; ".join(f"{p.name} (weight {p.weight:.3g}): {p.train_ids.numel():,} training tokens, {p.note}"
                      for p in mixed)
    shortest = min((p.valid_ids for p in mixed), key=lambda ids: ids.numel())
    return Streams(tok, None, shortest, f"a mixture of {len(mixed)} corpora — {about}", parts=mixed)


def mixed_task(model: Any, streams: Streams, reading: str, context: int, run: RunConfig) -> TrainTask:
    """tasks.lm_task for a mixture: each corpus's batches and validation as lm_task makes them, the
    batches drawn by weight, and the validation scores combined (the module docstring says how)."""
    if reading == "bptt":  # LMDataConfig refuses it first; this guards other callers
        raise InputError("data.mix cannot be read as truncated BPTT", hint="use --objective window")
    parts: list[Part] = streams.parts
    each = []
    for p in parts:
        check_length(p.valid_ids, "window" if reading == "window" else "block", context,
                     f"the validation text of corpus {p.name} is too short",
                     hint="give that corpus more lines, or raise --valid-fraction or --valid-tokens")
        each.append(tasks.lm_task(model, streams.tok, p.train_ids, p.valid_ids, reading, context, run,
                                  p.valid_text))
    weights = [p.weight for p in parts]
    source = MixedBatches([t.data for t in each], weights, run.seed)

    def evaluate(model: Any) -> dict[str, float]:
        scores = [t.evaluate(model) for t in each]
        per_corpus = {f"loss_{p.name}": s["loss"] for p, s in zip(parts, scores, strict=True)}
        return {**combine(scores, weights), **per_corpus}

    return TrainTask(model=model, data=source, evaluate=evaluate, arch=model.arch())


def combine(scores: list[dict[str, float]], weights: list[float]) -> dict[str, float]:
    """The mixture's validation scores from its corpora's: losses, bits and accuracies as weighted means,
    perplexities as weighted geometric means (so that ppl stays exp(loss)), token counts summed; a
    metric that some corpus lacks (bpb without its text size) is left out."""
    out: dict[str, float] = {}
    for key in scores[0]:
        values = [s.get(key) for s in scores]
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
            continue
        pairs = list(zip(weights, values, strict=True))
        if key.endswith("tokens"):
            out[key] = sum(values)
        elif key.endswith("ppl"):
            out[key] = math.exp(sum(w * math.log(max(v, 1e-300)) for w, v in pairs))
        else:
            out[key] = sum(w * v for w, v in pairs)
    return out
