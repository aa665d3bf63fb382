"""Denoising pretraining of an encoder-decoder Transformer (BART, Lewis et al., 2020):
`train-transformer --arch encoder-decoder --objective denoise FILES` reads monolingual text (one
sentence per line), packs consecutive sentences into examples of up to --block-size tokens, and
trains the model to rebuild each example from its noised copy (data/noising.py). The result is a
translation workspace (transformer-mt, one joint tokenizer) that `seqtool finetune --src --tgt`
fine-tunes for translation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from seqtool.data.noising import DenoisingBatches, NoiseConfig, pack
from seqtool.errors import InputError
from seqtool.models.transformer import Transformer
from seqtool.training.tasks import TrainTask
from seqtool.workspace import Workspace

Note = Callable[[str], None]


def encode_lines(tok: Any, lines: list[str]) -> list[list[int]]:
    return tok.encode_batch(lines) if hasattr(tok, "encode_batch") else [tok.encode(s) for s in lines]


def build(cfg: Any, ws: Workspace, device: torch.device, note: Note, resuming: bool) -> TrainTask:
    """The denoising task of train-transformer's config `cfg` (arch encoder-decoder, objective denoise):
    the joint tokenizer learnt (or loaded) on the text, the model, noised batches, and a validation loss
    on a fixed noising of the validation examples."""
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.evaluation import translation_nll
    from seqtool.metrics import perplexity
    from seqtool.training import lm

    noise: NoiseConfig = cfg.noise
    corpus = lm.read_corpus(cfg.data)
    if resuming:
        tok = load_tokenizer(ws.tokenizer_dir)
    else:
        tok = lm.prepare_tokenizer(cfg.tokenizer, corpus.train, ws)
    block = cfg.data.block_size
    train = pack(encode_lines(tok, corpus.train), block)
    if not train:
        raise InputError("the training text holds no tokens", hint="pass a non-empty text file")
    valid = pack(encode_lines(tok, corpus.valid), block) if corpus.valid else train
    max_len = max(cfg.model.max_len, block + 1)  # the example, or its noised copy (cut to fit), and </s>
    batches = DenoisingBatches(train, noise, cfg.data.batch_tokens, tok, cfg.run.seed, max_len)
    held_out = DenoisingBatches(valid, noise, cfg.data.batch_tokens, tok, cfg.run.seed + 1, max_len,
                                shuffle=False)
    V = tok.vocab_size
    model = Transformer(dataclasses.replace(cfg.model, vocab_size=V, src_vocab_size=V, pad_id=tok.pad_id,
                                            max_len=max_len), cfg.optim.label_smoothing)
    note(f"denoising encoder-decoder Transformer: {model.num_params():,} parameters, {tok.kind} vocabulary "
         f"of {V:,}; {len(train):,} examples of up to {block} tokens in {batches.steps_per_epoch:,} batches; "
         f"noise {'+'.join(noise.functions)} (ratio {noise.ratio}, spans ~ Poisson({noise.span_lambda})); "
         f"{corpus.note}")

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        total, tokens = translation_nll(m, held_out.batches(0, 0), device, cfg.run.eval_batches)
        loss = total / max(tokens, 1)
        return {"loss": loss, "ppl": perplexity(loss)}

    return TrainTask(model=model, data=batches, arch=model.arch(), evaluate=evaluate)
