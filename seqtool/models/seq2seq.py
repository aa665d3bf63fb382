"""Encoder–decoder RNNs with attention (Sutskever et al. 2014; Bahdanau et al. 2015; Luong et al. 2015).

Encoder: embedding → LSTM/GRU (optionally bidirectional, optionally reading the source reversed).
Decoder: embedding ⊕ the previous attentional vector (input feeding) → LSTM/GRU → attention over the
encoder outputs → h̃ = tanh(W_c [context; h]) → output layer. `attention="none"` is the plain
"thought vector" model: the encoder's final state initialises the decoder and nothing else flows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqtool.config import MAX_LAYERS, check_between
from seqtool.errors import InputError

CELLS = ("lstm", "gru")
ATTENTIONS = ("none", "additive", "dot", "general", "scaled-dot", "cosine", "location")


@dataclass
class Seq2SeqConfig:
    encoder_cell: str = "lstm"
    decoder_cell: str = "lstm"
    embedding: int = 256
    hidden: int = 256
    n_layers: int = 1  # encoder and decoder alike
    bidirectional: bool = False
    reverse_source: bool = False  # Sutskever et al.: read the source backwards
    attention: str = "additive"
    max_source_positions: int = 256  # location attention scores a fixed number of source positions
    dropout: float = 0.2

    def __post_init__(self) -> None:
        for key in ("encoder_cell", "decoder_cell"):
            if getattr(self, key) not in CELLS:
                raise InputError(f"model.{key} must be one of {', '.join(CELLS)}; got {getattr(self, key)!r}")
        if self.attention not in ATTENTIONS:
            raise InputError(f"model.attention must be one of {', '.join(ATTENTIONS)}; "
                             f"got {self.attention!r}")
        check_between("model.n_layers", self.n_layers, 1, MAX_LAYERS)
        for key in ("embedding", "hidden", "max_source_positions"):
            if getattr(self, key) <= 0:
                raise InputError(f"model.{key} must be > 0, got {getattr(self, key)}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"model.dropout must be in [0, 1), got {self.dropout}")


# ---------------------------------------------------------------------------------------------
# attention scores: query (B, D) from the decoder, keys (B, S, D) precomputed once per source


class Attention(nn.Module):
    """score(h_t, h̄_s) for every kind, then a softmax over the real (non-pad) source positions."""

    def __init__(self, kind: str, dim: int, max_positions: int):
        super().__init__()
        self.kind = kind
        if kind == "additive":  # Bahdanau: vᵀ tanh(W_q h_t + W_k h̄_s)
            self.w_query = nn.Linear(dim, dim, bias=False)
            self.w_key = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, 1, bias=False)
        elif kind == "general":  # Luong: h_tᵀ W_a h̄_s
            self.w_key = nn.Linear(dim, dim, bias=False)
        elif kind == "cosine":  # content-based addressing (Graves et al. 2014): β cos(h_t, h̄_s)
            self.log_beta = nn.Parameter(torch.tensor(math.log(5.0)))
        elif kind == "location":  # Luong: a_t = softmax(W_a h_t), from the decoder state alone
            self.w_location = nn.Linear(dim, max_positions)

    def keys(self, memory: Tensor) -> Tensor:
        """The part of the score that depends only on the source: memory (B, S, D) → (B, S, D)."""
        if self.kind == "additive" or self.kind == "general":
            return self.w_key(memory)
        if self.kind == "cosine":
            return F.normalize(memory, dim=-1)
        return memory

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """query (B, D), keys (B, S, D), mask (B, S) True for real tokens → weights (B, S)."""
        if self.kind == "additive":
            scores = self.v(torch.tanh(keys + self.w_query(query)[:, None, :])).squeeze(-1)  # (B, S)
        elif self.kind == "location":
            S = keys.size(1)
            scores = self.w_location(query)[:, :S]  # (B, min(S, max_positions))
            if scores.size(1) < S:  # positions past max_source_positions cannot be attended to
                scores = F.pad(scores, (0, S - scores.size(1)), value=float("-inf"))
        else:
            q = F.normalize(query, dim=-1) if self.kind == "cosine" else query
            scores = torch.bmm(keys, q.unsqueeze(-1)).squeeze(-1)  # (B, S)
            if self.kind == "scaled-dot":
                scores = scores / math.sqrt(keys.size(-1))
            elif self.kind == "cosine":
                scores = scores * self.log_beta.exp()
        return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


# ---------------------------------------------------------------------------------------------
# the decoding state: every tensor has the batch first, so reorder is one index_select each


@dataclass
class Seq2SeqState:
    hidden: list[Tensor]  # [h] (GRU) or [h, c] (LSTM), each (B, L, H)
    feed: Tensor  # (B, H) the previous attentional vector h̃ (zeros at the start)
    memory: Tensor  # (B, S, H) encoder outputs (projected to H when bidirectional)
    keys: Tensor  # (B, S, H) attention keys derived from memory
    mask: Tensor  # (B, S) True for real source tokens
    attention: dict[str, list[Tensor]] | None = field(default=None)  # set to {} to collect weights


def reorder_state(state: Seq2SeqState, index: Tensor) -> Seq2SeqState:
    pick = lambda x: x.index_select(0, index)  # noqa: E731
    return Seq2SeqState([pick(h) for h in state.hidden], pick(state.feed), pick(state.memory),
                        pick(state.keys), pick(state.mask), state.attention)


def _rnn(cell: str, input_size: int, hidden: int, layers: int, dropout: float, bidirectional: bool = False):
    cls = nn.LSTM if cell == "lstm" else nn.GRU
    return cls(input_size, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0,
               bidirectional=bidirectional)


def reverse_padded(ids: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first `lengths[b]` entries of each row of ids (B, S, ...), leaving padding in place."""
    S = ids.size(1)
    pos = torch.arange(S, device=ids.device).expand(ids.size(0), S)  # (B, S)
    rev = (lengths[:, None] - 1 - pos).clamp(min=0)
    index = torch.where(pos < lengths[:, None], rev, pos)
    if ids.dim() == 3:
        index = index[:, :, None].expand_as(ids)
    return ids.gather(1, index)


