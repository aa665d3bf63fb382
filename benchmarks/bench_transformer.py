"""train-transformer benchmarks (issue 5/7).

1. nanoGPT's char-level Tiny Shakespeare CPU configuration (4 layers, 4 heads, 128 wide, block 64,
   batch 12, dropout 0, AdamW lr 1e-3 → 1e-4 cosine, warmup 100, β2 0.99, weight decay 0.1, no
   biases) trained by `seqtool train-transformer --arch decoder` and by nanoGPT's own train.py,
   each as a subprocess: ms/iteration (median and quartiles over every iteration), tokens/s and the
   final validation loss. Pass a nanoGPT checkout whose data/shakespeare_char/prepare.py has been run
   with --nanogpt DIR; without it the figures quoted in the issue are the reference.
2. Generation with the KV cache, batch 1, greedy, a GPT-2-shaped random model (6 layers, 384 wide,
   6 heads, vocabulary 50,257): tokens/s for 256 and 1,024 new tokens, and Hugging Face transformers'
   `generate` (cache on) on the same weights when transformers is installed.

    python benchmarks/bench_transformer.py --nanogpt ~/src/nanoGPT
    python benchmarks/bench_transformer.py --skip-train
    python benchmarks/bench_transformer.py --nanogpt ~/src/nanoGPT --skip-train --skip-generate \
        --model-step-iters 400
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT = "/work/shared/data/tinyshakespeare/input.txt"
NANOGPT_QUOTED = {"ms_per_iter": 47.0, "tokens_per_s": 16300.0, "val_loss": 1.886}
TOKENS_PER_ITER = 12 * 64


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


# ---------------------------------------------------------------------------------------------
# 1. training: seqtool vs nanoGPT


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else dict(os.environ)


def seqtool_cmd(text: str, iters: int, ws: Path) -> list[str]:
    """train-transformer on nanoGPT's shakespeare_char recipe, scaled down (the shape both sides run)."""
    return [sys.executable, "-m", "seqtool", "--log-format", "json", "train-transformer", text, "-w", str(ws),
           "--resume", "never", "--device", "cpu", "--seed", "1337", "--arch", "decoder",
           "--layers", "4", "--heads", "4", "--d-model", "128", "--d-ff", "512", "--dropout", "0",
           "--positions", "learned", "--norm-first", "--activation", "gelu", "--tie", "--block-size", "64",
           "--batch-size", "12", "--max-steps", str(iters), "--optimizer", "adamw", "--lr", "1e-3",
           "--schedule", "cosine", "--warmup", "100", "--clip", "1.0", "--valid-fraction", "0.1",
           "--eval-every", str(iters), "--set", "optim.min_lr=0.0001", "--set", "optim.beta2=0.99",
           "--set", "optim.weight_decay=0.1", "--set", "model.bias=false", "--set", "run.log_every=1",
           "--set", f"run.checkpoint_every={iters}"]


def run_seqtool(text: str, iters: int, workdir: Path, threads: int = 0) -> dict:
    ws = workdir / "ws"
    cmd = seqtool_cmd(text, iters, ws)
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(threads))
    wall = time.time() - start
    events = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    ms = [TOKENS_PER_ITER / e["tokens_per_s"] * 1000
          for e in events if e["event"] == "train" and e["step"] > 1]
    valid = [e["loss"] for e in events if e["event"] == "valid"]
    return {"ms": ms, "val_loss": valid[-1] if valid else None, "wall": wall}


def run_nanogpt(nanogpt: Path, iters: int, workdir: Path, eval_iters: int, threads: int = 0) -> dict:
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
           f"--eval_iters={eval_iters}", "--log_interval=1", "--block_size=64", "--batch_size=12",
           "--n_layer=4", "--n_head=4", "--n_embd=128", f"--max_iters={iters}", f"--lr_decay_iters={iters}",
           "--dropout=0.0", f"--out_dir={workdir / 'nanogpt-out'}"]
    if eval_iters <= 1:
        cmd.append(f"--eval_interval={iters * 10}")  # only the (cheap) evaluation at iteration 0
    start = time.time()
    out = subprocess.run(cmd, cwd=nanogpt, check=True, capture_output=True, text=True,
                         env=_env(threads)).stdout
    wall = time.time() - start
    iters = re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", out, re.M)
    ms = [float(m) for it, m in iters if int(it) > 0]
    valid = re.findall(r"^step \d+: train loss [\d.]+, val loss ([\d.]+)", out, re.M)
    return {"ms": ms, "val_loss": float(valid[-1]) if valid else None, "wall": wall}


