"""Translating with any translation workspace (RNN seq2seq, Transformer) through the step interface:
batched greedy search, beam search or sampling, detokenised output, and attention weights for
`attention-map`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seqtool.decoding import DecodeConfig, Hypothesis, beam_search, sample
from seqtool.errors import InputError
from seqtool.metrics import perplexity


@dataclass(frozen=True)
class TranslateConfig:
    beam: int = 1
    length_penalty: float = 0.0  # GNMT α: lp(Y) = ((5 + |Y|) / 6)^α; larger α favours longer outputs
    max_len_a: float = 1.5  # an output has at most a·|source| + b tokens
    max_len_b: int = 10
    nbest: int = 1
    batch_size: int = 64
    no_repeat_ngram: int = 0
    sample: bool = False  # draw each token from the model's distribution (seeded by the caller)
    temperature: float = 1.0  # sampling: divide the logits by this
    top_p: float = 1.0  # sampling: nucleus (Holtzman et al. 2020); 1.0: no limit

    def __post_init__(self) -> None:
        if not 1 <= self.beam <= 10_000:
            raise InputError(f"--beam must be between 1 and 10,000, got {self.beam}")
        if not 1 <= self.nbest <= self.beam:
            raise InputError(f"--nbest must be between 1 and --beam ({self.beam}), got {self.nbest}",
                             hint="raise --beam to get more candidates")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if not math.isfinite(self.length_penalty):
            raise InputError(f"--length-penalty must be a finite number, got {self.length_penalty}")
        a, b = self.max_len_a, self.max_len_b
        if not (0 <= a < math.inf and b >= 0) or (a == 0 and b < 1):  # (NaN fails every comparison)
            raise InputError(f"--max-len-a and --max-len-b must be finite numbers ≥ 0 that allow at least "
                             f"one token (got a={a}, b={b})")
        if self.no_repeat_ngram < 0:
            raise InputError(f"--no-repeat-ngram must be ≥ 0, got {self.no_repeat_ngram}")
        if self.sample and (self.beam > 1 or self.no_repeat_ngram):
            raise InputError("--sample draws one translation per line; --beam, --nbest and --no-repeat-ngram "
                             "belong to beam search", hint="leave out --sample, or the beam options")
        if not self.sample and (self.temperature != 1.0 or self.top_p != 1.0):
            raise InputError("--temperature and --top-p shape sampling", hint="add --sample")
        if not 0 < self.temperature < math.inf:  # NaN fails every comparison
            raise InputError(f"--temperature must be a finite number > 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"--top-p must be in (0, 1], got {self.top_p}")

    def max_tokens(self, src_len: int) -> int:
        return max(1, int(self.max_len_a * src_len + self.max_len_b))


@dataclass
class Candidate:
    text: str  # detokenised
    score: float  # log-probability (divided by the length penalty for beam search)
    ids: list[int]  # target ids, without </s>


@dataclass
class AttentionMap:
    """Target × source attention of one sentence: weights (L, H, T, S) as numpy (one layer and one
    head for RNN attention), with the token labels of both axes."""

    source_tokens: list[str]
    target_tokens: list[str]
    weights: Any
    translation: str

    def matrix(self, layer: int = -1, head: int | None = None) -> Any:
        """(T, S): one layer (default the last); one head, or the mean over heads."""
        w = self.weights[layer]
        return w.mean(0) if head is None else w[head]


# ---------------------------------------------------------------------------------------------
# loading and decoding


class NeverTokens:
    """A model whose steps give the tokens `ids` no probability: for sampling, which could otherwise
    draw tokens that no target sentence holds (padding, <s>, <mask>, and the newline, which would
    break one output line per input line)."""

    def __init__(self, model: Any, ids: Sequence[int]):
        self.model, self.ids = model, sorted(set(ids))

    def start(self, src_ids: Tensor | None = None, src_mask: Tensor | None = None) -> Any:
        return self.model.start(src_ids, src_mask)

    def step(self, next_ids: Tensor, state: Any) -> tuple[Tensor, Any]:
        logits, state = self.model.step(next_ids, state)  # (B, V)
        banned = torch.tensor(self.ids, device=logits.device)
        return logits.index_fill(1, banned, float("-inf")), state

    def reorder(self, state: Any, index: Tensor) -> Any:
        return self.model.reorder(state, index)


class Translator:
    """A translation model and its source/target tokenizers, ready to decode (eval mode)."""

    def __init__(self, model: torch.nn.Module, src_tok: Any, tgt_tok: Any, device: torch.device):
        self.model, self.src_tok, self.tgt_tok, self.device = model.eval(), src_tok, tgt_tok, device

    @classmethod
    def from_workspace(cls, path: str | Path, device: torch.device, adapter: str | None = None) -> Translator:
        from seqtool.data.tokenizers import load_tokenizer
        from seqtool.kinds import MT_KINDS
        from seqtool.models import load_published
        from seqtool.workspace import Workspace

        ws = Workspace.open(path, kinds=MT_KINDS, purpose="translation")
        model = load_published(ws, device, adapter)
        src_tok = load_tokenizer(ws.tokenizer_dir, side="src")
        tgt_tok = load_tokenizer(ws.tokenizer_dir, side="tgt")
        return cls(model, src_tok, tgt_tok, device)

    # -- decoding -------------------------------------------------------------------------------
    def encode_sources(self, lines: Sequence[str]) -> tuple[Tensor, Tensor, list[int]]:
        """Source ids + </s>, padded: (B, S) ids and mask, and each row's length."""
        rows = [[*ids, self.src_tok.eos_id] for ids in self.src_tok.encode_batch(list(lines))]
        lengths = [len(r) for r in rows]
        ids = torch.full((len(rows), max(lengths)), self.src_tok.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        ids = ids.to(self.device)
        return ids, ids != self.src_tok.pad_id, lengths

    @torch.no_grad()
    def decode_batch(self, lines: Sequence[str], cfg: TranslateConfig,
                     generator: torch.Generator | None = None) -> list[list[Candidate]]:
        """The cfg.nbest best translations of every line (non-empty lines only), or with cfg.sample
        one translation drawn from the model (its random numbers from `generator`)."""
        src, mask, lengths = self.encode_sources(lines)
        limits = [cfg.max_tokens(n - 1) + 1 for n in lengths]  # + 1 for </s>
        state = self.model.start(src, mask)
        bos = torch.full((len(lines), 1), self.tgt_tok.bos_id, dtype=torch.long, device=self.device)
        eos = self.tgt_tok.eos_id
        if cfg.sample:
            dcfg = DecodeConfig(max_tokens=max(limits), temperature=cfg.temperature, top_p=cfg.top_p)
            tok = self.tgt_tok
            model = NeverTokens(self.model, [tok.pad_id, tok.bos_id, tok.mask_id, tok.newline_id])
            results = [[h] for h in sample(model, state, bos, dcfg, generator, eos_id=eos)]
        elif cfg.beam == 1 and cfg.nbest == 1 and not cfg.no_repeat_ngram:
            dcfg = DecodeConfig(max_tokens=max(limits), greedy=True)
            results = [[h] for h in sample(self.model, state, bos, dcfg, eos_id=eos)]
        else:
            dcfg = DecodeConfig(max_tokens=max(limits), beam=cfg.beam, length_penalty=cfg.length_penalty,
                                no_repeat_ngram=cfg.no_repeat_ngram, nbest=cfg.nbest)
            results = beam_search(self.model, state, bos, dcfg, eos, max_lengths=limits)
        return [[self._candidate(h, limit) for h in hyps]
                for hyps, limit in zip(results, limits, strict=True)]

    def _candidate(self, hyp: Hypothesis, limit: int) -> Candidate:
        ids = hyp.ids[:limit]
        if ids and ids[-1] == self.tgt_tok.eos_id:
            ids = ids[:-1]
        score = hyp.score if len(hyp.ids) <= limit else sum(hyp.logprobs[:limit])
        return Candidate(self.tgt_tok.decode(ids), float(score), ids)

    def translate(self, lines: Iterable[str], cfg: TranslateConfig, generator: torch.Generator | None = None
                  ) -> Iterator[list[Candidate]]:
        """One list of candidates per input line, in input order; an empty line gives [Candidate('')].
        Sampling draws from `generator` batch after batch: the same seed and --batch-size give the
        same translations."""
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) == cfg.batch_size:
                yield from self._translate_chunk(chunk, cfg, generator)
                chunk = []
        if chunk:
            yield from self._translate_chunk(chunk, cfg, generator)

    def _translate_chunk(self, chunk: list[str], cfg: TranslateConfig, generator: torch.Generator | None
                         ) -> list[list[Candidate]]:
        todo = [i for i, line in enumerate(chunk) if line.strip()]
        out: list[list[Candidate]] = [[Candidate("", 0.0, [])] for _ in chunk]
        if todo:
            decoded = self.decode_batch([chunk[i].strip() for i in todo], cfg, generator)
            for i, cands in zip(todo, decoded, strict=True):
                out[i] = cands
        return out

    @torch.no_grad()
    def score(self, sources: Sequence[str], references: Sequence[str], cfg: TranslateConfig | None = None,
              tokenize: str = "13a") -> dict[str, Any]:
        """Corpus BLEU (with its sacrebleu signature) of the translations of `sources`, and the model's
        loss and perplexity per reference token (teacher-forced, pairs with an empty side skipped)."""

        from seqtool.data.parallel import ParallelBatches, ParallelText, encode_pairs
        from seqtool.evaluation import translation_nll
        from seqtool.metrics import corpus_bleu

        hyps = [c[0].text for c in self.translate(sources, cfg or TranslateConfig())]
        bleu = corpus_bleu(hyps, [list(references)], tokenize=tokenize)
        pairs = encode_pairs(ParallelText(list(sources), list(references), "evaluation"), self.src_tok,
                             self.tgt_tok)
        total, tokens = 0.0, 0
        if pairs.src:
            longest = max(max(len(s), len(t) + 1) for s, t in zip(pairs.src, pairs.tgt, strict=True))
            tok = self.tgt_tok
            batches = ParallelBatches(pairs, max(2048, longest), tok.pad_id, tok.bos_id, tok.eos_id,
                                      shuffle=False)
            total, tokens = translation_nll(self.model, batches.batches(0, 0), self.device)
        loss = total / tokens if tokens else float("nan")
        return {"bleu": bleu.score, "signature": bleu.signature, "loss": loss,
                "ppl": perplexity(loss) if tokens else float("nan"), "sentences": len(hyps),
                "tokens": tokens}

    # -- attention ------------------------------------------------------------------------------
    @torch.no_grad()
    def attention(self, source: str, target: str | None = None, max_len_a: float = 1.5,
                  max_len_b: int = 10, which: str = "cross") -> AttentionMap:
        """Attention weights of one sentence pair: forced decoding of `target`, or of the model's own
        greedy translation when `target` is None. Collected through the state the caller owns.
        `which`: cross (outputs × source), or a Transformer's encoder (source × source) or decoder
        (outputs × the target so far) self-attention."""
        if not source.strip():
            raise InputError("the source sentence is empty", hint="pass some text with --source or --input")
        if target is None:
            cfg = TranslateConfig(max_len_a=max_len_a, max_len_b=max_len_b)
            target_ids = self.decode_batch([source], cfg)[0][0].ids
        else:
            target_ids = self.tgt_tok.encode(target)
        src, mask, _ = self.encode_sources([source])
        steps = [self.tgt_tok.bos_id, *target_ids]  # the inputs; the outputs are target_ids + </s>
        state = self.model.start(src, mask)
        state.attention = {}
        _, state = self.model.step(torch.tensor([steps], device=self.device), state)
        found = state.attention.get(which)
        if not found and which == "cross":
            raise InputError("this model has no attention over the source (trained with --attention none)",
                             hint="attention maps need a model with attention")
        if not found:
            raise InputError(f"this model has no {which} self-attention",
                             hint="encoder and decoder self-attention maps need a Transformer workspace")
        # One step call appended one (B, H, rows, columns) tensor per layer.
        weights = torch.stack([w[0] for w in found]).float().cpu().numpy()  # (L, H, rows, columns)
        source_pieces = [self.src_tok.id_to_piece(i) for i in src[0].tolist()]
        outputs = [self.tgt_tok.id_to_piece(i) for i in [*target_ids, self.tgt_tok.eos_id]]
        columns, rows = {"cross": (source_pieces, outputs), "encoder": (source_pieces, source_pieces),
                         "decoder": ([self.tgt_tok.id_to_piece(i) for i in steps], outputs)}[which]
        return AttentionMap(columns, rows, weights, self.tgt_tok.decode(target_ids))


