"""Whole-trainer `--compile` on CPU (issue 7/7): `seqtool train-transformer --compile` against nanoGPT's
train.py with compile=True, each as a subprocess, alternating, one thread each (OMP_NUM_THREADS=1).

Both train nanoGPT's char-level Tiny Shakespeare model scaled down for a CPU (4 layers, 4 heads, 128 wide,
block 64, batch 12, dropout 0, no biases, AdamW lr 1e-3 → 1e-4 cosine over the run, warmup 100, β2 0.99,
weight decay 0.1, clip 1.0) for the same number of updates, evaluating only at the end (nanoGPT also
evaluates before its first update; it cannot be switched off). Every output line is time-stamped as it
arrives, so both sides are timed the same way:

- first update: launch → the first update's log line (imports, data, model, compilation; nanoGPT's
  includes its evaluation at iteration 0, whose cost is about its final evaluation's, shown beside);
- updates 2..N: the first update's line → the last update's line (no evaluation inside on either side);
- ms/iter: each update's own time as the trainer reports it (median and quartiles over updates 2..N);
- end: the last update's line → process exit (final evaluation, checkpoint, for seqtool also plots and a
  sample); final validation loss (seqtool: the whole held-out 10%; nanoGPT: eval_iters random batches).

Each run gets a fresh TORCHINDUCTOR_CACHE_DIR, so every compilation is cold. nanoGPT needs its
data/shakespeare_char/prepare.py run on the same input.txt first.

With --together the two run at the same time in each round, so that a machine whose load drifts by more
than the difference being measured (a shared one) weighs on both alike.

    python benchmarks/bench_trainer_compile.py --nanogpt ~/src/nanoGPT --iters 1000 --rounds 3
    python benchmarks/bench_trainer_compile.py --nanogpt ~/src/nanoGPT --iters 1000 --rounds 2 --together
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_transformer  # noqa: E402 - the same seqtool command as the model-level comparison

TEXT = "/work/shared/data/tinyshakespeare/input.txt"
TOKENS_PER_ITER = 12 * 64


def seqtool_cmd(text: str, iters: int, ws: Path, compile_: bool) -> list[str]:
    return bench_transformer.seqtool_cmd(text, iters, ws) + ["--compile" if compile_ else "--no-compile"]


def nanogpt_cmd(iters: int, out_dir: Path, compile_: bool, eval_iters: int) -> list[str]:
    # nanoGPT runs iterations 0..max_iters and evaluates before iteration max_iters: max_iters = N gives
    # the validation loss after N updates, and N + 1 updates in all (the last one after the evaluation).
    return [sys.executable, "-u", "train.py", "config/train_shakespeare_char.py", "--device=cpu",
            f"--compile={compile_}", f"--eval_iters={eval_iters}", "--log_interval=1", "--block_size=64",
            "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", f"--max_iters={iters}",
            f"--lr_decay_iters={iters}", f"--eval_interval={iters}", "--dropout=0.0", f"--out_dir={out_dir}"]


def stamped(cmd: list[str], cwd: Path | None,
            env: dict[str, str]) -> tuple[float, list[tuple[float, str]], float]:
    """(launch time, [(arrival time, line)] of stdout and stderr together, exit time)."""
    launch = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None
    lines = [(time.time(), line.rstrip("\n")) for line in proc.stdout]
    code = proc.wait()
    end = time.time()
    if code != 0:
        tail = "\n".join(line for _, line in lines[-20:])
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{tail}")
    return launch, lines, end


def run_one(name: str, args: argparse.Namespace, work: Path, compile_: bool) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="inductor-", dir=work))  # a cold compilation every run
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    if name == "seqtool":
        ws = Path(tempfile.mkdtemp(prefix="ws-", dir=work))
        launch, lines, end = stamped(seqtool_cmd(args.text, args.iters, ws, compile_), None, env)
        updates, ms, val = [], [], None
        for t, line in lines:
            if not line.startswith("{"):
                continue
            e = json.loads(line)
            if e.get("event") == "train":
                updates.append(t)
                ms.append(TOKENS_PER_ITER / e["tokens_per_s"] * 1000)
            elif e.get("event") == "valid":
                val = e["loss"]
        final_eval = None
    else:
        nanogpt = Path(args.nanogpt).expanduser()
        out = Path(tempfile.mkdtemp(prefix="nanogpt-", dir=work))
        launch, lines, end = stamped(nanogpt_cmd(args.iters, out, compile_, args.eval_iters), nanogpt, env)
        updates, ms, val, evals = [], [], None, []
        for t, line in lines:
            if m := re.match(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", line):
                if int(m[1]) < args.iters:  # its extra update after the final evaluation is left out
                    updates.append(t)
                    ms.append(float(m[2]))
            elif m := re.match(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", line):
                evals.append(t)
                val = float(m[2])
        # the final evaluation: from the N-th update's line to the evaluation's line
        final_eval = evals[-1] - updates[-1]
    if len(updates) != args.iters:
        raise SystemExit(f"{name}: {len(updates)} update lines, expected {args.iters}")
    return {"first": updates[0] - launch, "steady": updates[-1] - updates[0], "ms": ms[1:],
            "end": end - updates[-1], "wall": end - launch, "val": val, "final_eval": final_eval}


def fmt(xs: list[float], spec: str = "{:.1f}") -> str:
    if len(xs) == 1:
        return spec.format(xs[0])
    return f"{spec.format(statistics.median(xs))} ({spec.format(min(xs))}–{spec.format(max(xs))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", required=True,
                        help="a nanoGPT checkout with data/shakespeare_char prepared")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each trainer")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run")
    parser.add_argument("--eval-iters", type=int, default=200,
                        help="nanoGPT's eval_iters (batches per split)")
    parser.add_argument("--eager", action="store_true", help="also run both without compiling, alternating")
    parser.add_argument("--together", action="store_true",
                        help="run the two trainers at the same time in each round (a loaded machine)")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch directory (default: a temporary one)")
    args = parser.parse_args()
    if not (Path(args.nanogpt).expanduser() / "data/shakespeare_char/train.bin").is_file():
        sys.exit(f"{args.nanogpt}/data/shakespeare_char/train.bin missing: run its prepare.py first")
    import torch

    modes = [True, False] if args.eager else [True]
    results: dict[tuple[str, bool], list[dict]] = {}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            # alternate, and swap who goes first every round, so that load drifts fall on both alike
            order = ["seqtool", "nanoGPT"] if r % 2 == 0 else ["nanoGPT", "seqtool"]
            for compile_ in modes:
                if args.together:  # both at once: each meets the other and the same outside load
                    with ThreadPoolExecutor(2) as pool:
                        futures = {name: pool.submit(run_one, name, args, work, compile_) for name in order}
                        done = [(name, f.result()) for name, f in futures.items()]
                else:
                    done = [(name, run_one(name, args, work, compile_)) for name in order]
                for name, res in done:
                    results.setdefault((name, compile_), []).append(res)
                    loads.append(os.getloadavg()[0])
                    print(f"round {r + 1}/{args.rounds} {name} {'compiled' if compile_ else 'eager'}: "
                          f"first update {res['first']:.1f} s, updates 2..N {res['steady']:.1f} s, "
                          f"median {statistics.median(res['ms']):.1f} ms/iter, val loss {res['val']:.3f}, "
                          f"load {loads[-1]:.1f}", file=sys.stderr, flush=True)
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, OMP_NUM_THREADS={args.threads}; "
          f"load average (1 min) during the runs {min(loads):.1f}–{max(loads):.1f}")
    print(f"\n## {args.iters} updates, 4 layers × 4 heads × 128, block 64, batch 12; {args.rounds} "
          f"{'rounds run together' if args.together else 'alternating rounds'}: median (min–max) over "
          "runs; ms/iter: median of the runs' medians (the quartiles pooled)\n")
    print("| trainer | first update s (compile) | updates 2..N s | ms/iter median (q1–q3) | end s "
          "(final eval etc.) | wall s | final val loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    steady = {}
    for (name, compile_), runs in results.items():
        pooled = [m for run in runs for m in run["ms"]]
        q1, _, q3 = statistics.quantiles(pooled, n=4)
        med = statistics.median(statistics.median(run["ms"]) for run in runs)
        steady[(name, compile_)] = (med, statistics.median(run["steady"] for run in runs),
                                    statistics.median(run["wall"] for run in runs))
        note = ""
        if name == "nanoGPT":
            note = (f" (its final eval {fmt([run['final_eval'] for run in runs])} s; "
                    "one also ran before update 1)")
        label = ("--compile" if name == "seqtool" else "compile=True") if compile_ else "eager"
        print(f"| {name} {label} | {fmt([run['first'] for run in runs])} | "
              f"{fmt([run['steady'] for run in runs])} | "
              f"{med:.1f} ({q1:.1f}–{q3:.1f}) | {fmt([run['end'] for run in runs])}{note} | "
              f"{fmt([run['wall'] for run in runs])} | {fmt([run['val'] for run in runs], '{:.3f}')} |")
    for compile_ in modes:
        ours, theirs = steady[("seqtool", compile_)], steady[("nanoGPT", compile_)]
        print(f"\n{'compiled' if compile_ else 'eager'}: nanoGPT / seqtool ms/iter "
              f"×{theirs[0] / ours[0]:.3f}, "
              f"updates 2..N ×{theirs[1] / ours[1]:.3f}, whole wall ×{theirs[2] / ours[2]:.3f} "
              "(> 1: seqtool faster)")


if __name__ == "__main__":
    main()
