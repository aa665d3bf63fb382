"""Decoding for every model through its start / step / reorder methods (DESIGN.md): greedy, sampling
with temperature, top-k and top-p, and beam search, plus text streaming for language models.

Nothing here knows which model it drives. `state = model.start(src_ids, src_mask)`;
`logits, state = model.step(next_ids (B, t), state)` gives (B, V) for the last position;
`model.reorder(state, index)` keeps/duplicates batch rows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from seqtool.errors import InputError


@dataclass
class DecodeConfig:
    max_tokens: int = 200  # new tokens at most (the end-of-sequence token included)
    greedy: bool = False
    temperature: float = 1.0  # 0 is greedy
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0  # nucleus sampling; 1.0: no limit
    beam: int = 1
    length_penalty: float = 0.0  # GNMT's α (Wu et al. 2016, eq. 14); 0: raw log-probability
    no_repeat_ngram: int = 0  # beam search: never repeat an n-gram of this size; 0: off
    nbest: int = 1

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InputError(f"--max-tokens must be ≥ 1, got {self.max_tokens}")
        if not 0 <= self.temperature < math.inf:  # NaN fails every comparison
            raise InputError(f"--temperature must be a finite number ≥ 0 (0: greedy), "
                             f"got {self.temperature}")
        if self.top_k < 0:
            raise InputError(f"--top-k must be ≥ 0 (0: off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.beam < 1:
            raise InputError(f"--beam must be ≥ 1, got {self.beam}")
        if not 1 <= self.nbest <= self.beam:
            raise InputError(f"--nbest must be between 1 and the beam size {self.beam}, got {self.nbest}")
        if self.no_repeat_ngram < 0:
            raise InputError(f"--no-repeat-ngram must be ≥ 0, got {self.no_repeat_ngram}")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


@dataclass
class Hypothesis:
    ids: list[int]  # the new tokens, the end-of-sequence token included when it was produced
    logprobs: list[float]  # the model's log-probability of each (temperature 1, unfiltered)
    score: float  # sum of logprobs, divided by the length penalty for beam search
    finished: bool = False  # ended with the end-of-sequence token


# ---------------------------------------------------------------------------------------------
# logits → the next token: small pure functions


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    return logits / temperature if temperature != 1.0 else logits


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row (B, V); the rest become -inf. k = 0 keeps all."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus sampling (Holtzman et al. 2020): keep the smallest set of tokens whose probability
    reaches p (always at least the most likely one)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs >= p  # the mass before a token already reaches p
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


def choose(logits: Tensor, cfg: DecodeConfig, generator: torch.Generator | None = None
           ) -> tuple[Tensor, Tensor]:
    """logits (B, V) → the next ids (B,) and their log-probabilities under the model (B,)."""
    logprobs = logits.float().log_softmax(-1)
    if cfg.is_greedy:
        ids = logprobs.argmax(-1)
    else:
        scores = top_k_filter(apply_temperature(logprobs, cfg.temperature), cfg.top_k)
        ids = sample_from(top_p_filter(scores, cfg.top_p).softmax(-1), generator)
    return ids, logprobs.gather(1, ids.unsqueeze(1)).squeeze(1)


def sample_from(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One index per row of weights (B, V) ≥ 0 (unnormalised), row i drawn with probability ∝ weight.
    argmax w / E with E ~ Exp(1) is the first of competing exponential clocks with rates w: what
    torch.multinomial computes inside, at half its per-call cost for one sample."""
    clocks = torch.empty_like(weights).exponential_(generator=generator)
    return (weights / clocks).argmax(-1)


def reorder_state(state: Any, index: Tensor, dim: int = 0) -> Any:
    """Select rows `index` along the batch axis `dim` of every tensor in a nested state (tuples,
    lists, dicts, dataclasses); anything that is not a tensor is kept as it is."""
    if isinstance(state, Tensor):
        return state.index_select(dim, index)
    if isinstance(state, (tuple, list)):
        return type(state)(reorder_state(s, index, dim) for s in state)
    if isinstance(state, dict):
        return {k: reorder_state(v, index, dim) for k, v in state.items()}
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return dataclasses.replace(state, **{f.name: reorder_state(getattr(state, f.name), index, dim)
                                             for f in dataclasses.fields(state) if f.init})
    return state


# ---------------------------------------------------------------------------------------------
# greedy and sampling


