"""Token store for translation pairs: time to the first training step and peak RSS of train-seq2seq on
parallel files (both sides from the store: a fresh run that builds it, a fresh run reusing it, a resume)
against the in-memory path in the same run (the source piped on stdin: every pair read into Python lists
and both sides tokenized again, as every run and resume did before).

    python benchmarks/bench_store_pairs.py --repeat 10 --work /tmp/bench_store_pairs
The corpus is /work/shared/data/eng-fra's train.en/train.fr repeated --repeat times; corpora, tokenizers,
stores and workspaces go under --work (never into the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path("/work/shared/data/eng-fra")
MODEL = ["--hidden", "32", "--embedding", "32", "--n-layers", "1", "--batch-tokens", "2048",
         "--device", "cpu", "--seed", "1", "--set", "run.log_every=1", "--set", "run.eval_batches=2",
         "--set", "valid.bleu=false", "--eval-every", "1000", "--set", "run.checkpoint_every=2"]


def repeated(src: Path, out: Path, times: int) -> Path:
    if not out.is_file():
        text = src.read_bytes()
        with open(out, "wb") as fh:
            for _ in range(times):
                fh.write(text)
    return out


def first_step(cmd: list[str], stdin: Path | None = None) -> tuple[float, int]:
    """(seconds from launch to the first train event, peak RSS in MB of the largest process)."""
    launch = time.time()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as fh:
        proc = subprocess.run(["/usr/bin/time", "-f", "peak_kb %M", *cmd], stdin=fh, capture_output=True,
                              text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    train = next(e for e in events if e.get("event") == "train")
    return train["time"] - launch, int(proc.stderr.rsplit("peak_kb", 1)[1].split()[0]) // 1024


READY = """
import sys, time
from seqtool.config import RunConfig
from seqtool.training.seq2seq import (ParallelDataConfig, ParallelTokenizerConfig, Seq2SeqTrainConfig,
                                      ValidConfig, prepare_parallel)
from seqtool.workspace import Workspace
mode, src, tgt, tok, ws, store = sys.argv[1:]
if mode == "in-memory":
    sys.stdin = open(src, encoding="utf-8")
data = ParallelDataConfig(src="-" if mode == "in-memory" else src, tgt=tgt, store=store)
cfg = Seq2SeqTrainConfig(data=data,
                         tokenizer=ParallelTokenizerConfig(path=tok), valid=ValidConfig(bleu=False),
                         run=RunConfig(max_steps=1))
space = Workspace.create(ws, "seq2seq", {})
t = time.perf_counter()
data, batches = prepare_parallel(cfg, space, False, lambda message: None)
next(batches.batches(0, 0))
print(time.perf_counter() - t)
"""


def data_ready(mode: str, src: Path, tgt: Path, tok: Path, store: Path, ws: Path) -> float:
    """Seconds until the pairs are read, filtered and batched and the first batch is made, in a fresh
    process, imports excluded: `mode` in-memory (the source from stdin) or store (mapping a built store)."""
    shutil.rmtree(ws, ignore_errors=True)
    args = [mode, str(src), str(tgt), str(tok), str(ws), str(store)]
    out = subprocess.run([sys.executable, "-c", READY, *args], capture_output=True, text=True,
                         check=True).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="copies of eng-fra's training pairs")
    parser.add_argument("--runs", type=int, default=3, help="measurements of each row (median, min-max)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_store_pairs"))
    parser.add_argument("--only-data-ready", action="store_true",
                        help="time data readiness alone (in one process, imports excluded), not whole runs")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    src = repeated(DATA / "train.en", work / f"train{args.repeat}.en", args.repeat)
    tgt = repeated(DATA / "train.fr", work / f"train{args.repeat}.fr", args.repeat)
    seqtool = [sys.executable, "-m", "seqtool", "--log-format", "json"]
    tok = work / "tok"
    for side, path in (("src", DATA / "train.en"), ("tgt", DATA / "train.fr")):
        if not (tok / side).is_dir():
            subprocess.run([*seqtool, "build-vocab", str(path), "-o", str(tok / side), "--kind", "bpe",
                            "--vocab-size", "8000"], check=True, capture_output=True)
    train = [*seqtool, "train-seq2seq", "-t", str(tok), *MODEL]
    with open(src, "rb") as fh:
        pairs = sum(1 for _ in fh)
    print(f"corpus: {pairs:,} pairs, {(src.stat().st_size + tgt.stat().st_size) / 1e6:.1f} MB "
          f"(eng-fra train ×{args.repeat}); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.only_data_ready:
        store = work / "store-ready"
        subprocess.run([*seqtool, "tokenize", "--src", str(src), "--tgt", str(tgt), "-t", str(tok),
                        "--format", "store", "-o", str(store)], check=True, capture_output=True)
        for mode in ("in-memory", "store"):
            seconds = [data_ready(mode, src, tgt, tok, store, work / "ws-ready") for _ in range(args.runs)]
            print(f"data ready, {mode}: {statistics.median(seconds):.2f} s "
                  f"({min(seconds):.2f}–{max(seconds):.2f})")
        print(f"load average now {os.getloadavg()[0]:.1f}")
        return
    rows: dict[str, list[tuple[float, int]]] = {}
    for run in range(args.runs):
        ws, store = work / f"ws{run}", work / f"store{run}"
        for path in (ws, work / "mem", work / "reuse", store):
            shutil.rmtree(path, ignore_errors=True)
        data = ["--src", str(src), "--tgt", str(tgt), "--data-store", str(store)]
        rows.setdefault("in-memory (stdin), fresh", []).append(first_step(
            [*train, "-w", str(work / "mem"), "--src", "-", "--tgt", str(tgt), "--max-steps", "2"], src))
        rows.setdefault("in-memory (stdin), resume", []).append(first_step(
            [*train, "-w", str(work / "mem"), "--src", "-", "--tgt", str(tgt), "--max-steps", "4"], src))
        rows.setdefault("store, fresh (builds it)", []).append(first_step(
            [*train, "-w", str(ws), *data, "--max-steps", "2"]))
        rows.setdefault("store, fresh (reuses it)", []).append(first_step(
            [*train, "-w", str(work / "reuse"), *data, "--max-steps", "2"]))
        rows.setdefault("store, resume", []).append(first_step(
            [*train, "-w", str(ws), *data, "--max-steps", "4"]))
    print(f"\n| run | first step after launch, s (median, min–max of {args.runs}) | peak RSS, MB |")
    print("|---|---|---|")
    for name, values in rows.items():
        seconds = [v[0] for v in values]
        print(f"| {name} | {statistics.median(seconds):.1f} ({min(seconds):.1f}–{max(seconds):.1f}) | "
              f"{max(v[1] for v in values)} |")
    memory = statistics.median(v[0] for v in rows["in-memory (stdin), resume"])
    stored = statistics.median(v[0] for v in rows["store, resume"])
    print(f"\nresume: store / in-memory = {stored / memory:.2f}; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
