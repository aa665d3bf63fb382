"""Batched beam search (beam 5, 64 sentences at a time) against translating one sentence at a time.

A seq2seq model with additive attention is first trained briefly on a synthetic reversal task (so
hypotheses end with </s> at different lengths, as in real translation); then the same 256 sources
are decoded both ways. Reports sentences/s (median and range of --runs), checks the outputs are
identical, and prints the speed-up (target ≥ 3×).
Run: python benchmarks/bench_beam.py [--runs 3] [--sentences 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from seqtool.data.parallel import make_batch
from seqtool.decoding import DecodeConfig, beam_search
from seqtool.models.seq2seq import Seq2Seq, Seq2SeqConfig

PAD, BOS, EOS, V = 0, 2, 3, 40


def pairs(n: int, rng: random.Random) -> list[tuple[list[int], list[int]]]:
    out = []
    for _ in range(n):
        s = [rng.randrange(5, V) for _ in range(rng.randint(3, 14))]
        out.append(([*s, EOS], s[::-1]))
    return out


def train(steps: int) -> Seq2Seq:
    torch.manual_seed(0)
    rng = random.Random(0)
    model = Seq2Seq(Seq2SeqConfig(embedding=64, hidden=128, attention="additive", dropout=0.0), V, V)
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    for _ in range(steps):
        batch = pairs(64, rng)
        _, loss = model(make_batch([p[0] for p in batch], [p[1] for p in batch], PAD, BOS, EOS))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def decode(model: Seq2Seq, sources: list[list[int]], batch_size: int, cfg: DecodeConfig) -> list[list[int]]:
    out = []
    for i in range(0, len(sources), batch_size):
        chunk = sources[i:i + batch_size]
        src = make_batch(chunk, [[]] * len(chunk), PAD, BOS, EOS)["src"]
        bos = torch.full((len(chunk), 1), BOS)
        limits = [int(1.5 * len(s)) + 10 for s in chunk]
        hyps = beam_search(model, model.start(src), bos, cfg, EOS, max_lengths=limits)
        out += [h[0].ids for h in hyps]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = train(args.train_steps)
    sources = [p[0] for p in pairs(args.sentences, random.Random(1))]
    cfg = DecodeConfig(max_tokens=40, beam=5)
    rates: dict[str, list[float]] = {"one at a time": [], "batched (64)": []}
    outputs = {}
    with torch.no_grad():
        for _ in range(args.runs):
            for name, size in (("one at a time", 1), ("batched (64)", 64)):
                start = time.perf_counter()
                outputs[name] = decode(model, sources, size, cfg)
                rates[name].append(len(sources) / (time.perf_counter() - start))
    same = outputs["one at a time"] == outputs["batched (64)"]
    exact = sum(o == [*s[:-1][::-1], EOS] for o, s in zip(outputs["batched (64)"], sources, strict=True))
    print(f"beam 5, {len(sources)} sentences, {args.runs} runs, {args.threads} threads "
          f"(model exact match {exact}/{len(sources)})")
    print(f"{'mode':<16}{'median sent/s':>15}{'min':>9}{'max':>9}")
    for name, values in rates.items():
        print(f"{name:<16}{statistics.median(values):15.1f}{min(values):9.1f}{max(values):9.1f}")
    speedup = statistics.median(rates["batched (64)"]) / statistics.median(rates["one at a time"])
    print(f"speed-up batched / one at a time: {speedup:.2f}x (target ≥ 3x); identical outputs: {same}")


if __name__ == "__main__":
    main()
