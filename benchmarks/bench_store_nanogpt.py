"""nanoGPT's prepare + memmap against seqtool's token store on the same corpus (issue 3/7), char-level.

The corpus is bench_store.py's (real text repeated to --size MB). For each side, alternating, --repeats
times:
- prepare: nanoGPT's data/shakespeare_char/prepare.py on the corpus (it reads the whole text, builds the
  character vocabulary, encodes with a dict lookup per character and writes uint16 train.bin/val.bin and
  meta.pkl); seqtool's `build-vocab --kind char` (learning the vocabulary) and then
  `tokenize --format store` (all cores), and the store's encoder with one worker for a per-core figure.
  Wall time and peak RSS (/usr/bin/time), and the size of what each writes;
- first step: a training run that reuses the prepared data (the same small model on both sides, one
  thread, no compiling): launch → its first update's log line. nanoGPT evaluates before its first update
  (eval_iters=1 here, two batches); seqtool hashes the corpus to find its store entry.

    python benchmarks/bench_store_nanogpt.py --nanogpt ~/src/nanoGPT --size 100 --work /tmp/bench_nanogpt
The corpus and everything prepared go under --work (never into the repository); --keep leaves them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import make_corpus  # noqa: E402 - the same corpus as the token store benchmark

DATASET = "seqtool_bench_char"  # nanoGPT reads data/<dataset>/ under its checkout: a link to --work
MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64, "batch_size": 8}
ONE_WORKER = """
import sys
from seqtool.data import store_build
from seqtool.data.tokenizers import load_tokenizer
store_build.build_corpus(sys.argv[1], [sys.argv[2]], [], load_tokenizer(sys.argv[3]), "k", workers=1)
"""


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, int, str]:
    """(seconds, peak RSS MB of the largest process, output) of a command."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "peak_kb %M", *cmd], cwd=cwd, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return seconds, int(proc.stderr.rsplit("peak_kb", 1)[1].split()[0]) // 1024, proc.stdout + proc.stderr