def _per_layer(hidden: list[Tensor]) -> list[tuple[Tensor, ...]]:
    """[h] or [h, c], each (B, L, H) → per layer (h,) or (h, c), each (B, H)."""
    return list(zip(*(h.unbind(1) for h in hidden), strict=True))


# ---------------------------------------------------------------------------------------------
# the model


class Seq2Seq(nn.Module):
    """Called on {"src", "src_mask", "tgt_in", "tgt_out"} → (logits (B, T, V), loss)."""

    lora_targets = {  # --lora-targets (see lora.py): attention query/key, attentional combination, output
        "q": (("w_query", 0, 1),), "k": (("w_key", 0, 1),), "o": (("combine", 0, 1),),
        "out": (("out", 0, 1),),
    }
    # --extend-vocab: arch keys sized by each tokenizer ("" for one shared, src and tgt for two)
    vocab_keys = {"": ("src_vocab", "tgt_vocab"), "src": ("src_vocab",), "tgt": ("tgt_vocab",)}
    # --freeze (models/freezing.py): layer N of encoder and decoder (the fused LSTM/GRU's _lN weights)
    freeze_groups = {"embeddings": r"^(src|tgt)_embed\.", "encoder": r"^(encoder|src_embed)\.",
                     "layers": r"_l{i}(_reverse)?$"}

    def __init__(self, cfg: Seq2SeqConfig, src_vocab: int, tgt_vocab: int, pad_id: int = 0,
                 label_smoothing: float = 0.0, teacher_forcing: TeacherForcing | None = None):
        super().__init__()
        self.cfg, self.src_vocab, self.tgt_vocab, self.pad_id = cfg, src_vocab, tgt_vocab, pad_id
        self.label_smoothing = label_smoothing
        self.teacher_forcing = teacher_forcing or TeacherForcing()
        E, H, L = cfg.embedding, cfg.hidden, cfg.n_layers
        enc_out = H * (2 if cfg.bidirectional else 1)
        self.drop = nn.Dropout(cfg.dropout)
        self.src_embed = nn.Embedding(src_vocab, E, padding_idx=pad_id)
        self.encoder = _rnn(cfg.encoder_cell, E, H, L, cfg.dropout, cfg.bidirectional)
        # Bridge: the encoder's final state (both directions) initialises the decoder, layer by layer.
        self.bridge_h = nn.Linear(enc_out, H)
        self.bridge_c = nn.Linear(enc_out, H) if cfg.decoder_cell == "lstm" else None
        self.attends = cfg.attention != "none"
        self.tgt_embed = nn.Embedding(tgt_vocab, E, padding_idx=pad_id)
        self.decoder = _rnn(cfg.decoder_cell, E + (H if self.attends else 0), H, L, cfg.dropout)
        if self.attends:
            self.memory_proj = nn.Linear(enc_out, H) if enc_out != H else nn.Identity()
            self.attention = Attention(cfg.attention, H, cfg.max_source_positions)
            self.combine = nn.Linear(2 * H, H, bias=False)  # h̃ = tanh(W_c [c_t; h_t]) (Luong eq. 5)
        self.out = nn.Linear(H, tgt_vocab)

    @classmethod
    def from_arch(cls, arch: dict, label_smoothing: float = 0.0,
                  teacher_forcing: TeacherForcing | None = None) -> Seq2Seq:
        names = {f.name for f in fields(Seq2SeqConfig)}
        cfg = Seq2SeqConfig(**{k: v for k, v in arch.items() if k in names})
        return cls(cfg, int(arch["src_vocab"]), int(arch["tgt_vocab"]), int(arch.get("pad_id", 0)),
                   label_smoothing, teacher_forcing)

    def arch(self) -> dict:
        """The architecture for model.json."""
        return {"model": "seq2seq", **asdict(self.cfg), "src_vocab": self.src_vocab,
                "tgt_vocab": self.tgt_vocab, "pad_id": self.pad_id}

    # -- encoder --------------------------------------------------------------------------------
    def start(self, src_ids: Tensor | None = None, src_mask: Tensor | None = None) -> Seq2SeqState:
        """Encode the source (B, S) once: memory, attention keys, and the decoder's initial state."""
        if src_ids is None:
            raise InputError("a translation model needs source ids to start decoding")
        mask = (src_ids != self.pad_id) if src_mask is None else src_mask.bool()
        lengths = mask.sum(1).clamp(min=1)  # (B,)
        if self.cfg.reverse_source:
            src_ids = reverse_padded(src_ids, lengths)
        x = self.drop(self.src_embed(src_ids))  # (B, S, E)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src_ids.size(1))
        if self.cfg.reverse_source:  # back to source order, so attention weights line up with the words
            memory = reverse_padded(memory, lengths)
        hidden = [self._bridge(final[0] if self.cfg.encoder_cell == "lstm" else final, self.bridge_h)]
        if self.bridge_c is not None:
            c = final[1] if self.cfg.encoder_cell == "lstm" else torch.zeros_like(final)
            hidden.append(self._bridge(c, self.bridge_c, activation=False))
        B, H = src_ids.size(0), self.cfg.hidden
        feed = memory.new_zeros(B, H)
        if not self.attends:
            return Seq2SeqState(hidden, feed, memory[:, :0], memory[:, :0], mask)
        memory = self.memory_proj(self.drop(memory))  # (B, S, H)
        return Seq2SeqState(hidden, feed, memory, self.attention.keys(memory), mask)

    def _bridge(self, final: Tensor, linear: nn.Linear, activation: bool = True) -> Tensor:
        """final (L·dirs, B, H) from nn.LSTM/GRU → (B, L, H) for the decoder."""
        L, dirs = self.cfg.n_layers, 2 if self.cfg.bidirectional else 1
        final = final.view(L, dirs, final.size(1), -1).permute(2, 0, 1, 3).flatten(2)  # (B, L, dirs·H)
        y = linear(final)
        return torch.tanh(y) if activation else y

    # -- decoder --------------------------------------------------------------------------------
    # Input feeding makes step t wait for h̃_{t-1}, so the attentional decoder runs one token at a time.
    # It steps through the nn.LSTM/GRU's own weights with torch's single-step cell kernels
    # (`torch.lstm_cell`, as rnn_lm.py decodes), which skip the fused module's per-call set-up, and the
    # token's share of layer 0's input projection, W_ih[:, :E] e + b_ih, is computed for all T at once.

    def _cell_weights(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """(w_ih, w_hh, b_ih, b_hh) per decoder layer; layer 0's w_ih keeps only its h̃ columns when
        attending (the token's columns go into _token_input)."""
        rnn, E = self.decoder, self.cfg.embedding
        weights = [(getattr(rnn, f"weight_ih_l{i}"), getattr(rnn, f"weight_hh_l{i}"),
                    getattr(rnn, f"bias_ih_l{i}"), getattr(rnn, f"bias_hh_l{i}"))
                   for i in range(rnn.num_layers)]
        if self.attends:
            w_ih, w_hh, _, b_hh = weights[0]
            weights[0] = (w_ih[:, E:], w_hh, None, b_hh)
        return weights

    def _token_input(self, emb: Tensor) -> Tensor:
        """What layer 0 takes from the previous token: emb (..., E) itself, or with attention its share
        of the gates' input projection, (..., G·H) with G = 4 (LSTM) or 3 (GRU)."""
        if not self.attends:
            return emb
        return F.linear(emb, self.decoder.weight_ih_l0[:, : self.cfg.embedding], self.decoder.bias_ih_l0)

    def _decode(self, token: Tensor, hidden: list[tuple[Tensor, ...]], feed: Tensor, state: Seq2SeqState,
                weights: list[tuple[Tensor, ...]]) -> tuple[Tensor, list[tuple[Tensor, ...]], Tensor | None]:
        """One decoder step. token: the previous token through _token_input (B, ·); hidden: per layer
        (h, c) or (h,), each (B, H); feed (B, H): h̃_{t-1}. → h̃_t (B, H) (the top h without attention),
        the new hidden, and the attention weights (B, S) or None."""
        cell = torch.lstm_cell if self.cfg.decoder_cell == "lstm" else torch.gru_cell
        new, x = [], token
        for i, (layer, (w_ih, w_hh, b_ih, b_hh)) in enumerate(zip(hidden, weights, strict=True)):
            if i == 0 and self.attends:  # [e; h̃_{t-1}]: W_ih[:, E:] h̃ + (token = W_ih[:, :E] e + b_ih)
                x, b_ih = feed, token
            elif i > 0:
                x = F.dropout(x, self.cfg.dropout, self.training)  # nn.LSTM's dropout between layers
            out = cell(x, layer if len(layer) == 2 else layer[0], w_ih, w_hh, b_ih, b_hh)
            new.append(out if isinstance(out, tuple) else (out,))
            x = new[-1][0]
        h_t, attention = x, None
        if self.attends:
            attention = self.attention(h_t, state.keys, state.mask)  # (B, S)
            context = torch.bmm(attention[:, None, :], state.memory).squeeze(1)  # (B, H)
            h_t = torch.tanh(self.combine(torch.cat([context, h_t], dim=-1)))  # h̃_t
        return h_t, new, attention

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        state = self.start(batch["src"], batch.get("src_mask"))
        tgt_in = batch["tgt_in"]  # (B, T): <s> y1 … yn
        ratio = self.teacher_forcing.ratio(int(batch.get("batch_number", 0))) if self.training else 1.0
        if not self.attends and ratio >= 1.0:
            logits = self._unrolled(tgt_in, state)  # no input feeding: one fused pass over T
        else:
            logits = self._stepped(tgt_in, state, ratio)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["tgt_out"].flatten(),
                               ignore_index=self.pad_id,
                               label_smoothing=self.label_smoothing if self.training else 0.0)
        return logits, loss

    def _stepped(self, tgt_in: Tensor, state: Seq2SeqState, ratio: float) -> Tensor:
        """The decoder token by token, teacher-forced or with scheduled sampling → logits (B, T, V)."""
        weights, hidden, feed = self._cell_weights(), _per_layer(state.hidden), state.feed
        if ratio >= 1.0:  # teacher forcing: embed and project all inputs, and apply the output layer, at once
            tokens = self._token_input(self.drop(self.tgt_embed(tgt_in)))  # (B, T, ·)
            outputs = []
            for token in tokens.unbind(1):  # unbind: one gradient copy for all T (slicing makes T of them)
                feed, hidden, _ = self._decode(token, hidden, feed, state, weights)
                outputs.append(feed)
            return self.out(self.drop(torch.stack(outputs, dim=1)))  # (B, T, V)
        steps, prev = [], tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            gold = tgt_in[:, t]
            if t > 0:  # scheduled sampling (Bengio et al. 2015), token by token
                use_gold = torch.rand(gold.shape, device=gold.device) < ratio
                gold = torch.where(use_gold, gold, prev)
            token = self._token_input(self.drop(self.tgt_embed(gold)))
            feed, hidden, _ = self._decode(token, hidden, feed, state, weights)
            logit = self.out(self.drop(feed))  # (B, V)
            steps.append(logit)
            prev = logit.detach().argmax(-1)
        return torch.stack(steps, dim=1)  # (B, T, V)

    def _unrolled(self, tgt_in: Tensor, state: Seq2SeqState) -> Tensor:
        hidden = tuple(h.transpose(0, 1).contiguous() for h in state.hidden)
        out, _ = self.decoder(self.drop(self.tgt_embed(tgt_in)), hidden if len(hidden) == 2 else hidden[0])
        return self.out(self.drop(out))  # (B, T, V)

    # -- the step interface ---------------------------------------------------------------------
    def step(self, next_ids: Tensor, state: Seq2SeqState) -> tuple[Tensor, Seq2SeqState]:
        """next_ids (B, t) → logits (B, V) after the last of them. With `state.attention` a dict, the
        weights of these t tokens are appended to its "cross" list as (B, 1, t, S): one layer, one head."""
        weights, hidden, feed = self._cell_weights(), _per_layer(state.hidden), state.feed
        collected = []
        for token in self._token_input(self.tgt_embed(next_ids)).unbind(1):
            feed, hidden, attention = self._decode(token, hidden, feed, state, weights)
            if state.attention is not None and attention is not None:
                collected.append(attention)
        if collected:
            state.attention.setdefault("cross", []).append(torch.stack(collected, 1)[:, None].detach())
        joined = [torch.stack(parts, dim=1) for parts in zip(*hidden, strict=True)]  # (B, L, H) each
        state = Seq2SeqState(joined, feed, state.memory, state.keys, state.mask, state.attention)
        return self.out(feed), state

    def reorder(self, state: Seq2SeqState, index: Tensor) -> Seq2SeqState:
        return reorder_state(state, index)


