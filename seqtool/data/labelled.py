"""Labelled text for classification: TSV rows (`text<TAB>label`, or the label in another column) or JSON
lines (`{"text": ..., "label": ...}`), read with file:line errors; the label set and its balance; texts
encoded for a classifier and the deterministic batches the trainer reads.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from seqtool.config import DataConfig, check_at_least, check_between
from seqtool.data.io import describe, expand_paths, iter_lines
from seqtool.errors import InputError

HINT = 'write one example per line: text<TAB>label (or JSON lines {"text": ..., "label": ...} in .jsonl)'


@dataclass
class LabelledDataConfig(DataConfig):
    """data: the labelled files. valid_fraction holds out every k-th row (k = 1/fraction), so a file
    sorted by label still gives a validation set of every label."""

    valid_fraction: float = 0.1
    label_column: int = 0  # TSV: the label's column, 1-based (0: the last); the other columns are the text
    text_key: str = "text"  # .jsonl files: the keys of the text and the label
    label_key: str = "label"
    max_len: int = 256  # tokens per text (with its two boundary tokens); longer texts are cut

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least("data.label_column", self.label_column, 0, " (0: the last column)")
        check_between("data.max_len", self.max_len, 3, 1_000_000)


@dataclass
class Labelled:
    """Texts and their labels, with where each row came from (file:line) for error messages."""

    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, index: Sequence[int]) -> Labelled:
        return Labelled([self.texts[i] for i in index], [self.labels[i] for i in index],
                        [self.where[i] for i in index])


def read_labelled(paths: Sequence[str], data: LabelledDataConfig) -> Labelled:
    """Every example of the TSV or .jsonl files `paths`. A malformed row, an empty text or an empty label
    is an InputError naming file:line; so is a file without any example."""
    out = Labelled()
    for path in expand_paths(list(paths)):
        name = "<stdin>" if path == "-" else path
        jsonl = path.endswith((".jsonl", ".jsonl.gz"))
        before = len(out)
        for lineno, line in enumerate(iter_lines(path, data.encoding_errors), 1):
            if not line.strip():
                continue  # blank lines separate nothing: skipped
            where = f"{name}:{lineno}"
            text, label = _json_row(line, where, data) if jsonl else _tsv_row(line, where, data.label_column)
            if not text.strip():
                raise InputError(f"{where}: empty text", hint="remove the row or give it a text")
            if not label:
                raise InputError(f"{where}: empty label", hint="remove the row or give it a label")
            out.texts.append(text)
            out.labels.append(label)
            out.where.append(where)
        if len(out) == before:
            raise InputError(f"{name} holds no labelled example", hint=HINT)
    return out


def _tsv_row(line: str, where: str, label_column: int) -> tuple[str, str]:
    cells = line.split("\t")
    if len(cells) < 2:
        raise InputError(f"{where}: no tab in this row, so no label", hint=HINT)
    column = label_column or len(cells)
    if column > len(cells):
        raise InputError(f"{where}: the row has {len(cells)} columns, the label should be in column {column}",
                         hint="check --label-column")
    label = cells.pop(column - 1).strip()
    return "\t".join(cells), label


def _json_row(line: str, where: str, data: LabelledDataConfig) -> tuple[str, str]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not a JSON object ({err.msg})", hint=HINT) from None
    if not isinstance(row, dict):
        raise InputError(f"{where}: not a JSON object", hint=HINT)
    for key in (data.text_key, data.label_key):
        if key not in row:
            raise InputError(f"{where}: no key {key!r} (keys: {', '.join(map(str, row)) or 'none'})",
                             hint="set --text-key / --label-key")
    text, label = row[data.text_key], row[data.label_key]
    if not isinstance(text, str) or isinstance(label, (dict, list)) or label is None:
        raise InputError(f"{where}: the text must be a string and the label a string or number", hint=HINT)
    return text, str(label).strip()


def split_valid(train: Labelled, fraction: float) -> tuple[Labelled, Labelled]:
    """(train, valid): every k-th row (k = round(1/fraction)) held out; (train, empty) at fraction 0."""
    if fraction <= 0 or len(train) < 2:
        return train, Labelled()
    k = max(2, round(1 / fraction))
    held = [i for i in range(len(train)) if i % k == k - 1] or [len(train) - 1]
    keep = sorted(set(range(len(train))) - set(held))
    return train.rows(keep), train.rows(held)


def label_set(train: Labelled, source: str) -> list[str]:
    """The sorted labels of the training data; one label alone cannot train a classifier."""
    labels = sorted(set(train.labels))
    if len(labels) < 2:
        raise InputError(f"{source} has only one label ({labels[0]!r}); a classifier needs at least two",
                         hint="add examples of the other classes")
    return labels


def label_ids(data: Labelled, labels: list[str], what: str) -> list[int]:
    """The index of each row's label in `labels`; a label the model does not know names its row."""
    index = {label: i for i, label in enumerate(labels)}
    for label, where in zip(data.labels, data.where, strict=True):
        if label not in index:
            raise InputError(f"{where}: unknown label {label!r} in the {what} (the model knows "
                             f"{', '.join(labels)})", hint="fix the label, or retrain with examples of it")
    return [index[label] for label in data.labels]


