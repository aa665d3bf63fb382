"""Scoring a model on held-out data, written once for validation during training and for
`seqtool evaluate`: language models (loss, perplexity, next-token accuracy, bits per character / per
byte, per-word perplexity), masked LMs (masked-token loss and accuracy) and translation models
(teacher-forced loss and greedy-decoded BLEU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from seqtool.data import batching
from seqtool.data.masking import mask_tokens, masking_options
from seqtool.errors import InputError
from seqtool.metrics import TextSize, lm_scores, perplexity

if TYPE_CHECKING:
    from seqtool.data.parallel import EncodedPairs, ParallelText
    from seqtool.training.seq2seq import ValidConfig

Evaluate = Callable[[torch.nn.Module], dict[str, float]]

# How a language model reads a text, as it was trained:
#   bptt   one stream in rows of `context` tokens, the recurrent state carried from row to row
#   window each token predicted from the `context` tokens before it
#   block  rows of `context` tokens read independently (a Transformer's positions)
#   masked block rows, BERT-corrupted with a fixed seed, scored on the masked tokens
READINGS = ("bptt", "window", "block", "masked")
MLM_VALID_SEED = 20190524  # fixed masks: every evaluation scores the same corruption


def check_length(ids: torch.Tensor, reading: str, context: int,
                 message: str = "the text is too short to score", hint: str = "pass a longer text") -> None:
    """An InputError unless `ids` holds a token to predict (for the window reading: past one window)."""
    if ids.numel() < (context + 1 if reading == "window" else 2):
        raise InputError(f"{message}: {ids.numel()} tokens", hint=hint)


def text_scores(model: torch.nn.Module, tok: Any, ids: torch.Tensor, reading: str, context: int,
                batch_size: int, max_batches: int = 0, size: TextSize | None = None) -> dict[str, float]:
    """loss, ppl, next-token accuracy (bpc for char models; bpb and word_ppl given the text's `size`),
    or a masked LM's loss, ppl and accuracy, of `model` on the token stream `ids` (N,), read as
    `reading` says; with the number of tokens scored."""
    check_length(ids, reading, context, hint="pass a longer text" + (" (longer than the window)"
                                                                       if reading == "window" else ""))
    if reading == "window":
        batches: Iterable[dict[str, Any]] = batching.window_eval_batches(ids, batch_size, context)
    else:
        batches = batching.stream_eval_batches(ids, batch_size, context)
    if reading == "masked":
        return {**mlm_scores(model, batches, masking_options(tok), max_batches), "tokens": int(ids.numel())}
    nll, ntokens, correct = lm_totals(model, batches, reading == "bptt", max_batches)
    return {**lm_scores(nll, ntokens, tok.kind == "char", size, correct), "tokens": ntokens}


def text_validation(tok: Any, ids: torch.Tensor, reading: str, context: int, batch_size: int,
                    max_batches: int, size: TextSize | None = None) -> Evaluate:
    """The trainer's evaluate() for a language model: text_scores on the validation stream `ids`
    (whose text has `size`)."""
    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        scores = text_scores(model, tok, ids, reading, context, batch_size, max_batches, size)
        del scores["tokens"]  # not a validation metric: the same every time
        return scores

    return evaluate


def lm_totals(model: torch.nn.Module, batches: Iterable[dict[str, Any]], carries_state: bool,
              max_batches: int = 0) -> tuple[float, int, int]:
    """(summed nll in nats, tokens, top-1 correct predictions) of a language model over batches; the
    recurrent state flows from each batch to the next when `carries_state` (the text read as one
    stream). A prediction is correct when the most likely token is the next one."""
    device = next(model.parameters()).device
    total, ntokens, correct, state = 0.0, 0, 0, None
    with torch.no_grad():
        for i, batch in enumerate(batches):
            if max_batches and i >= max_batches:
                break
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            if carries_state:
                logits, loss, state = model(batch, state=state)
            else:
                logits, loss = model(batch)[:2]
            total += float(loss) * batch["ntokens"]
            ntokens += batch["ntokens"]
            correct += int((logits.argmax(-1) == batch["targets"]).sum())  # (B, T) or (B,) windows
    return total, ntokens, correct


def workspace_reading(kind: str, config: dict[str, Any], model: Any) -> tuple[str, int, int]:
    """(reading, context, default rows) of a trained language model: as its run validated it.
    One stream keeps every token's whole history for bptt models; windows and blocks go 64 and 16
    at a time."""
    from seqtool.kinds import KINDS

    reading = KINDS[kind].reading
    if reading == "bptt":  # a recurrent model: bptt or window, as its run chose
        from seqtool.config import from_dict
        from seqtool.training.lm import LMDataConfig

        data = from_dict(LMDataConfig, config.get("data") or {}, "data.")
        if data.objective == "bptt":
            return "bptt", data.bptt, 1
        return "window", data.window, 64
    return reading, model.cfg.max_len, 16


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
    return {"loss": loss, "ppl": perplexity(loss), "accuracy": correct / n, "masked_tokens": n}


def ngram_scores(tok: Any, train: list[str], ids: torch.Tensor, order: int, smoothing: str, k: float,
                 size: TextSize | None = None) -> dict[str, Any]:
    """Perplexity (and bpc; bpb and word_ppl given the text's `size`) on the token stream `ids` of an
    n-gram model trained on the lines `train`: the baseline `seqtool evaluate --baseline ngram` puts
    beside a language model."""
    from seqtool.models.ngram import NGramLM
    from seqtool.training.lm import encode

    model = NGramLM(order, tok.vocab_size, smoothing, k).fit(encode(tok, train).tolist())
    nll, ntokens = model.nll(ids.tolist())
    return {**lm_scores(nll, ntokens, tok.kind == "char", size), "tokens": ntokens, "order": order,
            "smoothing": smoothing, "train_lines": len(train)}


# ---------------------------------------------------------------------------------------------
# translation


def translation_nll(model: torch.nn.Module, batches: Iterable[dict[str, Any]], device: torch.device,
                    max_batches: int = 0) -> tuple[float, int]:
    """(summed teacher-forced nll in nats, target tokens) of a translation model over parallel batches."""
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i, batch in enumerate(batches):
            if max_batches and i >= max_batches:
                break
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            total += float(model(batch)[1]) * batch["ntokens"]
            tokens += batch["ntokens"]
    return total, tokens


def translation_validation(valid_text: ParallelText, valid: EncodedPairs, src_tok: Any, tgt_tok: Any,
                           cfg: ValidConfig, batch_tokens: int, max_batches: int, device: torch.device
                           ) -> dict[str, Any]:
    """The TrainTask fields evaluate, metric and mode of a translation model: validation loss per
    target token and, with cfg.bleu, corpus BLEU of greedy translations (detokenised, sacrebleu)
    against the raw reference lines, which then picks the best weights."""
    from seqtool.data.parallel import ParallelBatches
    from seqtool.metrics import corpus_bleu
    from seqtool.translation import TranslateConfig, Translator

    batches = ParallelBatches(valid, batch_tokens, tgt_tok.pad_id, tgt_tok.bos_id, tgt_tok.eos_id,
                              shuffle=False)
    rows = range(len(valid_text.src))
    if cfg.max_sentences:
        rows = rows[: cfg.max_sentences]
    sources = [valid_text.src[i] for i in rows]
    references = [valid_text.tgt[i] for i in rows]
    decode = TranslateConfig(max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        total, tokens = translation_nll(model, batches.batches(0, 0), device, max_batches)
        loss = total / max(tokens, 1)
        metrics = {"loss": loss, "ppl": perplexity(loss)}
        if cfg.bleu:
            translator = Translator(model, src_tok, tgt_tok, device)
            hyps = [c[0].text for c in translator.translate(sources, decode)]
            metrics["bleu"] = corpus_bleu(hyps, [references], tokenize=cfg.bleu_tokenize).score
        return metrics

    metric, mode = ("bleu", "max") if cfg.bleu else ("loss", "min")
    return {"evaluate": evaluate, "metric": metric, "mode": mode}


# ---------------------------------------------------------------------------------------------
# classification


def classifier_validation(rows: list[list[int]], gold: list[int], batch_size: int, pad_id: int,
                          max_batches: int) -> Evaluate:
    """The trainer's evaluate() for a classifier: loss, accuracy and macro-F1 on the encoded validation
    texts `rows` with their label ids `gold` (classification.score_rows)."""
    from seqtool.classification import score_rows

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        scores = score_rows(model, rows, gold, batch_size, pad_id, max_batches)
        return {key: scores[key] for key in ("loss", "accuracy", "macro_f1")}

    return evaluate
