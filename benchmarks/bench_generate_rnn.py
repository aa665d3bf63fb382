"""Benchmark RNN LM generation: seqtool's step interface against a naive per-token nn.LSTM sampler.

A char LSTM (2×256, embedding 128) over Tiny Shakespeare's characters. For 200 and 2,000 new tokens,
in alternating repeats in one process: seqtool's TextStream (what `seqtool generate` runs: sampling at
temperature 0.8 through start/step, text decoded as it goes) and the naive sampler anyone writes first
(embedding → nn.LSTM called on one token → linear → softmax → multinomial), with oneDNN on (PyTorch's
default) and off. The per-token cost must not grow with the length. Prints a markdown table and the
ratio seqtool / naive.

    python benchmarks/bench_generate_rnn.py [--corpus FILE] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

import torch

from seqtool.data.io import iter_lines
from seqtool.data.tokenizers import train_tokenizer
from seqtool.decoding import DecodeConfig, TextStream
from seqtool.models.rnn_lm import RNNLM, RNNLMConfig

DEFAULT_CORPUS = Path("/work/shared/data/tinyshakespeare/input.txt")
LENGTHS = (200, 2000)


@torch.inference_mode()
def naive(model: RNNLM, start: int, n: int, generator: torch.Generator) -> list[int]:
    """One nn.LSTM call per token, as in most tutorials."""
    x, state, out = torch.tensor([[start]]), None, []
    for _ in range(n):
        h, state = model.rnn(model.embed(x), state)
        probs = (model.out(h[:, -1]) / 0.8).softmax(-1)
        x = torch.multinomial(probs, 1, generator=generator)
        out.append(int(x))
    return out


def seqtool_sample(model: RNNLM, tok, n: int, generator: torch.Generator) -> list[int]:
    stream = TextStream(model, tok, "", DecodeConfig(max_tokens=n, temperature=0.8), generator)
    "".join(stream)
    return stream.sample.ids


def timed(fn, *args) -> float:
    """Tokens per second of fn(*args), whose third argument is the number of tokens to make."""
    n = args[2]
    start = time.perf_counter()
    produced = len(fn(*args))
    seconds = time.perf_counter() - start
    if produced != n:
        raise SystemExit(f"expected {n} tokens, got {produced}")
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = train_tokenizer("char", iter_lines(args.corpus))
    torch.manual_seed(0)
    cfg = RNNLMConfig(cell="lstm", n_layers=2, hidden=256, embedding=128, tie=False)
    model = RNNLM(cfg, tok.vocab_size).eval()
    with torch.no_grad():  # never sample the special tokens (</s> would end a sample early)
        model.out.bias[[tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id]] = -1e4
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    naive_on = "naive nn.LSTM per token (oneDNN on)"
    naive_off = "naive nn.LSTM per token (oneDNN off)"
    ours = "seqtool generate (TextStream)"
    load = os.getloadavg()[0]
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        for n in LENGTHS:
            g = torch.Generator().manual_seed(1)
            rates.setdefault((naive_on, n), []).append(timed(naive, model, tok.newline_id, n, g))
            with torch.backends.mkldnn.flags(enabled=False):
                rates.setdefault((naive_off, n), []).append(timed(naive, model, tok.newline_id, n, g))
            rates.setdefault((ours, n), []).append(timed(seqtool_sample, model, tok, n, g))
    print(f"load average {load:.1f} → {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.repeats} repeats, alternating\n")
    print("| sampler | new tokens | tokens/s (median) | min – max |\n|---|---|---|---|")
    for (name, n), values in rates.items():
        low, high = min(values), max(values)
        print(f"| {name} | {n:,} | {statistics.median(values):,.0f} | {low:,.0f} – {high:,.0f} |")
    median = {key: statistics.median(values) for key, values in rates.items()}
    print()
    for n in LENGTHS:
        print(f"{n:,} tokens: seqtool / naive = {median[ours, n] / median[naive_on, n]:.2f}× "
              f"(/ naive with oneDNN off: {median[ours, n] / median[naive_off, n]:.2f}×)")
    flat = median[ours, 2000] / median[ours, 200]
    print(f"per-token cost, 2,000 vs 200 tokens: tokens/s ratio {flat:.2f} (1.0 = flat)")


if __name__ == "__main__":
    main()