def balance(labels: Sequence[str]) -> str:
    """'main 180 (35.1%), soup 60 (11.7%), …' most frequent first."""
    counts = Counter(labels)
    return ", ".join(f"{label} {n} ({100.0 * n / len(labels):.1f}%)" for label, n in counts.most_common())


# ---------------------------------------------------------------------------------------------
# encoding and batches


def encode_texts(tok: Any, texts: Sequence[str], max_len: int) -> tuple[list[list[int]], int]:
    """Each text as newline_id + its tokens + newline_id, cut to `max_len` ids: the leading newline is the
    [CLS]-like first token (and the start of a line, as a language model saw text), the closing one the
    token a causal model reads everything by. Returns (rows, how many texts were cut)."""
    nl, cut = tok.newline_id, 0
    rows = []
    for ids in tok.encode_batch(list(texts)):
        if len(ids) > max_len - 2:
            ids, cut = ids[: max_len - 2], cut + 1
        rows.append([nl, *ids, nl])
    return rows, cut


def pad(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, Any]:
    """{"inputs": (B, T) right-padded ids, "lengths": (B,)} of token rows."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    inputs = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        inputs[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return {"inputs": inputs, "lengths": lengths}


def make_batch(rows: Sequence[Sequence[int]], labels: Sequence[int], pad_id: int) -> dict[str, Any]:
    """A training or validation batch. `row_tokens` of ones: every row weighs the same in the mean loss,
    so DDP's shards (trainer.shard) weigh their losses by their share of the rows."""
    batch = pad(rows, pad_id)
    batch["labels"] = torch.tensor(list(labels), dtype=torch.long)
    batch["row_tokens"] = torch.ones(len(rows))
    batch["ntokens"] = int(batch["lengths"].sum())
    return batch


class LabelledBatches:
    """Shuffled batches of encoded texts; the order of epoch e is a permutation seeded by (seed, e), so
    (epoch, start) always yields the same batches (the trainer's BatchSource). Every batch holds
    batch_size rows (the last one of an epoch wraps round to the epoch's first rows), so that DDP's ranks
    always get rows to share."""

    def __init__(self, rows: list[list[int]], labels: list[int], batch_size: int, pad_id: int, seed: int):
        self.rows, self.labels, self.batch_size = rows, labels, batch_size
        self.pad_id, self.seed = pad_id, seed
        self.steps_per_epoch = math.ceil(len(rows) / batch_size)

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        order = torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(self.seed + epoch))
        n, size = len(self.rows), min(self.batch_size, len(self.rows))
        for step in range(start, self.steps_per_epoch):
            index = [int(order[(step * self.batch_size + i) % n]) for i in range(size)]
            yield make_batch([self.rows[i] for i in index], [self.labels[i] for i in index], self.pad_id)


def eval_batches(rows: list[list[int]], labels: list[int], batch_size: int, pad_id: int
                 ) -> Iterator[dict[str, Any]]:
    """The rows in order, `batch_size` at a time (validation, evaluate, classify)."""
    for i in range(0, len(rows), batch_size):
        yield make_batch(rows[i:i + batch_size], labels[i:i + batch_size], pad_id)


def source_name(paths: Sequence[str]) -> str:
    return describe(list(paths))
