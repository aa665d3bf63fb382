"""Training a Transformer (`train-transformer --arch …`): its config, and the TrainTask of each arch —
a causal LM on a token stream (decoder), a masked LM on the same stream (encoder), translation on
parallel text (encoder-decoder). Data, tokenizers and BLEU validation come from training/lm.py and
training/seq2seq.py, so every train command reads its data the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from seqtool.config import OptimConfig, RunConfig, check_positive
from seqtool.data import batching
from seqtool.data.masking import MaskedBatches, mask_tokens
from seqtool.errors import InputError
from seqtool.models.transformer import Transformer, TransformerConfig
from seqtool.training.seq2seq import ParallelDataConfig, ParallelTokenizerConfig, ValidConfig
from seqtool.training.trainer import TrainTask
from seqtool.workspace import Workspace

Note = Callable[[str], None]
KIND_OF_ARCH = {"decoder": "transformer-lm", "encoder": "transformer-mlm",
                "encoder-decoder": "transformer-mt"}
MLM_VALID_SEED = 20190524  # validation masks are fixed, so every evaluation scores the same corruption


@dataclass
class TransformerDataConfig(ParallelDataConfig):
    train: list[str] = field(default_factory=list)  # decoder / encoder: text files, globs, '-' or .gz
    valid: list[str] = field(default_factory=list)
    block_size: int = 128  # decoder / encoder: tokens per training sequence (and positions of the model)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("data.block_size", self.block_size)


@dataclass
class TransformerTrainConfig:
    """`seqtool train-transformer`: the sections of its YAML config."""

    data: TransformerDataConfig = field(default_factory=TransformerDataConfig)
    tokenizer: ParallelTokenizerConfig = field(default_factory=ParallelTokenizerConfig)
    model: TransformerConfig = field(default_factory=TransformerConfig)
    valid: ValidConfig = field(default_factory=ValidConfig)  # encoder-decoder: BLEU on validation
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        optimizer="adamw", lr=1e-3, beta2=0.98, weight_decay=0.01, schedule="inverse-sqrt", warmup_steps=200))
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        parallel = self.data.src or self.data.tgt or self.data.tsv
        if self.model.arch == "encoder-decoder" and self.data.train:
            raise InputError("--arch encoder-decoder trains on parallel text, not data.train",
                             hint="pass --src and --tgt (or --tsv)")
        if self.model.arch != "encoder-decoder" and parallel:
            raise InputError(f"--arch {self.model.arch} trains on a text corpus, not --src/--tgt/--tsv",
                             hint="pass the text as FILES, or use --arch encoder-decoder for translation")


def kind_of(cfg: TransformerTrainConfig) -> str:
    return KIND_OF_ARCH[cfg.model.arch]


def build(cfg: TransformerTrainConfig, ws: Workspace, resuming: bool, device: torch.device, is_main: bool,
          note: Note) -> tuple[TrainTask, Callable[[dict], None] | None]:
    """Read the data, learn or load the tokenizer(s), build the model and its task (cli/train.py's
    TrainJob.build), and what to do after a finished run (a decoder LM writes a sample)."""
    if cfg.model.arch == "encoder-decoder":
        return _translation_task(cfg, ws, device, note, resuming, is_main), None
    return _language_model_task(cfg, ws, device, note, resuming, is_main)


def data_fingerprints(cfg: TransformerTrainConfig) -> list[dict[str, Any]]:
    from seqtool.training import lm, seq2seq

    if cfg.model.arch == "encoder-decoder":
        return seq2seq.data_fingerprints(cfg.data)
    return lm.fingerprints(cfg.data)


def config_dict(cfg: TransformerTrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------
# decoder (causal LM) and encoder (masked LM) on a token stream


def _language_model_task(cfg: TransformerTrainConfig, ws: Workspace, device: torch.device, note: Note,
                         resuming: bool, is_main: bool) -> tuple[TrainTask, Callable[[dict], None] | None]:
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.metrics import lm_nll, lm_scores
    from seqtool.training import lm

    corpus = lm.read_corpus(cfg.data)
    if resuming:
        tok = load_tokenizer(ws.sub("tokenizer"))
    else:
        tok = lm.prepare_tokenizer(cfg.tokenizer, corpus.train, ws.path if is_main else None)
    train_ids = lm.encode(tok, corpus.train)
    valid_ids = lm.encode(tok, corpus.valid) if corpus.valid else train_ids
    block, B = cfg.data.block_size, cfg.run.batch_size
    model = Transformer(dataclasses.replace(cfg.model, vocab_size=tok.vocab_size, src_vocab_size=0,
                                            pad_id=tok.pad_id, max_len=block), cfg.optim.label_smoothing)
    source: Any = batching.BlockBatches(train_ids, B, block, cfg.run.seed)
    note(f"{cfg.model.arch} Transformer: {model.num_params():,} parameters, {tok.kind} vocabulary of "
         f"{tok.vocab_size:,}; {train_ids.numel():,} training tokens in {source.steps_per_epoch:,} "
         f"batches of {B}×{block}; {corpus.note}")
    if valid_ids.numel() < 2:
        raise InputError(f"the validation text is too short: {valid_ids.numel()} tokens",
                         hint="pass a longer --valid file")
    if cfg.model.arch == "decoder":
        char_level = tok.kind == "char"

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            eval_batches = batching.stream_eval_batches(valid_ids, B, block)
            return lm_scores(*lm_nll(m, eval_batches, False, cfg.run.eval_batches), char_level)

        def after(summary: dict) -> None:
            sample = Transformer.from_arch(model.arch()).to(device)
            note(f"sample: {lm.write_sample(ws, sample, tok, cfg.run.seed, int(summary.get('steps', 0)))}")

        return TrainTask(model=model, data=source, evaluate=evaluate, arch=model.arch()), after

    masking = masking_options(tok)
    source = MaskedBatches(source, seed=cfg.run.seed, **masking)

    def evaluate_mlm(m: torch.nn.Module) -> dict[str, float]:
        eval_batches = batching.stream_eval_batches(valid_ids, B, block)
        return mlm_scores(m, eval_batches, masking, cfg.run.eval_batches)

    return TrainTask(model=model, data=source, evaluate=evaluate_mlm, arch=model.arch()), None


def masking_options(tok: Any) -> dict[str, Any]:
    """mask_tokens' keyword arguments for a tokenizer: its mask and pad ids, vocabulary, and the
    special ids that are never selected."""
    return dict(mask_id=tok.mask_id, pad_id=tok.pad_id, vocab_size=tok.vocab_size,
                special_ids=(tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id))


def mlm_scores(model: torch.nn.Module, batches: Iterable[dict[str, Any]], masking: dict[str, Any],
               max_batches: int = 0, seed: int = MLM_VALID_SEED) -> dict[str, float]:
    """Masked-token loss, perplexity and accuracy (top-1 = the original token) over batches whose
    `inputs` are corrupted with a fixed seed, so every evaluation scores the same positions."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    nll, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for i, batch in enumerate(batches):
            if max_batches and i >= max_batches:
                break
            inputs, targets = mask_tokens(batch["inputs"], generator=generator, **masking)
            logits = model.logits({"inputs": inputs.to(device)}).float()  # (B, T, V)
            targets = targets.to(device)
            selected = targets != masking["pad_id"]
            nll += float(F.cross_entropy(logits[selected], targets[selected], reduction="sum"))
            correct += int((logits[selected].argmax(-1) == targets[selected]).sum())
            n += int(selected.sum())
    if n == 0:
        raise InputError("no token of the validation text was selected for masking",
                         hint="pass a longer --valid file")
    loss = nll / n
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "accuracy": correct / n, "masked_tokens": n}