# ---------------------------------------------------------------------------------------------
# teacher forcing with a decay schedule


DECAYS = ("none", "linear", "exponential", "inverse-sigmoid")


@dataclass
class TeacherForcing:
    """The probability of feeding the gold previous token, as a pure function of the batch number.

    none: `start` throughout. linear: from `start` down to `minimum` over `steps` batches.
    exponential: start · k^n with k chosen so it reaches `minimum` at `steps`. inverse-sigmoid
    (Bengio et al. 2015): start · s / (s + exp(n / s)) with s = steps / 10.
    """

    start: float = 1.0
    decay: str = "none"
    steps: int = 10000
    minimum: float = 0.0

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise InputError(f"teacher-forcing decay must be one of {', '.join(DECAYS)}; got {self.decay!r}")
        if not 0.0 <= self.minimum <= 1.0 or not 0.0 <= self.start <= 1.0:
            raise InputError(f"teacher-forcing ratios must be in [0, 1]; got {self.start} and {self.minimum}")

    def ratio(self, n: int) -> float:
        if self.decay == "none" or self.start <= self.minimum:
            return self.start
        frac = min(1.0, n / max(1, self.steps))
        if self.decay == "linear":
            value = self.start - (self.start - self.minimum) * frac
        elif self.decay == "exponential":
            floor = max(self.minimum, 1e-3)
            value = self.start * (floor / self.start) ** frac
        else:
            s = max(1.0, self.steps / 10)
            value = self.start * s / (s + math.exp(min(n / s, 50.0)))
        return max(self.minimum, value)

