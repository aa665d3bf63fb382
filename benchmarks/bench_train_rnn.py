"""Benchmark train-rnn's training throughput against a minimal hand-written PyTorch loop.

A char LSTM (2×256, embedding 128, dropout 0.2, tied off) with bptt 100 and batch 32 on Tiny
Shakespeare. Both sides train on the identical batches (seqtool's StreamBatches over the same token
stream) with Adam, gradient-norm clipping and the hidden state carried across batches, in alternating
rounds of --steps steps in one process. seqtool runs its real Trainer into a scratch workspace (train
events to metrics.jsonl every 10 steps, validation and checkpoints outside the measured window); its
throughput is read from those events. The first 10 steps of every round are warm-up on both sides.
Prints a markdown table and the ratio seqtool / hand-written.

    python benchmarks/bench_train_rnn.py [--corpus FILE] [--steps 60] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from seqtool.config import OptimConfig, RunConfig
from seqtool.data.batching import StreamBatches
from seqtool.data.io import iter_lines
from seqtool.data.tokenizers import train_tokenizer
from seqtool.models.rnn_lm import RNNLM, RNNLMConfig
from seqtool.training.lm import LMDataConfig, encode, lm_task
from seqtool.training.trainer import Trainer
from seqtool.workspace import Workspace

DEFAULT_CORPUS = Path("/work/shared/data/tinyshakespeare/input.txt")
B, T, WARMUP = 32, 100, 10
MODEL = RNNLMConfig(cell="lstm", n_layers=2, hidden=256, embedding=128, dropout=0.2, tie=False)


class HandWritten(nn.Module):
    """The same network, written out as anyone would."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, 128)
        self.lstm = nn.LSTM(128, 256, num_layers=2, dropout=0.2, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.out = nn.Linear(256, vocab)

    def forward(self, x, state):
        h, state = self.lstm(self.drop(self.embed(x)), state)
        return self.out(self.drop(h)), state


def hand_written_round(ids: torch.Tensor, vocab: int, steps: int) -> float:
    """Tokens per second of a plain loop over the same batches (after WARMUP steps)."""
    torch.manual_seed(0)
    model = HandWritten(vocab).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    state, start = None, 0.0
    for i, batch in enumerate(StreamBatches(ids, B, T).batches(0, 0)):
        if i == WARMUP:
            start = time.perf_counter()
        if i == steps:
            break
        logits, state = model(batch["inputs"], state)
        state = tuple(s.detach() for s in state)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        float(loss.detach())  # the toolkit reads the loss every step too (to log it and catch divergence)
    return (steps - WARMUP) * B * T / (time.perf_counter() - start)


def seqtool_round(ids: torch.Tensor, valid: torch.Tensor, vocab: int, steps: int, root: Path) -> float:
    """Tokens per second of seqtool's Trainer, from its own train events (steps WARMUP..steps)."""
    torch.manual_seed(0)
    ws = Workspace.create(Path(tempfile.mkdtemp(dir=root)), "rnn-lm", {})
    run = RunConfig(max_steps=steps, batch_size=B, eval_every=10**9, checkpoint_every=10**9, log_every=WARMUP)
    task = lm_task(RNNLM(MODEL, vocab), ids, valid, LMDataConfig(bptt=T), run, char_level=True)
    Trainer(ws, task, OptimConfig(lr=2e-3, clip=1.0), run, lambda e: None, torch.device("cpu")).fit()
    events = [json.loads(line) for line in (ws.path / "metrics.jsonl").read_text().splitlines()]
    train = {e["step"]: e["elapsed"] for e in events if e["event"] == "train"}
    return (steps - WARMUP) * B * T / (train[steps] - train[WARMUP])


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--steps", type=int, default=60, help="steps per round (the first 10 are warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps <= WARMUP or args.steps % WARMUP:
        parser.error(f"--steps must be a multiple of {WARMUP} above {WARMUP}")
    lines = list(iter_lines(args.corpus))
    tok = train_tokenizer("char", lines)
    ids = encode(tok, lines)
    valid = ids[-2000:]
    load = os.getloadavg()[0]
    ours, theirs = [], []
    with tempfile.TemporaryDirectory(prefix="bench-train-rnn-") as tmp:
        for r in range(args.rounds):  # alternate, so both sides see the same machine conditions
            theirs.append(hand_written_round(ids, tok.vocab_size, args.steps))
            ours.append(seqtool_round(ids, valid, tok.vocab_size, args.steps, Path(tmp)))
            print(f"round {r + 1}: hand-written {theirs[-1]:,.0f} tok/s, seqtool {ours[-1]:,.0f} tok/s",
                  flush=True)
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    print(f"\nmachine: {machine()}; load average {load:.1f} → {os.getloadavg()[0]:.1f}")
    print(f"char LSTM 2×256, emb 128, bptt {T}, batch {B}; {args.rounds} rounds × {args.steps - WARMUP} "
          "measured steps\n")
    print("| loop | tokens/s (median) | min – max |\n|---|---|---|")
    for name, values in (("hand-written PyTorch", theirs), ("seqtool Trainer", ours)):
        print(f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} – {max(values):,.0f} |")
    print(f"\nratio seqtool / hand-written: median {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
