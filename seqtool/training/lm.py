"""Language-model training: corpus → tokenizer → token stream → batch sources → the Trainer's task,
and a sample written at the end. train-rnn uses it; any model called like RNNLM can.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from seqtool.config import DataConfig, OptimConfig, RunConfig, TokenizerConfig, check_choice, check_positive
from seqtool.data.io import (
    describe,
    file_fingerprint,
    iter_lines,
    require_nonempty,
)
from seqtool.data.mixing import VALID_TOKENS, check_text_data
from seqtool.data.tokenizers import Tokenizer, load_tokenizer, train_tokenizer
from seqtool.decoding import DecodeConfig, TextStream, WindowLM
from seqtool.errors import InputError
from seqtool.evaluation import check_length
from seqtool.models.rnn_lm import RNNLMConfig
from seqtool.training import tasks
from seqtool.training.tasks import TrainTask
from seqtool.workspace import Workspace, atomic_write

OBJECTIVES = ("bptt", "window")


@dataclass
class LMDataConfig(DataConfig):
    objective: str = "bptt"  # bptt: loss at every position of a carried stream | window: N tokens → next
    bptt: int = 100  # tokens per truncated back-propagation segment
    window: int = 50  # tokens per example of the window objective
    mix: list[str] = field(default_factory=list)  # [NAME=]FILES:WEIGHT per corpus, instead of train
    valid_tokens: int = VALID_TOKENS  # validation scores at most this many held-out tokens; 0: all

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("data.objective", self.objective, OBJECTIVES)
        check_positive("data.bptt", self.bptt)
        check_positive("data.window", self.window)
        check_text_data(self)
        if self.mix and self.objective == "bptt":
            raise InputError("--mix needs --objective window: truncated BPTT carries one hidden state from "
                             "batch to batch, which batches of different corpora would break",
                             hint="add --objective window (or train on one corpus)")


@dataclass
class TrainRNNConfig:
    """`seqtool train-rnn`: the sections of its YAML config."""

    data: LMDataConfig = field(default_factory=LMDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="char"))
    model: RNNLMConfig = field(default_factory=RNNLMConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.optim.label_smoothing:
            raise InputError("optim.label_smoothing is not used by language models (it would distort the "
                             "perplexity)", hint="remove it, or set it to 0")


# ---------------------------------------------------------------------------------------------
# corpus and tokenizer


@dataclass
class Corpus:
    train: list[str]
    valid: list[str]  # empty: validate on the training text
    note: str  # where the validation text comes from, for the log


def read_corpus(data: DataConfig) -> Corpus:
    """The training lines and the validation lines (--valid files, else the last valid_fraction of
    the training lines)."""
    if not data.train:
        raise InputError("no training text given", hint="pass FILES (or data.train in the --config YAML)")
    train = list(require_nonempty(iter_lines(data.train, data.encoding_errors), describe(data.train)))
    if data.valid:
        valid = list(require_nonempty(iter_lines(data.valid, data.encoding_errors), describe(data.valid)))
        return Corpus(train, valid, f"validation text: {describe(data.valid)}")
    held_out = int(len(train) * data.valid_fraction)
    if held_out < 1:
        return Corpus(train, [], "no validation text (too few lines to hold out, or valid_fraction 0): "
                                 "validating on the training text")
    return Corpus(train[:-held_out], train[-held_out:],
                  f"validation text: the last {held_out:,} of {len(train):,} lines (valid_fraction "
                  f"{data.valid_fraction})")


def prepare_tokenizer(cfg: TokenizerConfig, lines: list[str], ws: Workspace) -> Tokenizer:
    """The tokenizer of cfg.path, or one trained on `lines`; saved to WS/tokenizer (not by a read-only
    view: training it is deterministic, so every rank has the same)."""
    if cfg.path:
        tok = load_tokenizer(cfg.path)
    else:
        tok = train_tokenizer(cfg.kind, lines, vocab_size=cfg.vocab_size, min_count=cfg.min_count,
                              lowercase=cfg.lowercase)
    ws.save_tokenizers({"": tok})
    return tok


def encode(tok: Tokenizer, lines: list[str]) -> torch.Tensor:
    """The token stream of `lines` as a (N,) LongTensor: newline_id, then each line followed by
    newline_id. The first newline is the context generation starts a text from (lm_prompt_ids).
    The ids are gathered in an array (8 bytes each), not a list of Python ints (~36 bytes each)."""
    ids = array("q", [tok.newline_id])
    ids.extend(tok.encode_stream(lines))
    return torch.frombuffer(ids, dtype=torch.long).clone()


def write_sample(ws: Workspace, model: Any, tok: Tokenizer, seed: int, step: int, max_tokens: int = 300,
                 temperature: float = 0.8, on_text: Callable[[str], None] | None = None, window: int = 0
                 ) -> Path:
    """Sample `max_tokens` from the published weights into WS/samples/step-N.txt (each token from the
    last `window` tokens alone, for a window-objective model: decoding.WindowLM)."""
    state, _arch = ws.load_published()
    model.load_state_dict(state)
    model.eval()
    if window:
        model = WindowLM(model, window)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    cfg = DecodeConfig(max_tokens=max_tokens, temperature=temperature)
    stream = TextStream(model, tok, "", cfg, generator)
    text = "".join(stream)
    path = ws.sample_file(step)
    atomic_write(path, text + "\n")
    if on_text is not None:
        on_text(text)
    return path


def build_rnn_lm(cfg: TrainRNNConfig, ws: Workspace, resuming: bool, device: torch.device,
                 note: Callable[[str], None]) -> tuple[TrainTask, Callable[[dict], None]]:
    """train-rnn's task (corpus, tokenizer, model, batches) and what to do after a finished run."""
    from seqtool.models.rnn_lm import RNNLM
    from seqtool.training.streams import token_streams

    corpus = token_streams(cfg.data, cfg.tokenizer, ws, resuming, cfg.run.seed, note)
    tok, valid_ids = corpus.tok, corpus.valid_ids
    model = RNNLM(cfg.model, tok.vocab_size)
    params = sum(p.numel() for p in model.parameters())
    note(f"{cfg.model.cell} language model: {params:,} parameters, {tok.kind} vocabulary of "
         f"{tok.vocab_size:,}; {corpus.train_tokens:,} training tokens; {corpus.note}")
    context = cfg.data.bptt if cfg.data.objective == "bptt" else cfg.data.window
    task = tasks.streams_task(model, corpus, cfg.data.objective, context, cfg.run)
    check_length(valid_ids, cfg.data.objective, context, "the validation text is too short",
                 hint="pass a longer --valid file, or --valid-fraction 0 to validate on the training text")

    def after(summary: dict) -> None:
        window = cfg.data.window if cfg.data.objective == "window" else 0
        path = write_sample(ws, RNNLM(cfg.model, tok.vocab_size).to(device), tok, cfg.run.seed,
                            int(summary.get("steps", 0)), window=window)
        note(f"sample: {path}")

    return task, after