def bench_train(args: argparse.Namespace) -> None:
    nanogpt = Path(args.nanogpt).expanduser() if args.nanogpt else None
    speed: dict[str, list[float]] = {"seqtool": [], "nanoGPT": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(args.rounds):  # short speed runs, interleaved
            speed["seqtool"] += run_seqtool(args.text, args.speed_iters, work, args.threads)["ms"]
            if nanogpt:
                speed["nanoGPT"] += run_nanogpt(nanogpt, args.speed_iters, work, 1, args.threads)["ms"]
            print(f"speed round {r + 1}/{args.rounds} done", file=sys.stderr)
        if args.together and nanogpt:
            # Both full runs at once: on a machine shared with other jobs they meet the same load.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                ours = pool.submit(run_seqtool, args.text, args.iters, work, args.threads)
                theirs = pool.submit(run_nanogpt, nanogpt, args.iters, work, 200, args.threads)
                full = {"seqtool": ours.result(), "nanoGPT": theirs.result()}
        else:
            full = {"seqtool": run_seqtool(args.text, args.iters, work, args.threads)}
            if nanogpt:
                full["nanoGPT"] = run_nanogpt(nanogpt, args.iters, work, 200, args.threads)
    print(f"\n## training: Tiny Shakespeare char-level, 4 layers × 4 heads × 128, block 64, batch 12, "
          f"{args.iters} iterations (speed: {args.rounds} interleaved rounds of {args.speed_iters} "
          f"iterations + the full run{'s, run together' if args.together else ''}; "
          f"threads: {args.threads or 'default'})\n")
    print("| trainer | ms/iter median (q1–q3) | tokens/s | final val loss | full run wall s |")
    print("|---|---:|---:|---:|---:|")
    rows = {}
    for name in ("seqtool", "nanoGPT"):
        if name not in full:
            continue
        ms = speed[name] + full[name]["ms"]
        q1, med, q3 = quartiles(ms)
        rows[name] = (med, full[name]["val_loss"])
        print(f"| {name} | {med:.1f} ({q1:.1f}–{q3:.1f}) | {TOKENS_PER_ITER / med * 1000:,.0f} | "
              f"{full[name]['val_loss']:.3f} | {full[name]['wall']:.0f} |")
    ref_name = "nanoGPT (same run)" if "nanoGPT" in rows else "nanoGPT (quoted in the issue)"
    ref_ms, ref_loss = rows.get("nanoGPT", (NANOGPT_QUOTED["ms_per_iter"], NANOGPT_QUOTED["val_loss"]))
    ours_ms, ours_loss = rows["seqtool"]
    print(f"\nratio vs {ref_name}: tokens/s ×{ref_ms / ours_ms:.2f} (target ≥ 1.0); "
          f"val loss {ours_loss - ref_loss:+.3f} (target within ±0.05)")


def bench_model_step(args: argparse.Namespace) -> None:
    """The model alone, without either trainer: nanoGPT's GPT class and seqtool's Transformer in one
    process, same shape and batch, one training iteration of each in turn (forward, backward, clip +
    AdamW), so both meet the same machine state. Median ms of each phase."""
    import torch

    sys.path.insert(0, str(Path(args.nanogpt).expanduser()))
    from model import GPT, GPTConfig  # nanoGPT's model.py

    from seqtool.models.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    x = torch.randint(0, 65, (12, 65))
    inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    theirs = GPT(GPTConfig(block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128, dropout=0.0,
                           bias=False))
    ours = Transformer(TransformerConfig(arch="decoder", vocab_size=65, n_layers=4, n_heads=4, d_model=128,
                                         d_ff=512, dropout=0.0, positions="learned", max_len=64,
                                         activation="gelu", bias=False, norm_first=True))
    runs = {"nanoGPT": (theirs, lambda: theirs(inputs, targets)[1]),
            "seqtool": (ours, lambda: ours({"inputs": inputs, "targets": targets})[1])}
    if args.compile:  # both compiled too (train-transformer --compile; nanoGPT's compile=True), same weights
        theirs2, ours2 = copy.deepcopy(theirs), copy.deepcopy(ours)
        theirs_c, ours_c = torch.compile(theirs2), torch.compile(ours2)
        runs["nanoGPT compiled"] = (theirs2, lambda: theirs_c(inputs, targets)[1])
        runs["seqtool compiled"] = (ours2, lambda: ours_c({"inputs": inputs, "targets": targets})[1])
    optims = {k: torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
              for k, (m, _) in runs.items()}
    times: dict[str, dict[str, list[float]]] = {
        k: {"forward": [], "backward": [], "optimizer": []} for k in runs}
    for i in range(args.model_step_iters + 20):
        for name, (model, loss_of) in runs.items():
            t0 = time.perf_counter()
            loss = loss_of()
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optims[name].step()
            optims[name].zero_grad(set_to_none=True)
            t3 = time.perf_counter()
            if i >= 20:  # warm-up
                for phase, dt in zip(("forward", "backward", "optimizer"), (t1 - t0, t2 - t1, t3 - t2),
                                     strict=True):
                    times[name][phase].append(1000 * dt)
    print(f"\n## the model alone, {args.model_step_iters} alternating iterations "
          f"({torch.get_num_threads()} threads)\n")
    print("| model | forward ms | backward ms | clip + AdamW ms | total ms |")
    print("|---|---:|---:|---:|---:|")
    totals = {}
    for name, phases in times.items():
        med = {p: statistics.median(v) for p, v in phases.items()}
        totals[name] = sum(med.values())
        print(f"| {name} | {med['forward']:.2f} | {med['backward']:.2f} | {med['optimizer']:.2f} | "
              f"{totals[name]:.2f} |")
    print(f"\nratio of step times nanoGPT / seqtool: ×{totals['nanoGPT'] / totals['seqtool']:.3f}")
    if args.compile:
        print(f"compiled: nanoGPT / seqtool ×{totals['nanoGPT compiled'] / totals['seqtool compiled']:.3f}; "
              f"speed-up from compiling: seqtool ×{totals['seqtool'] / totals['seqtool compiled']:.2f}, "
              f"nanoGPT ×{totals['nanoGPT'] / totals['nanoGPT compiled']:.2f}")


# ---------------------------------------------------------------------------------------------
# 2. generation with the KV cache


def bench_generate(args: argparse.Namespace) -> None:
    import torch

    from seqtool.decoding import DecodeConfig, sample
    from seqtool.models.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    shape = dict(n_layers=6, n_heads=6, d_model=384, d_ff=1536, vocab_size=50257, max_len=1024)
    ours = Transformer(TransformerConfig(arch="decoder", positions="learned", norm_first=True, tie=True,
                                         activation="gelu-tanh", bias=True, dropout=0.0, **shape)).eval()
    hf = _hf_twin(ours, shape)
    prompt = torch.tensor([[464]])

    def run_ours(n: int) -> list[int]:
        return sample(ours, ours.start(), prompt, DecodeConfig(max_tokens=n, greedy=True))[0].ids

    def run_hf(n: int) -> list[int]:
        with torch.no_grad():
            out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                              pad_token_id=0, eos_token_id=None)
        return out[0, 1:].tolist()

    if hf is not None:
        same = run_ours(48) == run_hf(48)
        print(f"\nsame greedy tokens as transformers on identical weights (48 tokens): {same}")
    # Flatness: the cost of each step by position, within one run (immune to load drifting between runs).
    state, token, per_step = ours.start(), prompt, []
    with torch.no_grad():
        for _ in range(1024):
            start = time.perf_counter()
            logits, state = ours.step(token, state)
            token = logits.argmax(-1, keepdim=True)
            per_step.append((time.perf_counter() - start) * 1000)
    buckets = [(a, statistics.median(per_step[a:a + 128])) for a in range(0, 1024, 128)]
    print("\nms per generated token by position (median of each 128): " +
          ", ".join(f"{a}: {ms:.1f}" for a, ms in buckets) +
          f"; last/first bucket ×{buckets[-1][1] / buckets[0][1]:.2f}")
    print(f"\n## generation: GPT-2 shape {ours.num_params() / 1e6:.1f}M parameters, batch 1, greedy, "
          f"median of {args.gen_rounds} interleaved runs\n")
    print("| new tokens | seqtool tokens/s (min–max) | transformers tokens/s (min–max) | ratio |")
    print("|---:|---:|---:|---:|")
    for n in (256, 1024):
        times: dict[str, list[float]] = {"ours": [], "hf": []}
        for _ in range(args.gen_rounds):
            for name, fn in (("ours", run_ours), ("hf", run_hf)):
                if name == "hf" and hf is None:
                    continue
                start = time.perf_counter()
                fn(n)
                times[name].append(n / (time.perf_counter() - start))
        ours_tps = statistics.median(times["ours"])
        cell = "not installed"
        ratio = "–"
        if times["hf"]:
            hf_tps = statistics.median(times["hf"])
            cell = f"{hf_tps:.1f} ({min(times['hf']):.1f}–{max(times['hf']):.1f})"
            ratio = f"{ours_tps / hf_tps:.2f}"
        spread = f"{min(times['ours']):.1f}–{max(times['ours']):.1f}"
        print(f"| {n} | {ours_tps:.1f} ({spread}) | {cell} | {ratio} |")


