"""Language-model batches from a token stream: truncated BPTT over B parallel streams (RNNs), shuffled
blocks (Transformers), or (window → next token) examples. All implement the tasks.BatchSource protocol: the
same (epoch, start) always yields the same batches, so a resumed run continues from the exact data
position. The stream may be a memory-mapped uint16/int32 view (data/store.py): batches come out int64.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from seqtool.errors import InputError

Batch = dict[str, Any]


class StreamBatches:
    """Truncated BPTT: the stream cut into `batch_size` contiguous rows, read `bptt` tokens at a time.

    Row b holds tokens [b·L, (b+1)·L) with L = (N − 1) // batch_size, so batch i of every epoch
    continues batch i − 1 of the same rows and the trainer can carry the hidden state across.
    """

    def __init__(self, ids: Tensor, batch_size: int, bptt: int):
        length = (ids.numel() - 1) // batch_size
        if length < bptt:
            raise InputError(
                f"the training text is too short: {ids.numel():,} tokens, but batch size {batch_size} × "
                f"bptt {bptt} needs at least {batch_size * bptt + 1:,}",
                hint="use more text, or a smaller --batch-size or --bptt")
        used = batch_size * length
        self.inputs = ids[:used].view(batch_size, length)  # (B, L)
        self.targets = ids[1:used + 1].view(batch_size, length)  # (B, L): the next token of each
        self.bptt = bptt
        self.steps_per_epoch = math.ceil(length / bptt)  # the last batch may be shorter

    def batches(self, epoch: int, start: int) -> Iterator[Batch]:
        del epoch  # every epoch reads the rows in the same order, as truncated BPTT must
        for i in range(start, self.steps_per_epoch):
            yield self._batch(i)

    def _batch(self, i: int) -> Batch:
        cols = slice(i * self.bptt, (i + 1) * self.bptt)
        inputs, targets = self.inputs[:, cols].contiguous().long(), self.targets[:, cols].contiguous().long()
        return {"inputs": inputs, "targets": targets, "ntokens": targets.numel()}


class BlockBatches:
    """Stateless models (Transformers): the stream cut into blocks of `block` tokens from an offset
    drawn each epoch, the blocks shuffled each epoch; both come from (seed, epoch). Every token is
    predicted about once per epoch, in another context and another batch each epoch.

    A last partial batch is dropped, unless the text holds less than one batch of blocks (tiny data):
    then each epoch is one smaller batch.
    """

    def __init__(self, ids: Tensor, batch_size: int, block: int, seed: int):
        self.n_blocks = (ids.numel() - block) // block  # room for any offset < block, and the last target
        if self.n_blocks < 1:
            raise InputError(f"the training text is too short: {ids.numel():,} tokens, but blocks of {block} "
                             f"need at least {2 * block:,}", hint="use more text, or a smaller --block-size")
        self.ids, self.block, self.seed = ids, block, seed
        self.rows = min(batch_size, self.n_blocks)
        self.steps_per_epoch = self.n_blocks // self.rows

    def batches(self, epoch: int, start: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        offset = int(torch.randint(self.block, (1,), generator=generator))
        order = torch.randperm(self.n_blocks, generator=generator)
        span = torch.arange(self.block)
        for i in range(start, self.steps_per_epoch):
            starts = offset + order[i * self.rows:(i + 1) * self.rows] * self.block
            index = starts[:, None] + span  # (rows, block)
            targets = self.ids[index + 1].long()
            yield {"inputs": self.ids[index].long(), "targets": targets, "ntokens": targets.numel()}


class WindowBatches:
    """Many-to-one examples: `window` tokens → the token after them, every start position once per
    epoch, in an order seeded from (seed, epoch): a Permutation, computed a chunk at a time, so that an
    epoch over a corpus of any size holds no list of its start positions (a randperm of a 1 GB corpus's
    ~250M starts would take 2 GB)."""

    def __init__(self, ids: Tensor, batch_size: int, window: int, seed: int):
        self.ids, self.batch_size, self.window, self.seed = ids, batch_size, window, seed
        self.n_examples = ids.numel() - window
        if self.n_examples < batch_size:
            raise InputError(
                f"the training text is too short: {ids.numel():,} tokens give {max(self.n_examples, 0):,} "
                f"windows of {window}, fewer than one batch of {batch_size}",
                hint="use more text, or a smaller --batch-size or --window")
        self.steps_per_epoch = self.n_examples // batch_size  # a last partial batch is dropped

    def batches(self, epoch: int, start: int) -> Iterator[Batch]:
        order, B = Permutation(self.n_examples, self.seed * 1_000_003 + epoch), self.batch_size
        per_chunk = max(1, ORDER_CHUNK // B)  # batches whose starts are computed at once
        for first in range(start, self.steps_per_epoch, per_chunk):
            last = min(first + per_chunk, self.steps_per_epoch)
            starts = order(torch.arange(first * B, last * B))
            for i in range(last - first):
                yield window_batch(self.ids, starts[i * B:(i + 1) * B], self.window)


ORDER_CHUNK = 1 << 16  # positions of a Permutation computed at a time (512 KB)


class Permutation:
    """A seeded pseudo-random permutation of range(n), computed at any positions in O(1) memory: a
    balanced Feistel network (ROUNDS rounds, keys drawn from `seed`) permutes [0, 4^h), the smallest
    such range holding n; a value it sends past n is sent on again (cycle walking) until it lands
    inside, at most a few times, since n > 4^h / 4. The same (n, seed) gives the same order on any machine,
    and position i of it costs the same whether or not positions before i were computed (a resume)."""

    ROUNDS = 6

    def __init__(self, n: int, seed: int):
        self.n, self.half = n, max(1, ((n - 1).bit_length() + 1) // 2)  # h bits per half, h <= 32
        self.mask = (1 << self.half) - 1
        generator = torch.Generator().manual_seed(seed)
        self.keys = torch.randint(1 << 31, (self.ROUNDS,), generator=generator).tolist()

    def __call__(self, positions: Tensor) -> Tensor:
        """Where positions (int64, each in [0, n)) go."""
        out = self._rounds(positions)
        outside = out >= self.n
        while bool(outside.any()):
            out[outside] = self._rounds(out[outside])
            outside = out >= self.n
        return out

    def _rounds(self, x: Tensor) -> Tensor:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right ^ key) & self.mask)
        return (left << self.half) | right


def _mix(x: Tensor) -> Tensor:
    """A 32-bit integer hash (xor-shift and multiply; every product stays below 2^63): the Feistel rounds'
    function, which spreads each input bit over all output bits."""
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x2C1B3C6D) & 0xFFFFFFFF
    return (x >> 16) ^ x


def window_batch(ids: Tensor, starts: Tensor, window: int) -> Batch:
    """Windows ids[s : s + window] (B, window) and their next tokens ids[s + window] (B,)."""
    inputs = ids[starts.unsqueeze(1) + torch.arange(window)].long()  # (B, window)
    targets = ids[starts + window].long()  # (B,)
    return {"inputs": inputs, "targets": targets, "ntokens": targets.numel()}


# ---------------------------------------------------------------------------------------------
# validation: every token predicted once, in order


def stream_eval_batches(ids: Tensor, batch_size: int, bptt: int) -> Iterator[Batch]:
    """Held-out text as up to `batch_size` rows read `bptt` at a time (carry the state across);
    fewer rows for short texts, so that each row is at least `bptt` long. Drops < rows tokens."""
    n = ids.numel() - 1
    if n < 1:
        return
    rows = max(1, min(batch_size, n // bptt))
    length = n // rows
    inputs = ids[:rows * length].view(rows, length)
    targets = ids[1:rows * length + 1].view(rows, length)
    for a in range(0, length, bptt):
        x, y = inputs[:, a:a + bptt].contiguous().long(), targets[:, a:a + bptt].contiguous().long()
        yield {"inputs": x, "targets": y, "ntokens": y.numel()}


def window_eval_batches(ids: Tensor, batch_size: int, window: int) -> Iterator[Batch]:
    """Every (window → next token) example of the held-out text, in order."""
    n = ids.numel() - window
    for a in range(0, max(n, 0), batch_size):
        yield window_batch(ids, torch.arange(a, min(a + batch_size, n)), window)
