"""The Transformer (Vaswani et al., 2017, "Attention Is All You Need") in three shapes: an
encoder-decoder for translation, a causal decoder (a GPT-like language model) and an encoder (a
BERT-like masked language model). Read from parts to whole: config, positions, attention (attention.py),
block, stack, model. Decoding runs through start/step/reorder with a KV cache as the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqtool.config import MAX_LAYERS, check_between
from seqtool.errors import InputError
from seqtool.models.attention import DecodeState, MultiHeadAttention
from seqtool.models.stepping import drop_step_weights, step_logits

ARCHS = ("encoder-decoder", "decoder", "encoder")
POSITIONS = ("sinusoidal", "learned")
ACTIVATIONS = ("relu", "gelu", "gelu-tanh")


@dataclass
class TransformerConfig:
    arch: str = "decoder"  # encoder-decoder (translation) | decoder (GPT-like LM) | encoder (BERT-like MLM)
    vocab_size: int = 0  # the (target) vocabulary; 0: the tokenizer's
    src_vocab_size: int = 0  # encoder-decoder: the source vocabulary; 0: the source tokenizer's
    n_layers: int = 4  # blocks per stack (the encoder-decoder has n_layers of each)
    n_heads: int = 4
    d_model: int = 128
    d_ff: int = 512
    dropout: float = 0.1  # on each sublayer's output (GPT-2's resid_pdrop) and, unless set below, the rest
    attn_dropout: float | None = None  # on attention probabilities (GPT-2's attn_pdrop); None: dropout
    embed_dropout: float | None = None  # on embeddings + positions (GPT-2's embd_pdrop); None: dropout
    positions: str = "sinusoidal"  # sinusoidal (the paper's §3.5) | learned (GPT-2, BERT)
    max_len: int = 1024  # positions available; a decoder LM slides its window past this
    norm_first: bool = True  # pre-LN (GPT-2; stable without warmup) or post-LN (the paper §3.1)
    activation: str = "relu"  # relu (the paper) | gelu (BERT) | gelu-tanh (GPT-2's approximation)
    tie: bool = True  # the output projection shares the (target) embedding matrix (§3.4)
    bias: bool = True  # biases in every linear layer (GPT-2 has them)
    pad_id: int = 0
    # Ids from here on are padding rows no token maps to (nanoGPT pads GPT-2's 50257 to 50304): `step`
    # never lets a decoder pick them. 0: every id is a token.
    tokenizer_size: int = 0

    def __post_init__(self) -> None:
        choices = {"arch": ARCHS, "positions": POSITIONS, "activation": ACTIVATIONS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise InputError(f"model.{key} must be one of {', '.join(allowed)}; "
                                 f"got {getattr(self, key)!r}")
        check_between("model.n_layers", self.n_layers, 1, MAX_LAYERS)
        for key in ("n_heads", "d_model", "d_ff", "max_len"):
            if getattr(self, key) <= 0:
                raise InputError(f"model.{key} must be > 0, got {getattr(self, key)}")
        if self.d_model % self.n_heads:
            raise InputError(f"model.d_model ({self.d_model}) must be divisible by "
                             f"model.n_heads ({self.n_heads})",
                             hint="e.g. --d-model 256 --heads 4")
        if self.positions == "sinusoidal" and self.d_model % 2:
            raise InputError(f"model.d_model must be even for sinusoidal positions, got {self.d_model}")
        for key in ("dropout", "attn_dropout", "embed_dropout"):
            if (value := getattr(self, key)) is not None and not 0.0 <= value < 1.0:
                raise InputError(f"model.{key} must be in [0, 1), got {value}")

    @classmethod
    def from_dict(cls, data: dict) -> TransformerConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ---------------------------------------------------------------------------------------------
# positions


def sinusoidal_encoding(n_positions: int, d_model: int) -> Tensor:
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(same). → (n_positions, D)"""
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * inv_freq)
    pe[:, 1::2] = torch.cos(position * inv_freq)
    return pe.float()


# ---------------------------------------------------------------------------------------------
# blocks and stacks