@torch.no_grad()
def sample_stream(model: Any, state: Any, next_ids: Tensor, cfg: DecodeConfig,
                  generator: torch.Generator | None = None, eos_id: int | None = None
                  ) -> Iterator[tuple[Tensor, Tensor]]:
    """Yields (ids (B,), logprobs (B,)) for each new token as soon as it is chosen; ends after
    cfg.max_tokens or when every row has produced `eos_id`. Rows that ended keep being stepped."""
    done = torch.zeros(next_ids.size(0), dtype=torch.bool, device=next_ids.device)
    for _ in range(cfg.max_tokens):
        logits, state = model.step(next_ids, state)
        ids, logprobs = choose(logits, cfg, generator)
        yield ids, logprobs
        if eos_id is not None:
            done |= ids == eos_id
            if bool(done.all()):
                return
        next_ids = ids.view(-1, 1)


def sample(model: Any, state: Any, next_ids: Tensor, cfg: DecodeConfig,
           generator: torch.Generator | None = None, eos_id: int | None = None) -> list[Hypothesis]:
    """Greedy (cfg.greedy) or sampled continuations of every row of next_ids (B, t). The chosen ids stay
    tensors until the end: one copy to Python lists, not one per token (on a GPU: one host sync)."""
    steps = list(sample_stream(model, state, next_ids, cfg, generator, eos_id))
    ids = torch.stack([i for i, _ in steps], 1).tolist()  # (B, n)
    logprobs = torch.stack([lp for _, lp in steps], 1).tolist()
    hyps = []
    for row, lps in zip(ids, logprobs, strict=True):
        n = row.index(eos_id) + 1 if eos_id in row else len(row)  # a row ends at its first </s>
        hyps.append(Hypothesis(row[:n], lps[:n], sum(lps[:n]), finished=row[n - 1] == eos_id))
    return hyps


# ---------------------------------------------------------------------------------------------
# beam search


def length_penalty(length: int, alpha: float) -> float:
    """GNMT: lp(Y) = ((5 + |Y|) / 6)^α."""
    return ((5.0 + length) / 6.0) ** alpha if alpha else 1.0


