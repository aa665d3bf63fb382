"""The tasks the Trainer trains (TrainTask: a model, its batches, its validation), assembled in one place
for train-rnn, train-seq2seq, train-transformer and finetune: a language model's on a token stream (lm: the
next token, read as bptt, window or block; mlm: masked tokens), and a translation model's on parallel
batches. Each job reads its data, tokenizers and model itself (lm.py, seq2seq.py, transformer.py,
finetune.py), then hands them here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from seqtool.config import RunConfig
from seqtool.data import batching
from seqtool.data.masking import MaskedBatches, masking_options
from seqtool.data.parallel import EncodedPairs, ParallelBatches, ParallelText
from seqtool.data.tokenizers import Tokenizer
from seqtool.evaluation import text_validation, translation_validation
from seqtool.metrics import TextSize, text_size


class BatchSource(Protocol):
    """Deterministic batches: the same (epoch, start) always yields the same batches, so a resumed run
    continues from the exact data position. Batches are dicts of tensors plus `ntokens`."""

    steps_per_epoch: int

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]: ...


@dataclass
class TrainTask:
    model: nn.Module
    data: BatchSource
    evaluate: Callable[[nn.Module], dict[str, float]]  # validation metrics; must include "loss"
    arch: dict[str, Any]  # written to model.json beside the published weights
    metric: str = "loss"  # the validation metric that picks the published weights
    mode: str = "min"  # "min" for loss/perplexity, "max" for BLEU/accuracy
    carries_state: bool = False  # truncated BPTT: hidden state flows from one batch to the next
    adapter: str = ""  # LoRA (finetune): checkpoints hold and publishing writes only adapters/NAME
    trainable: Callable[[nn.Module], list[nn.Parameter]] | None = None  # default: all requiring grad
    nll: bool = True  # the loss is a negative log-likelihood, so train lines show exp(loss) (False: an MSE)


def lm_task(model: Any, tok: Tokenizer, train_ids: torch.Tensor, valid_ids: torch.Tensor, reading: str,
            context: int, run: RunConfig, valid_lines: Iterable[str] | TextSize | None = None) -> TrainTask:
    """A language model's task on a token stream, read as `reading` (evaluation.READINGS) in rows of
    `context` tokens: its training batches and a validation that reads the held-out stream the same
    way (per byte and per word too, given the `valid_lines` that `valid_ids` encodes, read once, or their
    TextSize, counted by the token store when it was built). train-rnn,
    train-transformer (decoder, encoder) and finetune all build their LM tasks here; each checks the
    validation length itself, with its own hint."""
    B = run.batch_size
    source = lm_batches(tok, train_ids, reading, context, run)
    if isinstance(valid_lines, TextSize):
        size: TextSize | None = valid_lines
    else:
        size = text_size(valid_lines, valid_ids.numel() - 1) if valid_lines else None
    evaluate = text_validation(tok, valid_ids, reading, context, B, run.eval_batches, size)
    return TrainTask(model=model, data=source, evaluate=evaluate, arch=model.arch(),
                     carries_state=reading == "bptt")


def lm_batches(tok: Tokenizer, train_ids: torch.Tensor, reading: str, context: int, run: RunConfig) -> Any:
    """The training batches of a token stream (N,) read as `reading` in rows of `context` tokens."""
    if reading == "bptt":
        return batching.StreamBatches(train_ids, run.batch_size, context)
    if reading == "window":
        return batching.WindowBatches(train_ids, run.batch_size, context, run.seed)
    source = batching.BlockBatches(train_ids, run.batch_size, context, run.seed)
    return MaskedBatches(source, seed=run.seed, **masking_options(tok)) if reading == "masked" else source


def streams_task(model: Any, streams: Any, reading: str, context: int, run: RunConfig) -> TrainTask:
    """lm_task on a run's training/streams.Streams: one corpus, or a weighted mixture of corpora
    (training/mixture.py)."""
    if streams.parts:
        from seqtool.training.mixture import mixed_task

        return mixed_task(model, streams, reading, context, run)
    return lm_task(model, streams.tok, streams.train_ids, streams.valid_ids, reading, context, run,
                   streams.valid_text)


def translation_task(model: Any, batches: ParallelBatches, valid_text: ParallelText, valid: EncodedPairs,
                     src_tok: Tokenizer, tgt_tok: Tokenizer, valid_cfg: Any, batch_tokens: int,
                     eval_batches: int, device: torch.device) -> TrainTask:
    """A translation model's task: its training batches, and a validation by loss and (per `valid_cfg`,
    seq2seq.ValidConfig) BLEU or chrF on the held-out pairs `valid` of `valid_text`."""
    return TrainTask(model=model, data=batches, arch=model.arch(), **translation_validation(
        valid_text, valid, src_tok, tgt_tok, valid_cfg, batch_tokens, eval_batches, device))