class FeedForward(nn.Module):
    """§3.3: two linear maps with a ReLU (or GELU) between them, applied at every position."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.activation = {"relu": nn.ReLU(), "gelu": nn.GELU(),
                           "gelu-tanh": nn.GELU(approximate="tanh")}[cfg.activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.activation(self.up(x)))


class Block(nn.Module):
    """One encoder or decoder layer: self-attention, cross-attention (decoder of an encoder-decoder),
    feed-forward; each sublayer inside a residual connection with LayerNorm before it (pre-LN, GPT-2)
    or after it (post-LN, the paper: LayerNorm(x + Sublayer(x)))."""

    def __init__(self, cfg: TransformerConfig, cross: bool):
        super().__init__()
        self.norm_first = cfg.norm_first
        self.self_attn_norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.self_attn = MultiHeadAttention(cfg)
        self.cross_attn_norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias) if cross else None
        self.cross_attn = MultiHeadAttention(cfg, cross=True) if cross else None
        self.ff_norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.ff = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def residual(self, x: Tensor, norm: nn.Module, sublayer, **kwargs) -> Tensor:
        y = sublayer(norm(x) if self.norm_first else x, **kwargs)
        if self.training:  # dropout is the identity in eval mode: skip its call when decoding
            y = self.drop(y)
        return x + y if self.norm_first else norm(x + y)

    def forward(self, x: Tensor, mask: Tensor | None, causal: bool, state: DecodeState | None, layer: int,
                memory: tuple[Tensor, Tensor] | None, memory_mask: Tensor | None,
                weights: dict[str, list[Tensor]] | None, name: str) -> Tensor:
        x = self.residual(x, self.self_attn_norm, self.self_attn, mask=mask, causal=causal, state=state,
                          layer=layer, weights=None if weights is None else weights.setdefault(name, []))
        if self.cross_attn is not None:
            x = self.residual(x, self.cross_attn_norm, self.cross_attn, mask=memory_mask, memory=memory,
                              weights=None if weights is None else weights.setdefault("cross", []))
        return self.residual(x, self.ff_norm, self.ff)


class Stack(nn.Module):
    """Token embedding + positions → n_layers blocks → final LayerNorm (pre-LN models only)."""

    def __init__(self, cfg: TransformerConfig, vocab_size: int, causal: bool, cross: bool):
        super().__init__()
        self.causal = causal
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        if cfg.positions == "learned":
            self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        else:
            self.register_buffer("pe", sinusoidal_encoding(cfg.max_len, cfg.d_model), persistent=False)
        # §3.4 scales embeddings by √d_model so they are not drowned by the ±1 sinusoids; models with
        # learned positions (GPT-2, BERT) do not.
        self.scale = math.sqrt(cfg.d_model) if cfg.positions == "sinusoidal" else 1.0
        self.drop = nn.Dropout(cfg.dropout if cfg.embed_dropout is None else cfg.embed_dropout)
        self.layers = nn.ModuleList(Block(cfg, cross) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias) if cfg.norm_first else nn.Identity()

    def forward(self, ids: Tensor, mask: Tensor | None = None, state: DecodeState | None = None,
                memory: list[tuple[Tensor, Tensor]] | None = None, memory_mask: Tensor | None = None,
                weights: dict[str, list[Tensor]] | None = None) -> Tensor:
        """ids (B, T) → hidden states (B, T, D). `mask` (B, 1, 1, T): True for real tokens (encoder);
        `state`: continue after the cached prefix (decoder); `memory`: per layer cross keys/values."""
        start = state.length if state is not None else 0
        T = ids.size(1)
        # positions start..start+T-1: rows of the learned table or of the sinusoids, sliced (no lookup)
        pos = (self.pos.weight if hasattr(self, "pos") else self.pe).narrow(0, start, T)  # (T, D)
        x = self.embed(ids)
        x = (x * self.scale if self.scale != 1.0 else x) + pos  # (B, T, D)
        if self.training:
            x = self.drop(x)
        causal = self.causal and start == 0 and T > 1
        if self.causal and start > 0 and T > 1:  # new queries see the whole prefix and themselves
            mask = torch.ones(T, start + T, dtype=torch.bool, device=ids.device).tril(start)
        name = "decoder" if self.causal else "encoder"
        for i, block in enumerate(self.layers):
            x = block(x, mask, causal, state, i, memory[i] if memory else None, memory_mask, weights, name)
        if state is not None:
            state.length += T
        return self.norm(x)


# ---------------------------------------------------------------------------------------------
# the model


class Transformer(nn.Module):
    """encoder-decoder: batch {src, tgt_in, tgt_out} · decoder: {inputs, targets} · encoder: {inputs,
    targets} with targets = pad_id where nothing is predicted. `model(batch)` → (logits, loss)."""

    lora_targets = {  # --lora-targets (see lora.py) → (module-name ending, chunk of the fused layer, chunks)
        "q": (("qkv", 0, 3), ("query", 0, 1)),  # self-attention; cross-attention's query
        "k": (("qkv", 1, 3), ("key_value", 0, 2)),
        "v": (("qkv", 2, 3), ("key_value", 1, 2)),
        "o": (("out", 0, 1),),
        "mlp": (("up", 0, 1), ("down", 0, 1)),
    }
    # --extend-vocab: arch keys sized by each tokenizer ("" for one shared, src and tgt for two)
    vocab_keys = {"": ("vocab_size",), "src": ("src_vocab_size",), "tgt": ("vocab_size",)}
    # --freeze (models/freezing.py): token and learned position tables; layer N of each stack
    freeze_groups = {"embeddings": r"\.(embed|pos)\.weight$", "encoder": r"^encoder\.",
                     "layers": r"(^|\.)layers\.{i}\."}

    def __init__(self, cfg: TransformerConfig, label_smoothing: float = 0.0):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise InputError("model.vocab_size must be > 0")
        self.cfg, self.label_smoothing = cfg, label_smoothing
        if cfg.arch != "decoder":
            two_vocabs = cfg.arch == "encoder-decoder" and cfg.src_vocab_size
            src_vocab = cfg.src_vocab_size if two_vocabs else cfg.vocab_size
            self.encoder = Stack(cfg, src_vocab, causal=False, cross=False)
        if cfg.arch != "encoder":
            self.decoder = Stack(cfg, cfg.vocab_size, causal=True, cross=cfg.arch == "encoder-decoder")
        out = self.encoder if cfg.arch == "encoder" else self.decoder
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.init_weights()
        if cfg.tie:
            self.head.weight = out.embed.weight

    def init_weights(self) -> None:
        """Two lineages, told apart by their positions. Learned (GPT-2, BERT): N(0, 0.02), residual
        projections scaled by 1/√(2·layers). Sinusoidal (the paper, as the Annotated Transformer and
        fairseq do it): Xavier-uniform matrices and N(0, d^-0.5) embeddings, which the √d scale makes
        unit-variance; at small widths N(0, 0.02) leaves such models stuck ignoring their source."""
        gpt = self.cfg.positions == "learned"
        for name, p in self.named_parameters():
            if p.dim() == 1:  # biases; LayerNorm weights keep their ones
                if not name.endswith("norm.weight"):
                    nn.init.zeros_(p)
            elif "embed" in name or name.endswith("pos.weight"):
                nn.init.normal_(p, std=0.02 if gpt else self.cfg.d_model ** -0.5)
            elif not gpt:
                nn.init.xavier_uniform_(p)
            elif name.endswith(("out.weight", "ff.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, std=0.02)

    def train(self, mode: bool = True) -> Transformer:
        if mode:
            drop_step_weights(self)  # the decoding copy of the head (stepping.py) is not needed now
        return super().train(mode)

    @classmethod
    def from_arch(cls, arch: dict, label_smoothing: float = 0.0) -> Transformer:
        """The model that model.json describes (weights not loaded)."""
        return cls(TransformerConfig.from_dict(arch), label_smoothing)

    def arch(self) -> dict:
        """The architecture for model.json."""
        return {"model": "transformer", **{f.name: getattr(self.cfg, f.name) for f in fields(self.cfg)}}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- training -----------------------------------------------------------------------------
    def source_mask(self, src: Tensor) -> Tensor:
        """(B, S) ids → (B, 1, 1, S) key-padding mask, True for real tokens."""
        return (src != self.cfg.pad_id)[:, None, None, :]

    def encode(self, src: Tensor, weights: dict[str, list[Tensor]] | None = None) -> Tensor:
        """(B, S) → (B, S, D); padding is never attended to."""
        mask = self.source_mask(src)
        return self.encoder(src, mask=None if bool(mask.all()) else mask, weights=weights)

    def logits(self, batch: dict[str, Tensor], weights: dict[str, list[Tensor]] | None = None) -> Tensor:
        """Teacher-forced logits: (B, T, V) for every target position."""
        if self.cfg.arch == "decoder":
            return self.head(self.decoder(batch["inputs"], weights=weights))
        if self.cfg.arch == "encoder":
            return self.head(self.encode(batch["inputs"], weights))
        memory = self.encode(batch["src"], weights)  # (B, S, D)
        cross = [block.cross_attn.memory_kv(memory) for block in self.decoder.layers]
        h = self.decoder(batch["tgt_in"], memory=cross, memory_mask=self.source_mask(batch["src"]),
                         weights=weights)
        return self.head(h)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits = self.logits(batch)  # (B, T, V)
        target = batch["tgt_out"] if self.cfg.arch == "encoder-decoder" else batch["targets"]
        # Smoothing only while training, so that validation loss and perplexity stay honest.
        loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=self.cfg.pad_id,
                               label_smoothing=self.label_smoothing if self.training else 0.0)
        return logits, loss

    # -- decoding: the step interface -----------------------------------------------------------
    def start(self, src_ids: Tensor | None = None, src_mask: Tensor | None = None) -> DecodeState:
        """An empty KV cache (decoder), or the encoded source (B, S) and its cross keys/values."""
        if self.cfg.arch == "encoder":
            raise InputError("an encoder (masked language model) does not generate text left to right",
                             hint='fill in masked tokens instead: seqtool generate -w WS --fill "a <mask> b"')
        n = self.cfg.n_layers
        state = DecodeState(keys=[None] * n, values=[None] * n)
        if self.cfg.arch == "encoder-decoder":
            if src_ids is None:
                raise InputError("a translation model needs source ids to start decoding")
            memory = self.encode(src_ids)
            state.memory = [block.cross_attn.memory_kv(memory) for block in self.decoder.layers]
            state.src_mask = (self.source_mask(src_ids) if src_mask is None
                              else src_mask.bool().view(src_ids.size(0), 1, 1, -1))
            state.src = src_ids
        return state

    def step(self, next_ids: Tensor, state: DecodeState) -> tuple[Tensor, DecodeState]:
        """next_ids (B, t): the new tokens only → logits (B, V) for the last one, and the state, whose
        cache now holds them too. The prefix is never recomputed (except when a decoder LM slides its
        window past max_len: then the newest half is re-encoded once every max_len/2 tokens)."""
        t = next_ids.size(1)
        if state.length + t > self.cfg.max_len:
            if self.cfg.arch != "decoder":
                raise InputError(f"the output is longer than the model's {self.cfg.max_len} positions",
                                 hint="lower the maximum output length")
            held = None if state.tokens is None else state.tokens[:, :state.length]
            seen = next_ids if held is None else torch.cat([held, next_ids], 1)
            # Keep what token-by-token stepping would hold after n tokens (it slides back to half the
            # window each time the window is full), so the output never depends on how the tokens were
            # fed: a whole prompt at once, or one by one beside other prompts (generation.py).
            n, half = seen.size(1), max(1, self.cfg.max_len // 2)
            keep = half + (n - self.cfg.max_len - 1) % (self.cfg.max_len - half + 1)
            attention = state.attention
            state = self.start()
            state.attention = attention
            next_ids = seen[:, -keep:]
        if state.attention is not None and state.src is not None and "encoder" not in state.attention:
            self.encode(state.src, weights=state.attention)  # recorded on request only
        if self.cfg.arch == "decoder":
            state.append_tokens(next_ids)
        h = self.decoder(next_ids, state=state, memory=state.memory, memory_mask=state.src_mask,
                         weights=state.attention)  # (B, t, D)
        logits = step_logits(self.head, h[:, -1])  # (B, V)
        if 0 < self.cfg.tokenizer_size < self.cfg.vocab_size:  # every decoder steps here: mask padding once
            logits[:, self.cfg.tokenizer_size:] = float("-inf")
        return logits, state

    def reorder(self, state: DecodeState, index: Tensor) -> DecodeState:
        """Keep/duplicate batch rows (beam search): every tensor in the state along its batch axis."""
        pick = lambda x: None if x is None else x.index_select(0, index)  # noqa: E731
        return DecodeState(
            keys=[pick(k) for k in state.keys], values=[pick(v) for v in state.values], length=state.length,
            tokens=pick(state.tokens), src_mask=pick(state.src_mask), src=pick(state.src),
            attention=state.attention,
            memory=None if state.memory is None else [(pick(k), pick(v)) for k, v in state.memory])

    # -- masked language model ------------------------------------------------------------------
    @torch.no_grad()
    def fill_mask(self, ids: Tensor, top_k: int = 5) -> tuple[Tensor, Tensor]:
        """Encoder arch: ids (B, T) → (probabilities, ids) of the top_k candidates, each (B, T, k)."""
        probs = self.logits({"inputs": ids}).float().softmax(-1)  # (B, T, V)
        return probs.topk(min(top_k, probs.size(-1)), dim=-1)