def first_line(cmd: list[str], pattern: str, cwd: Path | None = None) -> float:
    """Seconds from launch to the first output line matching `pattern` (one thread); the run is then
    left to finish its few steps."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None
    seen, tail = None, []
    for line in proc.stdout:
        tail = [*tail[-20:], line]
        if seen is None and re.search(pattern, line):
            seen = time.time() - launch
    if proc.wait() != 0 or seen is None:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{''.join(tail)}")
    return seen


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def seqtool(*args: str) -> list[str]:
    return [sys.executable, "-m", "seqtool", "--log-format", "json", *args]


def nanogpt_prepare(nanogpt: Path, corpus: Path, data: Path) -> dict:
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    shutil.copy(nanogpt / "data/shakespeare_char/prepare.py", data / "prepare.py")
    (data / "input.txt").symlink_to(corpus)
    seconds, peak, _ = timed([sys.executable, "prepare.py"], cwd=data)
    out = sum(size_mb(data / f) for f in ("train.bin", "val.bin", "meta.pkl"))
    return {"seconds": seconds, "peak": peak, "size": out}


def nanogpt_first_step(nanogpt: Path, work: Path) -> float:
    m = MODEL
    return first_line([sys.executable, "-u", "train.py", f"--dataset={DATASET}", "--device=cpu",
                       "--compile=False", "--gradient_accumulation_steps=1", "--eval_iters=1",
                       "--log_interval=1", f"--block_size={m['block_size']}",
                       f"--batch_size={m['batch_size']}",
                       f"--n_layer={m['n_layer']}", f"--n_head={m['n_head']}", f"--n_embd={m['n_embd']}",
                       "--max_iters=2", "--eval_interval=1000", "--dropout=0.0",
                       "--always_save_checkpoint=False", f"--out_dir={work / 'nanogpt-out'}"],
                      r"^iter 0:", cwd=nanogpt)


def seqtool_prepare(corpus: Path, work: Path) -> dict:
    tok, store = work / "tok", work / "store"
    shutil.rmtree(tok, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    vocab_s, vocab_peak, _ = timed(seqtool("build-vocab", str(corpus), "--kind", "char", "-o", str(tok)))
    store_s, store_peak, _ = timed(seqtool("tokenize", str(corpus), "-t", str(tok), "--format", "store",
                                           "-o", str(store)))
    one = work / "store-1"
    shutil.rmtree(one, ignore_errors=True)
    one_s, one_peak, _ = timed([sys.executable, "-c", ONE_WORKER, str(one), str(corpus), str(tok)])
    shutil.rmtree(one, ignore_errors=True)
    return {"vocab": vocab_s, "vocab_peak": vocab_peak, "seconds": store_s, "peak": store_peak,
            "one": one_s, "one_peak": one_peak, "size": size_mb(store), "tok_size": size_mb(tok)}


def seqtool_first_step(corpus: Path, work: Path) -> float:
    m = MODEL
    ws = work / "ws"
    shutil.rmtree(ws, ignore_errors=True)
    return first_line(seqtool("train-transformer", str(corpus), "-t", str(work / "tok"), "--data-store",
                              str(work / "store"), "-w", str(ws), "--arch", "decoder",
                              "--n-layers", str(m["n_layer"]), "--n-heads", str(m["n_head"]),
                              "--d-model", str(m["n_embd"]), "--block-size", str(m["block_size"]),
                              "--batch-size", str(m["batch_size"]), "--device", "cpu", "--seed", "1",
                              "--max-steps", "2", "--valid-fraction", "0.1", "--set", "run.log_every=1",
                              "--set", "run.eval_batches=2", "--eval-every", "1000"),
                      r'"event": "train"')


def med(xs: list[float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", required=True, type=Path, help="a nanoGPT checkout")
    parser.add_argument("--size", type=int, default=100, help="corpus size in MB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_nanogpt"))
    parser.add_argument("--keep", action="store_true", help="keep the corpus and the prepared data")
    args = parser.parse_args()
    nanogpt, work = args.nanogpt.expanduser().resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(work / f"corpus-{args.size}MB.txt", args.size)
    data = work / "nanogpt-data"
    link = nanogpt / "data" / DATASET
    if link.is_symlink():
        link.unlink()
    link.symlink_to(data, target_is_directory=True)
    loads = [os.getloadavg()[0]]
    ours: list[dict] = []
    theirs: list[dict] = []
    try:
        for r in range(args.repeats):  # alternating, who goes first swapped every round
            for side in (("nanoGPT", "seqtool") if r % 2 == 0 else ("seqtool", "nanoGPT")):
                if side == "nanoGPT":
                    res = nanogpt_prepare(nanogpt, corpus, data)
                    res["first_step"] = nanogpt_first_step(nanogpt, work)
                    theirs.append(res)
                else:
                    res = seqtool_prepare(corpus, work)
                    res["first_step"] = seqtool_first_step(corpus, work)
                    ours.append(res)
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1} {side}: {json.dumps(res)} load {loads[-1]:.1f}", file=sys.stderr,
                      flush=True)
    finally:
        link.unlink()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    mb = corpus.stat().st_size / 1e6 if corpus.exists() else args.size
    print(f"machine: {os.cpu_count()} CPU cores; corpus {mb:,.0f} MB (bench_store.py's); char vocabulary; "
          f"load average (1 min) {min(loads):.1f}–{max(loads):.1f}; median (min–max) of {args.repeats} "
          "runs\n")
    print("| | prepare wall s | peak RSS MB | output MB | first step of a run reusing it, s |")
    print("|---|---:|---:|---:|---:|")
    print(f"| nanoGPT prepare.py (one process) | {med([t['seconds'] for t in theirs])} | "
          f"{max(t['peak'] for t in theirs)} | {theirs[0]['size']:.0f} | "
          f"{med([t['first_step'] for t in theirs], '{:.2f}')} |")
    both = [o["vocab"] + o["seconds"] for o in ours]
    print(f"| seqtool build-vocab --kind char + tokenize --format store | {med(both)} | "
          f"{max(max(o['vocab_peak'], o['peak']) for o in ours)} | {ours[0]['size']:.0f} | "
          f"{med([o['first_step'] for o in ours], '{:.2f}')} |")
    print(f"| (of which build-vocab) | {med([o['vocab'] for o in ours])} | "
          f"{max(o['vocab_peak'] for o in ours)} | "
          f"{ours[0]['tok_size']:.2f} | |")
    print(f"| (of which tokenize --format store, {os.cpu_count()} workers) | "
          f"{med([o['seconds'] for o in ours])} | "
          f"{max(o['peak'] for o in ours)} | {ours[0]['size']:.0f} | |")
    print(f"| seqtool store, 1 worker (build_corpus) | {med([o['one'] for o in ours])} | "
          f"{max(o['one_peak'] for o in ours)} | | |")
    ratio = statistics.median(t["seconds"] for t in theirs) / statistics.median(both)
    first = (statistics.median(t["first_step"] for t in theirs)
             / statistics.median(o["first_step"] for o in ours))
    print(f"\nnanoGPT / seqtool: prepare wall ×{ratio:.2f}, first step ×{first:.2f} (> 1: seqtool faster)")


if __name__ == "__main__":
    main()
