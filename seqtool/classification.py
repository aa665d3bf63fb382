"""Using and scoring a classifier: label probabilities for texts in batches, and the scores of predictions
against gold labels — accuracy, macro-F1, per-class precision / recall / F1 and the confusion matrix —
for validation during training (evaluation.classifier_validation), `seqtool evaluate` and `classify`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from seqtool.data import labelled

# ---------------------------------------------------------------------------------------------
# scores of predictions (plain Python: the numbers a test can compute by hand)


def confusion_matrix(gold: Sequence[int], predicted: Sequence[int], n: int) -> list[list[int]]:
    """counts[g][p]: texts of gold label g predicted as p (rows gold, columns predicted)."""
    counts = [[0] * n for _ in range(n)]
    for g, p in zip(gold, predicted, strict=True):
        counts[g][p] += 1
    return counts


def scores(confusion: list[list[int]], labels: Sequence[str]) -> dict[str, Any]:
    """accuracy, macro-F1 (the unweighted mean of the per-class F1), and per class precision, recall, F1
    and support. A class never predicted has precision 0, one never present recall 0 (and F1 0), as
    scikit-learn's zero_division=0 does; macro-F1 averages over every label of the model."""
    n = len(labels)
    total = sum(map(sum, confusion))
    per_class = {}
    for c, label in enumerate(labels):
        tp = confusion[c][c]
        predicted = sum(confusion[g][c] for g in range(n))
        support = sum(confusion[c])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    correct = sum(confusion[c][c] for c in range(n))
    return {"accuracy": correct / total if total else 0.0,
            "macro_f1": sum(v["f1"] for v in per_class.values()) / n if n else 0.0,
            "per_class": per_class, "confusion": confusion, "labels": list(labels), "texts": total}


# ---------------------------------------------------------------------------------------------
# running a classifier


def run_batches(model: torch.nn.Module, batches: Iterable[dict[str, Any]], max_batches: int = 0
                ) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
    """(log-probabilities (B, C) on the CPU, batch) for each batch, without gradients."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for i, batch in enumerate(batches):
            if max_batches and i >= max_batches:
                break
            logits = model.head(model.features(batch["inputs"].to(device), batch["lengths"].to(device)))
            yield F.log_softmax(logits.float(), -1).cpu(), batch


def score_rows(model: torch.nn.Module, rows: list[list[int]], gold: list[int], batch_size: int, pad_id: int,
               max_batches: int = 0) -> dict[str, Any]:
    """loss (mean cross-entropy) and scores() of `model` on encoded rows with gold label ids."""
    nll, predicted, seen = 0.0, [], []
    for logp, batch in run_batches(model, labelled.eval_batches(rows, gold, batch_size, pad_id), max_batches):
        nll += float(F.nll_loss(logp, batch["labels"], reduction="sum"))
        predicted += logp.argmax(-1).tolist()
        seen += batch["labels"].tolist()
    result = scores(confusion_matrix(seen, predicted, len(model.labels)), model.labels)
    return {"loss": nll / max(len(seen), 1), **result}


@dataclass
class Prediction:
    label: str
    probs: dict[str, float]


class TextClassifier:
    """A classifier workspace ready to label texts: its model (eval mode) and tokenizer."""

    def __init__(self, model: torch.nn.Module, tok: Any, max_len: int):
        self.model, self.tok, self.max_len = model, tok, max_len

    @classmethod
    def from_workspace(cls, path: Any, device: torch.device) -> TextClassifier:
        from seqtool.data.tokenizers import load_tokenizer
        from seqtool.models import load_published
        from seqtool.workspace import Workspace

        ws = Workspace.open(path, kinds=("classifier",), purpose="classification")
        model = load_published(ws, device)
        return cls(model, load_tokenizer(ws.tokenizer_dir), data_config(ws.config).max_len)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return labelled.encode_texts(self.tok, texts, self.max_len)[0]

    def predict(self, texts: Iterable[str], batch_size: int = 64, where: str = "input"
                ) -> Iterator[Prediction]:
        """One Prediction per text, `batch_size` texts at a time; an empty text names its line."""
        from seqtool.data.io import batches

        labels = self.model.labels
        for start, chunk in _numbered(batches(texts, batch_size), batch_size):
            for offset, text in enumerate(chunk):
                if not text.strip():
                    from seqtool.errors import InputError

                    raise InputError(f"{where}:{start + offset + 1}: empty text",
                                     hint="give every line a text")
            rows = self.encode(chunk)
            for logp, _ in run_batches(self.model, [labelled.pad(rows, self.tok.pad_id)]):
                for row in logp.exp().tolist():
                    best = max(range(len(row)), key=row.__getitem__)
                    yield Prediction(labels[best], dict(zip(labels, row, strict=True)))

    def score(self, data: labelled.Labelled, batch_size: int = 64) -> dict[str, Any]:
        gold = labelled.label_ids(data, self.model.labels, "evaluation data")
        return score_rows(self.model, self.encode(data.texts), gold, batch_size, self.tok.pad_id)


def _numbered(chunks: Iterable[list[str]], size: int) -> Iterator[tuple[int, list[str]]]:
    start = 0
    for chunk in chunks:
        yield start, chunk
        start += len(chunk)


def data_config(config: dict[str, Any]) -> labelled.LabelledDataConfig:
    """The data section a classifier was trained with (its formats and max_len)."""
    from seqtool.config import from_dict

    return from_dict(labelled.LabelledDataConfig, config.get("data") or {}, "data.")