def _banned(history: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `history`."""
    if n <= 0 or len(history) < n:
        return []
    prefix = tuple(history[len(history) - n + 1:]) if n > 1 else ()
    return [history[i + n - 1] for i in range(len(history) - n + 1)
            if tuple(history[i:i + n - 1]) == prefix]


@torch.no_grad()
def beam_search(model: Any, state: Any, next_ids: Tensor, cfg: DecodeConfig, eos_id: int,
                max_lengths: Sequence[int] | None = None, end_ids: Sequence[int] = ()
                ) -> list[list[Hypothesis]]:
    """The cfg.nbest best continuations of each row of next_ids (B, t), best first.

    `max_lengths` caps the new tokens of each row (translation: a·|source| + b), else cfg.max_tokens.
    `end_ids`: more tokens that finish a hypothesis as `eos_id` does (a language model's stop tokens).

    All sentences and their beams step together as one batch of (live sentences × beam) rows. As in
    OpenNMT, a sentence is done when its best candidate ends with `eos_id` and it holds cfg.nbest
    finished hypotheses; its rows then leave the batch. With beam 1 this is exactly greedy search.
    """
    K, device = cfg.beam, next_ids.device
    rows = torch.arange(next_ids.size(0), device=device).repeat_interleave(K)  # every sentence K times
    state, inputs = model.reorder(state, rows), next_ids.index_select(0, rows)
    scores = torch.full((next_ids.size(0), K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the K copies are identical at first: let only one of them expand
    active = list(range(next_ids.size(0)))  # the sentence of each block of K rows
    beams = [Hypothesis([], [], 0.0) for _ in rows]  # the live hypothesis of each row
    finished: list[list[Hypothesis]] = [[] for _ in active]
    limits = [min(cfg.max_tokens, n) for n in max_lengths] if max_lengths else [cfg.max_tokens] * len(active)
    finishing = {eos_id, *end_ids}
    for t in range(cfg.max_tokens):
        logits, state = model.step(inputs, state)
        logprobs = logits.float().log_softmax(-1)  # (n·K, V)
        if cfg.no_repeat_ngram:
            for r, hyp in enumerate(beams):
                if banned := _banned(hyp.ids, cfg.no_repeat_ngram):
                    logprobs[r, banned] = float("-inf")
        V = logprobs.size(1)
        flat = (scores.view(-1, 1) + logprobs).view(len(active), K * V)  # (n, K·V)
        top_scores, top = flat.topk(min(2 * K, K * V), dim=1)  # (n, 2K): enough for K that go on
        top_lp = logprobs.view(len(active), K * V).gather(1, top)
        keep: list[tuple[int, int, float, float]] = []  # (row, token, score, token logprob)
        still_active = []
        for i, sent in enumerate(active):
            alive, best_is_eos = [], False
            candidates = zip(top_scores[i].tolist(), top[i].tolist(), top_lp[i].tolist(), strict=True)
            for rank, (score, pos, lp) in enumerate(candidates):
                if score == float("-inf"):
                    break
                beam, tok = divmod(pos, V)
                row = i * K + beam
                if tok in finishing:
                    best_is_eos |= rank == 0
                    if rank < K:
                        finished[sent].append(_final(_extend(beams[row], tok, lp, score), cfg, True))
                elif len(alive) < K:
                    alive.append((row, tok, score, lp))
            if (best_is_eos and len(finished[sent]) >= cfg.nbest) or t == limits[sent] - 1 or not alive:
                # out of steps (or every extension blocked): the live beams count too
                ends = [_extend(beams[row], tok, lp, score) for row, tok, score, lp in alive]
                if not alive:
                    ends = [h for h in beams[i * K:(i + 1) * K] if h.score > float("-inf")]
                short = max(0, cfg.nbest - len(finished[sent]))
                finished[sent] += [_final(h, cfg, False) for h in ends[:short]]
                continue
            still_active.append(sent)
            keep += alive + [(*alive[-1][:2], float("-inf"), 0.0)] * (K - len(alive))  # pads never win
        if not still_active:
            break
        state = model.reorder(state, torch.tensor([k[0] for k in keep], device=device))
        inputs = torch.tensor([[k[1]] for k in keep], device=device)
        scores = torch.tensor([k[2] for k in keep], device=device).view(len(still_active), K)
        beams = [_extend(beams[row], tok, lp, score) for row, tok, score, lp in keep]
        active = still_active
    return [sorted(f, key=lambda h: -h.score)[: cfg.nbest] for f in finished]


def _extend(hyp: Hypothesis, tok: int, lp: float, total: float) -> Hypothesis:
    """`hyp` plus one token; `total` is the new summed log-probability."""
    return Hypothesis([*hyp.ids, tok], [*hyp.logprobs, lp], total)


def _final(hyp: Hypothesis, cfg: DecodeConfig, finished: bool) -> Hypothesis:
    """A hypothesis leaving the beam, scored by its summed log-probability / lp(length)."""
    return Hypothesis(hyp.ids, hyp.logprobs, hyp.score / length_penalty(len(hyp.ids), cfg.length_penalty),
                      finished)


# ---------------------------------------------------------------------------------------------
# language models: text in, text out, streamed


def lm_prompt_ids(tokenizer: Any, prompt: str, newline_prefix: bool = True) -> list[int]:
    """The ids a language model continues: a newline (LMs here train on a stream of lines, each
    followed by newline_id, so a text starts after one), then the prompt's tokens. Without
    `newline_prefix` the prompt's tokens alone, as transformers' generate() takes them; an empty
    prompt still starts after a newline (there must be something to condition on)."""
    ids = tokenizer.encode(prompt) if prompt else []
    return ids if ids and not newline_prefix else [tokenizer.newline_id, *ids]


@dataclass
class Sample:
    prompt: str
    text: str = ""  # the continuation (without the prompt), cut before a stop string
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stop_reason: str = ""  # eos | stop | max_tokens


class TextRow:
    """One sample's text as its tokens arrive: incremental detokenisation, </s>, stop strings. `add`
    returns the text that can be shown now (held back only while it might start a stop string)."""

    def __init__(self, tokenizer: Any, prompt: str, prompt_ids: Sequence[int], stop: Sequence[str] = ()):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.sample = Sample(prompt, stop_reason="max_tokens")
        # Decode a short window (the last prompt token + what is new) and emit what it adds, so a
        # word tokenizer's spaces and sentencepiece's "▁" come out right at O(1) cost per token.
        self.window, self.prefix, self.read = list(prompt_ids[-1:]), 0, 1
        self.emitted, self.done = 0, False

    def add(self, i: int, logprob: float) -> str:
        tok, s = self.tokenizer, self.sample
        s.ids.append(i)
        s.logprobs.append(logprob)
        if i == tok.eos_id:
            s.stop_reason, self.done = "eos", True
            return self.rest()
        self.window.append(i)
        before, after = tok.decode(self.window[self.prefix:self.read]), tok.decode(self.window[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            s.text += after[len(before):]
            self.prefix, self.read = self.read, len(self.window)
        if (cut := self._stop_at()) is not None:
            s.text, s.stop_reason, self.done = s.text[:cut], "stop", True
            return self.rest()
        hold = self._hold_back()
        if len(s.text) - hold <= self.emitted:
            return ""
        piece, self.emitted = s.text[self.emitted:len(s.text) - hold], len(s.text) - hold
        return piece

    def rest(self) -> str:
        """The text not yet returned (at the end of the sample)."""
        piece, self.emitted = self.sample.text[self.emitted:], len(self.sample.text)
        return piece

    def _stop_at(self) -> int | None:
        text = self.sample.text
        hits = [i for stop in self.stop if (i := text.find(stop, max(0, self.emitted - len(stop)))) >= 0]
        return min(hits) if hits else None

    def _hold_back(self) -> int:
        text = self.sample.text
        return max((k for stop in self.stop for k in range(1, len(stop)) if text.endswith(stop[:k])),
                   default=0)


class TextStream:
    """One language-model sample, streamed: iterating yields new text as soon as it is decoded (held
    back only while it might be the start of a stop string); `sample` holds the result afterwards."""

    def __init__(self, model: Any, tokenizer: Any, prompt: str, cfg: DecodeConfig,
                 generator: torch.Generator | None = None, stop: Sequence[str] = (),
                 newline_prefix: bool = True):
        self.model, self.tokenizer, self.cfg, self.generator = model, tokenizer, cfg, generator
        self.newline_prefix = newline_prefix
        self.stop = [s for s in stop if s]
        self.sample = Sample(prompt)

    def __iter__(self) -> Iterator[str]:
        prompt = lm_prompt_ids(self.tokenizer, self.sample.prompt, self.newline_prefix)
        row = TextRow(self.tokenizer, self.sample.prompt, prompt, self.stop)
        self.sample = row.sample
        inputs = torch.tensor([prompt], device=next(self.model.parameters()).device)
        # </s> is checked by the row, not by sample_stream: one row needs no batch bookkeeping
        for ids, logprobs in sample_stream(self.model, self.model.start(), inputs, self.cfg, self.generator):
            if piece := row.add(ids.item(), logprobs.item()):
                yield piece
            if row.done:
                return
        if piece := row.rest():
            yield piece


# ---------------------------------------------------------------------------------------------
# language models: beam search, and re-reading a window


class WindowLM(torch.nn.Module):
    """A language model read as the window objective trained it (N tokens → the next, each window
    from a fresh state; the recipe lecture's "re-read the last N words"): every step feeds the
    model only the last `window` tokens, from model.start(). The state is those tokens (B, ≤ N),
    so sampling and beam search drive it like any model; each token costs N model steps."""

    def __init__(self, model: Any, window: int):
        super().__init__()
        self.model, self.window = model, window

    def start(self, src_ids: Tensor | None = None, src_mask: Tensor | None = None) -> Tensor | None:
        return None

    def step(self, next_ids: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        tokens = next_ids if state is None else torch.cat([state, next_ids], 1)
        tokens = tokens[:, -self.window:]  # (B, ≤ N): fewer only while the text is shorter
        logits, _ = self.model.step(tokens, self.model.start())
        return logits, tokens

    def reorder(self, state: Tensor | None, index: Tensor) -> Tensor | None:
        return None if state is None else state.index_select(0, index)


def lm_beam(model: Any, tokenizer: Any, prompt: str, cfg: DecodeConfig, stop: Sequence[str] = (),
            newline_prefix: bool = True) -> list[Sample]:
    """The cfg.nbest most likely continuations of `prompt` (beam search of width cfg.beam, ranked by
    log-probability / the length penalty cfg.length_penalty), best first. A hypothesis ends at </s>,
    at a token whose text is a stop string (e.g. the newline token for "\n"), or after cfg.max_tokens;
    its text is cut before the first stop string. Beam 1 is greedy search."""
    prompt_ids = lm_prompt_ids(tokenizer, prompt, newline_prefix)
    stop = [s for s in stop if s]
    ends = [i for i in range(tokenizer.vocab_size)
            if stop and i != tokenizer.eos_id and tokenizer.decode([i]) in stop]
    inputs = torch.tensor([prompt_ids], device=next(model.parameters()).device)
    [hyps] = beam_search(model, model.start(), inputs, cfg, tokenizer.eos_id, end_ids=ends)
    samples = []
    for hyp in hyps:
        ids = hyp.ids[:-1] if hyp.ids[-1:] == [tokenizer.eos_id] else hyp.ids
        text = tokenizer.decode([prompt_ids[-1], *ids])[len(tokenizer.decode(prompt_ids[-1:])):]
        hits = [i for s in stop if (i := text.find(s)) >= 0]
        reason = "eos" if hyp.ids[-1:] == [tokenizer.eos_id] else "stop" if hits else "max_tokens"
        samples.append(Sample(prompt, text[:min(hits)] if hits else text, hyp.ids, hyp.logprobs, reason))
    return samples
