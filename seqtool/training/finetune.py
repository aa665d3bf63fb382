"""Fine-tuning's config and the TrainTask of each model family on new data: a language model (RNN or
Transformer decoder) on a token stream, a masked LM (Transformer encoder) on the same stream, and a
translation model (RNN seq2seq or Transformer encoder-decoder) on parallel text.

The validation text is stored in the workspace (WS/data/) on the first run and read from there on
every later run, so `--promote-if-better` always compares on the same fixed set.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from seqtool.config import OptimConfig, RunConfig, check_at_least, check_choice
from seqtool.errors import InputError
from seqtool.kinds import KINDS
from seqtool.models import lora
from seqtool.training import tasks
from seqtool.training.distill import DistillConfig
from seqtool.training.tasks import TrainTask
from seqtool.workspace import Workspace

Report = Callable[[dict[str, Any]], None]


@dataclass
class FinetuneData:
    train: list[str] = field(default_factory=list)  # language models: text files
    valid: list[str] = field(default_factory=list)
    src: str | None = None  # translation: line-aligned files (or one TSV)
    tgt: str | None = None
    tsv: str | None = None
    valid_src: str | None = None
    valid_tgt: str | None = None
    valid_fraction: float = 0.05  # held out from the end of the data (first run only; then kept fixed)
    context: int = 0  # tokens per training row (bptt / block size); 0: the source's, else 64
    encoding_errors: str = "strict"
    store: str = ""  # language models: the token store's directory (data/store.py); empty: WS/store

    def __post_init__(self) -> None:
        check_at_least("data.context", self.context, 0, " (0: the source's, else 64)")
        if not 0.0 <= self.valid_fraction < 0.5:
            raise InputError(f"data.valid_fraction must be in [0, 0.5), got {self.valid_fraction}")
        check_choice("data.encoding_errors", self.encoding_errors, ("strict", "replace", "ignore"))


@dataclass
class FinetuneOptim(OptimConfig):
    # 0: 1e-4 for full fine-tuning (a trained model needs small steps, a tenth or less of training's
    # rates), 1e-3 for LoRA (its B matrices start at zero and are all it trains)
    lr: float = 0.0
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        lr, self.lr = self.lr, self.lr or 1.0  # the checks of OptimConfig, with 0 meaning "the default"
        super().__post_init__()
        self.lr = lr


@dataclass
class FinetuneConfig:
    """`seqtool finetune`: the sections of its YAML config."""

    source: str = ""  # a workspace directory, or hf:DIR
    data: FinetuneData = field(default_factory=FinetuneData)
    extend_vocab: bool = False
    freeze: list[str] = field(default_factory=list)  # embeddings | encoder | layers:0-3
    lora: lora.LoraConfig | None = None
    adapter_name: str = "default"
    promote_if_better: bool = False
    distill: DistillConfig | None = None  # train on a teacher's soft targets (training/distill.py)
    optim: FinetuneOptim = field(default_factory=FinetuneOptim)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if not self.optim.lr:
            self.optim.lr = 1e-3 if self.lora is not None else 1e-4
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.adapter_name):
            raise InputError(f"--adapter-name {self.adapter_name!r} must be letters, digits, _ . -")
        if self.lora is not None and (self.freeze or self.extend_vocab):
            raise InputError("LoRA trains only the adapters: --freeze and --extend-vocab do not apply",
                             hint="drop them, or fine-tune fully without --lora-rank")
        if self.distill is not None and not self.distill.teacher:
            raise InputError("--distill-temperature/--distill-alpha need a teacher",
                             hint="pass --distill-from TEACHER_WS")
        if self.distill is not None and (self.lora is not None or self.extend_vocab):
            raise InputError("--distill-from trains the whole student on the teacher's vocabulary: --lora-* "
                             "and --extend-vocab do not apply", hint="drop them, or drop --distill-from")


# settings a resumed fine-tuning run must share with the run it continues
FIXED_KEYS = ("source", "extend_vocab", "freeze", "lora", "adapter_name", "distill", "data.context",
              "run.batch_size", "run.seed")


# ---------------------------------------------------------------------------------------------
# language models: RNN LM, Transformer decoder (causal) and encoder (masked)


def read_lines(paths: list[str], errors: str) -> list[str]:
    from seqtool.data.io import iter_lines

    return list(iter_lines(paths, encoding_errors=errors))


def lm_text(cfg: FinetuneConfig, ws: Workspace, train: list[str]) -> tuple[list[str], list[str]]:
    """(train, valid) lines of the new `train` text; the validation lines are kept in WS/data/valid.txt
    after the first run."""
    fixed = ws.fixed_data("valid.txt")
    if not train:
        raise InputError("no training text", hint="pass --data FILE")
    if cfg.data.valid:
        valid = read_lines(cfg.data.valid, cfg.data.encoding_errors)
    elif fixed.is_file():
        valid = fixed.read_text(encoding="utf-8").split("\n")
        train = without_held_out(train, valid)
    else:
        k = max(1, int(round(len(train) * cfg.data.valid_fraction)))
        if len(train) - k < 1:
            raise InputError("too little text to hold out a validation set", hint="pass --valid FILE")
        train, valid = train[:-k], train[-k:]
    ws.keep_fixed_data({"valid.txt": valid})
    return train, valid


def without_held_out(train: list[str], valid: list[str]) -> list[str]:
    """`train` less its last lines when they are the kept validation lines: a resumed round held them out
    of this same data at its start, and must not train on them now (a later round's new data keeps all)."""
    k = len(valid)
    return train[:-k] if 0 < k < len(train) and train[-k:] == valid else train


def lm_task(cfg: FinetuneConfig, ws: Workspace, kind: str, model: nn.Module, tok: Any,
            source_config: dict[str, Any], lines: list[str]) -> TrainTask:
    """Continued training of a language model (rnn-lm, transformer-lm) or a masked LM (transformer-mlm)
    on the stream of the new text `lines`, in rows of `context` tokens (default: the source's
    bptt/block size)."""
    from seqtool.evaluation import check_length
    from seqtool.training import lm

    train, valid = lm_text(cfg, ws, lines)
    data_cfg = source_config.get("data", {})
    context = cfg.data.context or int(data_cfg.get("bptt") or data_cfg.get("block_size") or 64)
    reading = KINDS[kind].reading
    if reading != "bptt":  # blocks and masked rows fit the model's learned positions
        context = min(context, model.cfg.max_len)
    train_ids, valid_ids = _train_stream(cfg, ws, tok, train), lm.encode(tok, valid)
    check_length(valid_ids, reading, context, "the validation text is too short",
                 hint="pass a longer --valid file")
    return tasks.lm_task(model, tok, train_ids, valid_ids, reading, context, cfg.run, valid)


def _train_stream(cfg: FinetuneConfig, ws: Workspace, tok: Any, train: list[str]) -> torch.Tensor:
    """The token stream of `train`, the first lines of the --data files: from the token store (so a
    resume does not tokenize them again), or encoded in memory when they came from stdin."""
    from pathlib import Path

    from seqtool.data.io import STDIN, expand_paths
    from seqtool.training import lm
    from seqtool.training.streams import stored

    if STDIN in cfg.data.train:
        return lm.encode(tok, train)
    root = Path(cfg.data.store) if cfg.data.store else ws.store_dir
    corpus = stored(root, "train", expand_paths(cfg.data.train), cfg.data, ws, tok, lambda message: None)
    return corpus.slice_lines(0, len(train))


# ---------------------------------------------------------------------------------------------
# translation models: RNN seq2seq, Transformer encoder-decoder


def mt_task(cfg: FinetuneConfig, ws: Workspace, model: nn.Module, src_tok: Any, tgt_tok: Any,
            source_config: dict[str, Any], train: Any, device: torch.device, report: Report) -> TrainTask:
    """Continued training of a translation model on the new pairs `train` (a ParallelText), validated
    by loss and BLEU as in training (the source run's max_len, batch_tokens and validation settings)."""
    from seqtool.data.parallel import ParallelBatches, encode_pairs, read_parallel, split_off
    from seqtool.training.seq2seq import ParallelDataConfig, ValidConfig

    d = cfg.data
    fixed_src, fixed_tgt = ws.fixed_data("valid.src"), ws.fixed_data("valid.tgt")
    if d.valid_src or d.valid_tgt:
        valid = read_parallel(d.valid_src, d.valid_tgt, None, d.encoding_errors)
    elif fixed_src.is_file():
        valid = read_parallel(str(fixed_src), str(fixed_tgt), None, d.encoding_errors)
        src, tgt = without_held_out(train.src, valid.src), without_held_out(train.tgt, valid.tgt)
        if len(src) == len(tgt) < len(train.src):  # the pairs this round held out (resumed): not trained on
            train = type(train)(src, tgt, train.where)
    else:
        train, valid = split_off(train, d.valid_fraction)
    ws.keep_fixed_data({"valid.src": valid.src, "valid.tgt": valid.tgt})
    data_cfg = ParallelDataConfig(**{k: v for k, v in source_config.get("data", {}).items()
                                     if k in ("max_len", "batch_tokens")})
    positions = getattr(getattr(model, "cfg", None), "max_len", 0)  # a Transformer's learned positions
    if positions and not 0 < data_cfg.max_len < positions:
        data_cfg.max_len = positions - 1  # room for <s> or </s>
    valid_cfg = ValidConfig(**source_config.get("valid", {})) if "valid" in source_config else ValidConfig()
    train_pairs = _train_pairs(cfg, ws, train, src_tok, tgt_tok, data_cfg.max_len)
    valid_pairs = encode_pairs(valid, src_tok, tgt_tok, data_cfg.max_len)
    for line in train_pairs.report(train.where):
        report({"event": "warning", "message": line})
    if not len(train_pairs) or not valid_pairs.src:
        raise InputError("no training or validation pairs are left after filtering",
                         hint=f"pairs longer than {data_cfg.max_len} tokens are skipped; check the data")
    batches = ParallelBatches(train_pairs, data_cfg.batch_tokens, tgt_tok.pad_id, tgt_tok.bos_id,
                              tgt_tok.eos_id, seed=cfg.run.seed)
    return tasks.translation_task(model, batches, valid, valid_pairs, src_tok, tgt_tok, valid_cfg,
                                  data_cfg.batch_tokens, cfg.run.eval_batches, device)


def _train_pairs(cfg: FinetuneConfig, ws: Workspace, train: Any, src_tok: Any, tgt_tok: Any,
                 max_len: int) -> Any:
    """The kept pairs of `train`, the first pairs of the --src/--tgt (or --tsv) files: mapped from the
    token store (training/pair_streams.py; a resume does not tokenize them again), or encoded in memory
    when they came from stdin."""
    from pathlib import Path

    from seqtool.data.io import STDIN
    from seqtool.data.parallel import encode_pairs, sides
    from seqtool.data.stored_pairs import select
    from seqtool.training.pair_streams import stored_sides

    d = cfg.data
    if STDIN in (d.src, d.tgt, d.tsv):
        return encode_pairs(train, src_tok, tgt_tok, max_len)
    root = Path(d.store) if d.store else ws.store_dir
    src, tgt = stored_sides(root, sides(d.src, d.tgt, d.tsv), (src_tok, tgt_tok), d.encoding_errors, ws,
                            lambda message: None)
    return select(src, tgt, 0, len(train.src), max_len, src_tok.eos_id)