# ---------------------------------------------------------------------------------------------
# language models: self-attention over a text


def text_attention(path: str | Path, device: torch.device, adapter: str | None = None
                   ) -> Callable[[str], AttentionMap]:
    """For a Transformer language model: text → its self-attention over the text (tokens × tokens, every
    layer and head), causal for a decoder (GPT-like), both ways for an encoder (BERT-like). The text is
    cut to the model's positions."""
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.kinds import KINDS, LM_KINDS, MLM_KINDS
    from seqtool.models import load_published
    from seqtool.workspace import Workspace

    ws = Workspace.open(path, kinds=(*LM_KINDS, *MLM_KINDS), purpose="a self-attention map")
    if KINDS[ws.kind].reading == "bptt":  # a recurrent stream, not positions in a block
        raise InputError(f"workspace {ws.path} holds an RNN language model, which has no attention",
                         hint="attention maps need a Transformer or a translation model with attention")
    model = load_published(ws, device, adapter)
    tok = load_tokenizer(ws.tokenizer_dir)

    @torch.no_grad()
    def attention(text: str) -> AttentionMap:
        ids = tok.encode(text)[: model.cfg.max_len]
        if not ids:
            raise InputError("the text is empty", hint="pass some text with --source or --input")
        weights: dict[str, list[Tensor]] = {}
        model.logits({"inputs": torch.tensor([ids], device=device)}, weights=weights)
        found = weights.get("decoder") or weights.get("encoder") or []
        stacked = torch.stack([w[0] for w in found]).float().cpu().numpy()  # (L, H, T, T)
        pieces = [tok.id_to_piece(i) for i in ids]
        return AttentionMap(pieces, pieces, stacked, tok.decode(ids))

    return attention
