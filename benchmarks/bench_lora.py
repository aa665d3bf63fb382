"""LoRA vs full fine-tuning of the same GPT-2-shaped decoder (learned positions, pre-LN, GELU, tied
embeddings) on recipes_data/recipes.txt: step time, peak memory, trainable parameters, and
validation loss after equal wall-clock time.

The base is "pretrained" here first (full training on the first half of the recipes for --pretrain
seconds), then each mode fine-tunes it on the second half for --budget seconds, in its own process
so peak memory is its own. Reference: full fine-tuning (ratios are LoRA / full).

    python benchmarks/bench_lora.py                     # 6 layers, 384 wide, char tokens, 2+2×1 min
    python benchmarks/bench_lora.py --pretrain 600 --budget 180    # the figures in RESULTS.md
    python benchmarks/bench_lora.py --pretrain 30 --budget 20 --layers 2 --width 128   # quick
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from seqtool.data.batching import StreamBatches, stream_eval_batches
from seqtool.data.tokenizers import train_tokenizer
from seqtool.models import lora
from seqtool.models.transformer import Transformer, TransformerConfig

ROOT = Path(__file__).resolve().parents[1]


def data(args):
    lines = (ROOT / "recipes_data" / "recipes.txt").read_text(encoding="utf-8").splitlines()
    half = len(lines) // 2
    tok = train_tokenizer("char", lines)
    ids = lambda part: torch.tensor(list(tok.encode_stream(part)), dtype=torch.long)  # noqa: E731
    n_valid = len(lines) // 20
    return tok, ids(lines[:half]), ids(lines[half:-n_valid]), ids(lines[-n_valid:])


def build(args, vocab: int) -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(arch="decoder", vocab_size=vocab, n_layers=args.layers, n_heads=args.heads,
                            d_model=args.width, d_ff=4 * args.width, dropout=0.0, positions="learned",
                            max_len=args.context, activation="gelu-tanh")
    return Transformer(cfg)


def state_mb(params, opt) -> float:
    """MB held for training beyond the weights: the gradients and the optimizer's state tensors."""
    tensors = [p.grad for p in params if p.grad is not None]
    tensors += [t for state in opt.state.values() for t in state.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def train_for(model, ids, args, seconds: float, lr: float, times: list[float] | None = None,
              held: list[float] | None = None) -> int:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    batches = StreamBatches(ids, args.batch_size, args.context)
    model.train()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for batch in batches.batches(0, 0):
            t0 = time.perf_counter()
            _, loss = model(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if held is not None and steps == 0:
                held.append(state_mb(params, opt))
            opt.zero_grad(set_to_none=True)
            if times is not None:
                times.append(time.perf_counter() - t0)
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
    return steps


@torch.no_grad()
def valid_loss(model, ids, args) -> float:
    model.eval()
    total, n = 0.0, 0
    for batch in stream_eval_batches(ids, args.batch_size, args.context):
        total += float(model(batch)[1]) * batch["ntokens"]
        n += batch["ntokens"]
    return total / n


def run_mode(mode: str, args, base_path: str, queue) -> None:
    torch.set_num_threads(args.threads)
    tok, _, train_ids, valid_ids = data(args)
    model = build(args, tok.vocab_size)
    model.load_state_dict(torch.load(base_path, weights_only=True))
    if mode == "lora":
        cfg = lora.LoraConfig(rank=args.rank, alpha=2 * args.rank, targets=args.targets.split(","))
        lora.add_lora(model, lora.resolve_targets("transformer", cfg.targets), cfg)
    trainable, total = lora.count_parameters(model)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times: list[float] = []
    held: list[float] = []
    lr = args.lr_lora if mode == "lora" else args.lr
    steps = train_for(model, train_ids, args, args.budget, lr, times, held)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"mode": mode, "trainable": trainable, "total": total, "steps": steps,
               "step_ms": [1000 * t for t in times[3:]], "peak_mb": peak / 1024,
               "train_mb": (peak - rss_before) / 1024, "state_mb": held[0],
               "valid_loss": valid_loss(model, valid_ids, args)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pretrain", type=float, default=120.0, help="seconds of base training")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of fine-tuning per mode")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="q,v")
    parser.add_argument("--lr", type=float, default=1e-4, help="full fine-tuning")
    parser.add_argument("--lr-lora", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tok, pre_ids, train_ids, valid_ids = data(args)
    base = build(args, tok.vocab_size)
    pre_steps = train_for(base, pre_ids, args, args.pretrain, 1e-3)
    base_loss = valid_loss(base, valid_ids, args)
    base_path = "/tmp/bench_lora_base.pt"
    torch.save(base.state_dict(), base_path)

    ctx = mp.get_context("spawn")
    results = {}
    for mode in ("full", "lora"):
        queue = ctx.Queue()
        proc = ctx.Process(target=run_mode, args=(mode, args, base_path, queue))
        proc.start()
        results[mode] = queue.get()
        proc.join()

    print(f"machine: {platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    print(f"model: {args.layers} layers × {args.width} wide, {args.heads} heads, context {args.context}, "
          f"char vocab {tok.vocab_size}, batch {args.batch_size}; base: {pre_steps} steps in "
          f"{args.pretrain:.0f}s, valid loss {base_loss:.3f}; fine-tuning budget {args.budget:.0f}s per mode")
    header = f"{'mode':<6} {'trainable':>12} {'%':>7} {'step ms median [p25–p75]':>26} {'steps':>6} " \
             f"{'peak MB':>8} {'+train MB':>9} {'grad+opt MB':>11} {'valid loss':>10}"
    print(header)
    for mode, r in results.items():
        med = statistics.median(r["step_ms"])
        q1, _, q3 = statistics.quantiles(r["step_ms"], n=4)
        print(f"{mode:<6} {r['trainable']:>12,} {100 * r['trainable'] / r['total']:>6.2f}% "
              f"{med:>10.1f} [{q1:>6.1f}–{q3:>6.1f}] {r['steps']:>6} {r['peak_mb']:>8.0f} "
              f"{r['train_mb']:>9.0f} {r['state_mb']:>11.1f} {r['valid_loss']:>10.3f}")
    full, lo = results["full"], results["lora"]
    step = statistics.median(lo["step_ms"]) / statistics.median(full["step_ms"])
    print(f"ratio lora/full: step time {step:.2f}, trainable {lo['trainable'] / full['trainable']:.4f}, "
          f"peak memory {lo['peak_mb'] / full['peak_mb']:.2f}, gradient+optimizer state "
          f"{lo['state_mb'] / full['state_mb']:.4f}, "
          f"valid loss {lo['valid_loss'] / full['valid_loss']:.3f}")


if __name__ == "__main__":
    main()
