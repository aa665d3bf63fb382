"""Training an encoder–decoder on parallel text: the config of `train-seq2seq`, and the TrainTask the
shared trainer runs (batches, model, and a validation that reports loss and greedy-decoded BLEU).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqtool.config import OptimConfig, RunConfig, TokenizerConfig, check_choice, check_positive
from seqtool.data.parallel import (
    ParallelBatches,
    ParallelText,
    encode_pairs,
    read_parallel,
    split_off,
)
from seqtool.errors import InputError
from seqtool.models.seq2seq import Seq2Seq, Seq2SeqConfig, TeacherForcing
from seqtool.training.pair_streams import PairData, from_files, stored_pairs
from seqtool.training.tasks import TrainTask, translation_task
from seqtool.workspace import Workspace


@dataclass
class ParallelDataConfig:
    src: str | None = None  # line-aligned files …
    tgt: str | None = None
    tsv: str | None = None  # … or one source<TAB>target file
    valid_src: str | None = None
    valid_tgt: str | None = None
    valid_tsv: str | None = None
    valid_fraction: float = 0.05  # held out from the end of the training pairs when no valid set is given
    max_len: int = 100  # pairs with a side longer than this (in tokens, with </s>) are skipped and listed
    batch_tokens: int = 2048  # padded tokens per batch (the longer side)
    encoding_errors: str = "strict"
    store: str = ""  # the token store's directory (data/store.py) for data in files; empty: WS/store

    def __post_init__(self) -> None:
        check_choice("data.encoding_errors", self.encoding_errors, ("strict", "replace", "ignore"))
        check_positive("data.batch_tokens", self.batch_tokens)
        if self.max_len < 0:
            raise InputError(f"data.max_len must be ≥ 0 (0: no limit), got {self.max_len}")
        if not 0.0 < self.valid_fraction < 0.5:
            raise InputError(f"data.valid_fraction must be in (0, 0.5), got {self.valid_fraction}")


@dataclass
class ParallelTokenizerConfig(TokenizerConfig):
    joint: bool = False  # one tokenizer for both sides (else tokenizer/src and tokenizer/tgt)


@dataclass
class ValidConfig:
    bleu: bool = True  # greedy-decode the validation set and publish the best weights by BLEU
    bleu_tokenize: str = "13a"
    max_sentences: int = 0  # decode at most this many validation sentences for BLEU; 0: all
    max_len_a: float = 1.5
    max_len_b: int = 10

    def __post_init__(self) -> None:
        check_choice("valid.bleu_tokenize", self.bleu_tokenize, ("13a", "intl", "char", "zh", "none"))


@dataclass
class Seq2SeqTrainConfig:
    data: ParallelDataConfig = field(default_factory=ParallelDataConfig)
    tokenizer: ParallelTokenizerConfig = field(default_factory=ParallelTokenizerConfig)
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    teacher_forcing: TeacherForcing = field(default_factory=TeacherForcing)
    valid: ValidConfig = field(default_factory=ValidConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        self.run.require_end()


# ---------------------------------------------------------------------------------------------
# data and tokenizers


def read_data(cfg: ParallelDataConfig) -> tuple[ParallelText, ParallelText]:
    """(train, valid) raw pairs: the valid files, or the last valid_fraction of the training pairs."""
    if cfg.src is None and cfg.tsv is None:
        raise InputError("no training data", hint="pass --src and --tgt, or --tsv")
    train = read_parallel(cfg.src, cfg.tgt, cfg.tsv, cfg.encoding_errors)
    if cfg.valid_src or cfg.valid_tgt or cfg.valid_tsv:
        return train, read_parallel(cfg.valid_src, cfg.valid_tgt, cfg.valid_tsv, cfg.encoding_errors)
    return split_off(train, cfg.valid_fraction)


def _load_pair(path: Path) -> tuple[Any, Any]:
    from seqtool.data.tokenizers import load_tokenizer

    return load_tokenizer(path, side="src"), load_tokenizer(path, side="tgt")


def prepare_tokenizers(cfg: ParallelTokenizerConfig, src_lines: Iterable[str], tgt_lines: Iterable[str],
                       ws: Workspace, reuse: bool) -> tuple[Any, Any]:
    """Load tokenizer.path (-t), reuse the workspace's on --resume, or learn them (per side or joint)
    from the training pairs' `src_lines` and `tgt_lines` (iterated only then). A read-only view (ranks
    other than 0) writes nothing to WS/tokenizer; learning is deterministic, so every rank gets the same
    tokenizers."""
    from seqtool.data.tokenizers import load_tokenizer, train_tokenizer

    if reuse and ws.tokenizer_dir.is_dir():
        return _load_pair(ws.tokenizer_dir)
    if cfg.path:
        src_tok, tgt_tok = load_tokenizer(cfg.path, side="src"), load_tokenizer(cfg.path, side="tgt")
        saved = ws.save_tokenizers({"": src_tok} if src_tok is tgt_tok else {"src": src_tok, "tgt": tgt_tok})
        return _load_pair(ws.tokenizer_dir) if saved else (src_tok, tgt_tok)  # a view keeps what it loaded
    options = dict(vocab_size=cfg.vocab_size, min_count=cfg.min_count, lowercase=cfg.lowercase)
    if cfg.joint:
        joint = train_tokenizer(cfg.kind, itertools.chain(src_lines, tgt_lines), **options)
        tokenizers = {"": joint}
        src_tok = tgt_tok = joint
    else:
        src_tok = train_tokenizer(cfg.kind, src_lines, **options)
        tgt_tok = train_tokenizer(cfg.kind, tgt_lines, **options)
        tokenizers = {"src": src_tok, "tgt": tgt_tok}
    ws.save_tokenizers(tokenizers)
    return src_tok, tgt_tok


# ---------------------------------------------------------------------------------------------
# the task


def prepare_parallel(cfg: Any, ws: Workspace, resuming: bool, note: Callable[[str], None]
                     ) -> tuple[PairData, ParallelBatches]:
    """Read and filter the parallel data (reporting what was skipped), learn or load the tokenizers,
    and batch the training pairs: what train-seq2seq and train-transformer --arch encoder-decoder
    share. Files go through the token store (training/pair_streams.py), stdin is read in memory."""
    if from_files(cfg.data):
        data = stored_pairs(cfg, ws, resuming, note)
    else:
        train_text, valid_text = read_data(cfg.data)
        src_tok, tgt_tok = prepare_tokenizers(cfg.tokenizer, train_text.src, train_text.tgt, ws,
                                              reuse=resuming)
        data = PairData(src_tok, tgt_tok, encode_pairs(train_text, src_tok, tgt_tok, cfg.data.max_len),
                        encode_pairs(valid_text, src_tok, tgt_tok, cfg.data.max_len), valid_text,
                        train_text.where)
    if data.src_tok.pad_id != data.tgt_tok.pad_id:
        raise InputError("the source and target tokenizers use different padding ids")
    valid_where = f"validation ({data.valid_text.where})"
    for where, pairs in ((data.train_where, data.train), (valid_where, data.valid)):
        total = len(pairs) + sum(len(lines) for lines in pairs.skipped.values())  # each line once
        note(f"{where}: {len(pairs)} of {total} pairs kept")
        for line in pairs.report(where):
            note(f"warning: {line}")
    if not len(data.valid):
        raise InputError("no validation pairs are left after filtering", hint="check the validation data")
    tok = data.tgt_tok
    return data, ParallelBatches(data.train, cfg.data.batch_tokens, tok.pad_id, tok.bos_id, tok.eos_id,
                                 seed=cfg.run.seed)


def build(cfg: Seq2SeqTrainConfig, ws: Workspace, resuming: bool, device: torch.device,
          note: Callable[[str], None]) -> tuple[TrainTask, Callable[[dict], None]]:
    """train-seq2seq's task (training/run.py's Job.build): read and filter the data, learn or load
    the tokenizers, build the model; and what to say after a finished run."""
    data, batches = prepare_parallel(cfg, ws, resuming, note)
    src_tok, tgt_tok = data.src_tok, data.tgt_tok
    model = Seq2Seq(cfg.model, src_tok.vocab_size, tgt_tok.vocab_size, tgt_tok.pad_id,
                    cfg.optim.label_smoothing, cfg.teacher_forcing)
    params = sum(p.numel() for p in model.parameters())
    note(f"seq2seq ({cfg.model.encoder_cell}→{cfg.model.decoder_cell}, attention {cfg.model.attention}): "
         f"{params:,} parameters; {src_tok.kind} vocabularies of {src_tok.vocab_size:,} → "
         f"{tgt_tok.vocab_size:,}; {batches.steps_per_epoch:,} batches per epoch")
    task = translation_task(model, batches, data.valid_text, data.valid, src_tok, tgt_tok, cfg.valid,
                            cfg.data.batch_tokens, cfg.run.eval_batches, device)

    def after(summary: dict) -> None:
        best = summary.get("best_value")
        shown = "none" if best is None else f"{best:.2f}"
        note(f"best {summary.get('best_metric')} {shown} at step {summary.get('best_step')}; "
             f"translate with: seqtool translate -w {ws.path} FILE")

    return task, after

