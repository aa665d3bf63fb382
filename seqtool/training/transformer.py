"""Training a Transformer (`train-transformer --arch …`): its config, and the TrainTask of each arch —
a causal LM on a token stream (decoder), a masked LM on the same stream (encoder), translation on
parallel text (encoder-decoder). Data and tokenizers come from training/lm.py and training/seq2seq.py,
validation from evaluation.py, so every train command reads and scores its data the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from seqtool.config import OptimConfig, RunConfig, check_choice, check_positive
from seqtool.data.mixing import VALID_TOKENS, check_text_data
from seqtool.data.noising import NoiseConfig
from seqtool.errors import InputError
from seqtool.evaluation import check_length
from seqtool.models.transformer import Transformer, TransformerConfig
from seqtool.training import tasks
from seqtool.training.seq2seq import ParallelDataConfig, ParallelTokenizerConfig, ValidConfig
from seqtool.training.tasks import TrainTask
from seqtool.workspace import Workspace

Note = Callable[[str], None]
KIND_OF_ARCH = {"decoder": "transformer-lm", "encoder": "transformer-mlm",
                "encoder-decoder": "transformer-mt"}


@dataclass
class TransformerDataConfig(ParallelDataConfig):
    train: list[str] = field(default_factory=list)  # decoder / encoder: text files, globs, '-' or .gz
    valid: list[str] = field(default_factory=list)
    block_size: int = 128  # decoder / encoder: tokens per training sequence (and positions of the model)
    mix: list[str] = field(default_factory=list)  # decoder / encoder: [NAME=]FILES:WEIGHT per corpus
    valid_tokens: int = VALID_TOKENS  # decoder / encoder: held-out tokens validation scores at most; 0: all

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("data.block_size", self.block_size)
        check_text_data(self)


@dataclass
class TransformerTrainConfig:
    """`seqtool train-transformer`: the sections of its YAML config."""

    data: TransformerDataConfig = field(default_factory=TransformerDataConfig)
    tokenizer: ParallelTokenizerConfig = field(default_factory=ParallelTokenizerConfig)
    model: TransformerConfig = field(default_factory=TransformerConfig)
    valid: ValidConfig = field(default_factory=ValidConfig)  # encoder-decoder: BLEU on validation
    # standard: the arch's own task (translation, causal LM, masked LM) | denoise: BART pretraining of an
    # encoder-decoder on data.train (training/denoise.py), with the noise section (default NoiseConfig())
    objective: str = "standard"
    noise: NoiseConfig | None = None
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        optimizer="adamw", lr=1e-3, beta2=0.98, weight_decay=0.01, schedule="inverse-sqrt", warmup_steps=200))
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        parallel = self.data.src or self.data.tgt or self.data.tsv
        check_choice("objective", self.objective, ("standard", "denoise"))
        denoise = self.objective == "denoise"
        if self.data.mix and (denoise or self.model.arch == "encoder-decoder"):
            raise InputError("--mix mixes text corpora for --arch decoder and encoder",
                             hint="drop --mix, or train --arch decoder/encoder")
        if denoise and (self.model.arch != "encoder-decoder" or parallel):
            raise InputError("--objective denoise pretrains an encoder-decoder on monolingual text",
                             hint="pass --arch encoder-decoder and the text as FILES (no --src/--tgt/--tsv)")
        if self.noise is not None and not denoise:
            raise InputError("--noise/--noise-ratio apply to --objective denoise only",
                             hint="add --objective denoise, or drop them")
        if denoise:
            self.noise = self.noise or NoiseConfig()
        elif self.model.arch == "encoder-decoder" and self.data.train:
            raise InputError("--arch encoder-decoder trains on parallel text, not data.train",
                             hint="pass --src and --tgt (or --tsv)")
        if self.model.arch != "encoder-decoder" and parallel:
            raise InputError(f"--arch {self.model.arch} trains on a text corpus, not --src/--tgt/--tsv",
                             hint="pass the text as FILES, or use --arch encoder-decoder for translation")


def build(cfg: TransformerTrainConfig, ws: Workspace, resuming: bool, device: torch.device,
          note: Note) -> tuple[TrainTask, Callable[[dict], None] | None]:
    """Read the data, learn or load the tokenizer(s), build the model and its task (training/run.py's
    Job.build), and what to do after a finished run (a decoder LM writes a sample)."""
    if cfg.objective == "denoise":
        from seqtool.training import denoise

        return denoise.build(cfg, ws, device, note, resuming), None
    if cfg.model.arch == "encoder-decoder":
        return _translation_task(cfg, ws, device, note, resuming), None
    return _language_model_task(cfg, ws, device, note, resuming)


def data_fields(cfg: TransformerTrainConfig) -> tuple[tuple[str, str], ...]:
    """The data files an arch reads (data.io's (role, field) pairs): parallel text or a text corpus."""
    from seqtool.data.io import PARALLEL_FILES, TEXT_FILES

    parallel = cfg.model.arch == "encoder-decoder" and cfg.objective != "denoise"
    return PARALLEL_FILES if parallel else TEXT_FILES


# ---------------------------------------------------------------------------------------------
# decoder (causal LM) and encoder (masked LM) on a token stream


def _language_model_task(cfg: TransformerTrainConfig, ws: Workspace, device: torch.device, note: Note,
                         resuming: bool) -> tuple[TrainTask, Callable[[dict], None] | None]:
    from seqtool.training import lm
    from seqtool.training.streams import token_streams

    corpus = token_streams(cfg.data, cfg.tokenizer, ws, resuming, cfg.run.seed, note)
    tok, valid_ids = corpus.tok, corpus.valid_ids
    block, B = cfg.data.block_size, cfg.run.batch_size
    model = Transformer(dataclasses.replace(cfg.model, vocab_size=tok.vocab_size, src_vocab_size=0,
                                            pad_id=tok.pad_id, max_len=block), cfg.optim.label_smoothing)
    reading = "block" if cfg.model.arch == "decoder" else "masked"
    task = tasks.streams_task(model, corpus, reading, block, cfg.run)
    note(f"{cfg.model.arch} Transformer: {model.num_params():,} parameters, {tok.kind} vocabulary of "
         f"{tok.vocab_size:,}; {corpus.train_tokens:,} training tokens in {task.data.steps_per_epoch:,} "
         f"batches of {B}×{block}; {corpus.note}")
    check_length(valid_ids, "block", block, "the validation text is too short",
                 hint="pass a longer --valid file")
    if reading == "masked":
        return task, None

    def after(summary: dict) -> None:
        sample = Transformer.from_arch(model.arch()).to(device)
        note(f"sample: {lm.write_sample(ws, sample, tok, cfg.run.seed, int(summary.get('steps', 0)))}")

    return task, after


# ---------------------------------------------------------------------------------------------
# encoder-decoder on parallel text


def _translation_task(cfg: TransformerTrainConfig, ws: Workspace, device: torch.device, note: Note,
                      resuming: bool) -> TrainTask:
    from seqtool.training import seq2seq

    data, batches = seq2seq.prepare_parallel(cfg, ws, resuming, note)
    src_tok, tgt_tok = data.src_tok, data.tgt_tok
    # Positions for the longest sentence seen (+1 for <s> or </s>), and at least the configured number.
    longest = max(data.train.longest(), data.valid.longest()) + 1
    model_cfg = dataclasses.replace(cfg.model, vocab_size=tgt_tok.vocab_size,
                                    src_vocab_size=src_tok.vocab_size, pad_id=tgt_tok.pad_id,
                                    max_len=max(cfg.model.max_len, longest))
    model = Transformer(model_cfg, cfg.optim.label_smoothing)
    note(f"encoder-decoder Transformer: {model.num_params():,} parameters; {src_tok.kind} vocabularies of "
         f"{src_tok.vocab_size:,} → {tgt_tok.vocab_size:,}; {batches.steps_per_epoch:,} batches per epoch")
    return tasks.translation_task(model, batches, data.valid_text, data.valid, src_tok, tgt_tok, cfg.valid,
                                  cfg.data.batch_tokens, cfg.run.eval_batches, device)