# ---------------------------------------------------------------------------------------------
# encoder-decoder on parallel text


def _translation_task(cfg: TransformerTrainConfig, ws: Workspace, device: torch.device, note: Note,
                      resuming: bool, is_main: bool = True) -> TrainTask:
    from seqtool.training import seq2seq

    (_, valid_text), src_tok, tgt_tok, train, valid, batches = seq2seq.prepare_parallel(
        cfg, ws, resuming, is_main, note)
    # Positions for the longest sentence seen (+1 for <s> or </s>), and at least the configured number.
    longest = max(len(s) for d in (train, valid) for s in (*d.src, *d.tgt)) + 1
    model_cfg = dataclasses.replace(cfg.model, vocab_size=tgt_tok.vocab_size,
                                    src_vocab_size=src_tok.vocab_size, pad_id=tgt_tok.pad_id,
                                    max_len=max(cfg.model.max_len, longest))
    model = Transformer(model_cfg, cfg.optim.label_smoothing)
    note(f"encoder-decoder Transformer: {model.num_params():,} parameters; {src_tok.kind} vocabularies of "
         f"{src_tok.vocab_size:,} → {tgt_tok.vocab_size:,}; {batches.steps_per_epoch:,} batches per epoch")
    evaluate = seq2seq.make_evaluate(valid_text, valid, src_tok, tgt_tok, cfg, device)
    metric, mode = ("bleu", "max") if cfg.valid.bleu else ("loss", "min")
    return TrainTask(model=model, data=batches, evaluate=evaluate, arch=model.arch(), metric=metric,
                     mode=mode)


# ---------------------------------------------------------------------------------------------
# evaluate: held-out text for the decoder and encoder arches


def score_text(model: Transformer, tok: Any, ids: torch.Tensor, batch_size: int) -> dict[str, float]:
    """A decoder's loss, ppl (bpc for char models), or an encoder's masked-token loss, ppl and accuracy
    on the token stream `ids`, read in blocks of the model's positions as in validation."""
    from seqtool.metrics import lm_nll, lm_scores

    if ids.numel() < 2:
        raise InputError(f"the text is too short to score: {ids.numel()} tokens", hint="pass a longer text")
    batches = batching.stream_eval_batches(ids, batch_size, model.cfg.max_len)
    if model.cfg.arch == "decoder":
        nll, ntokens = lm_nll(model, batches, False)
        return {**lm_scores(nll, ntokens, tok.kind == "char"), "tokens": ntokens}
    masking = masking_options(tok)
    return {**mlm_scores(model, batches, masking), "tokens": int(ids.numel())}