# ---------------------------------------------------------------------------------------------
# evaluate: the run's own text, for the held-out lines and an n-gram baseline


def _recorded_data(ws: Workspace) -> LMDataConfig:
    from seqtool.config import from_dict

    known = {f.name for f in fields(LMDataConfig)}  # other LM workspaces (transformer-lm) add keys
    return from_dict(LMDataConfig, {k: v for k, v in (ws.config.get("data") or {}).items() if k in known},
                     "data.")


def text_lines(ws: Workspace, paths: list[str]) -> list[str]:
    """All lines of `paths`, read with the workspace's encoding settings (e.g. --baseline-train)."""
    encoding_errors = _recorded_data(ws).encoding_errors
    return read_corpus(LMDataConfig(train=paths, valid_fraction=0.0, encoding_errors=encoding_errors)).train


def recorded_corpus(ws: Workspace, warn: Callable[[str], None]) -> Corpus:
    """The run's own training and validation lines, re-read from the files its seqtool.yaml records
    (the same held-out split when it had no --valid files)."""
    data = _recorded_data(ws)
    recorded = [f for f in ws.meta.get("data", []) if f.get("role") in ("train", "valid")]
    hint = "pass the text explicitly (--data FILE, --baseline-train FILE)"
    if data.mix:  # each corpus has its own held-out lines (training/mixture.py)
        raise InputError(f"workspace {ws.path} trained on a mixture of corpora (data.mix); evaluate scores "
                         "one text at a time", hint=hint)
    if not recorded:
        raise InputError(f"workspace {ws.path} records no training files", hint=hint)
    for f in recorded:
        if f["path"] == "-":
            raise InputError("the model was trained on stdin, which cannot be read again", hint=hint)
        if not Path(f["path"]).is_file():
            raise InputError(f"the training file {f['path']} recorded in {ws.path}/seqtool.yaml is missing",
                             hint=hint)
        if file_fingerprint(f["path"], [f])["sha256"] != f.get("sha256"):  # read only if its stat changed
            warn(f"{f['path']} changed since training; using its current contents")
    data.train = [f["path"] for f in recorded if f["role"] == "train"]
    data.valid = [f["path"] for f in recorded if f["role"] == "valid"]
    fixed = ws.fixed_data("valid.txt")
    if "finetune" in ws.config and fixed.is_file():  # fine-tuning keeps its validation set here
        valid = fixed.read_text(encoding="utf-8").split("\n")
        train = read_corpus(replace(data, valid=[], valid_fraction=0.0)).train
        if train[-len(valid):] == valid:  # held out from the end of the first round's data
            train = train[:-len(valid)]
        return Corpus(train, valid, f"validation text: {fixed}")
    return read_corpus(data)