def _hf_twin(ours, shape: dict):
    """transformers' GPT2LMHeadModel holding the same weights as `ours`, or None without transformers."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        print("transformers is not installed: skipping the comparison (pip install transformers)")
        return None
    import torch

    config = GPT2Config(n_layer=shape["n_layers"], n_head=shape["n_heads"], n_embd=shape["d_model"],
                        vocab_size=shape["vocab_size"], n_positions=shape["max_len"], resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2LMHeadModel(config).eval()
    state = ours.state_dict()
    mine = {"wte.weight": "decoder.embed.weight", "wpe.weight": "decoder.pos.weight",
            "ln_f.weight": "decoder.norm.weight", "ln_f.bias": "decoder.norm.bias"}
    per_layer = {"ln_1": "self_attn_norm", "attn.c_attn": "self_attn.qkv", "attn.c_proj": "self_attn.out",
                 "ln_2": "ff_norm", "mlp.c_fc": "ff.up", "mlp.c_proj": "ff.down"}
    with torch.no_grad():
        for name, p in hf.transformer.named_parameters():
            if name in mine:
                p.copy_(state[mine[name]])
                continue
            layer, rest = name.split(".", 2)[1], name.split(".", 2)[2]
            module, kind = rest.rsplit(".", 1)
            value = state[f"decoder.layers.{layer}.{per_layer[module]}.{kind}"]
            p.copy_(value.t() if kind == "weight" and value.dim() == 2 else value)  # Conv1D is (in, out)
    hf.tie_weights()
    return hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", help="a nanoGPT checkout with data/shakespeare_char prepared")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--speed-iters", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gen-rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the training runs")
    parser.add_argument("--together", action="store_true",
                        help="run the two full training runs at the same time (a shared, loaded machine)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="--model-step-iters: also time both models under torch.compile")
    parser.add_argument("--model-step-iters", type=int, default=0,
                        help="also time the models alone (needs --nanogpt): this many alternating iterations")
    args = parser.parse_args()
    import torch

    print(f"machine: {os.uname().machine}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f} at start")
    if not args.skip_generate:
        bench_generate(args)
    if not args.skip_train:
        if not Path(args.text).exists():
            sys.exit(f"{args.text} not found: pass --text PATH to Tiny Shakespeare")
        bench_train(args)
    if args.model_step_iters and args.nanogpt:
        bench_model_step(args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
