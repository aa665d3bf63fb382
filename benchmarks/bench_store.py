"""Token store benchmark: corpora of 10 MB, 100 MB (and 1 GB with --sizes 10,100,1000) built by repeating
real text, measured against sentencepiece's own batch encoder in the same run.

For each size: encoding throughput of the store build (all cores) and of sentencepiece's batch encode
(one process, as sentencepiece threads it), the build's peak RSS, the time to the first training step
of a fresh run that reuses the store and of a resume, one bounded validation (eval_batches), and, for
reference, the in-memory path (the corpus piped on stdin: read, tokenized and held in memory, as every
run did before the store).

    python benchmarks/bench_store.py --sizes 10,100 --work /tmp/bench_store
    python benchmarks/bench_store.py --sizes 100,1000 --first-step-only --work /tmp/bench_store
Corpora, stores and workspaces go under --work (never into the repository). --first-step-only builds each
store once and times only the first step of fresh runs and resumes (and data readiness), with the load
average beside them.
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

TEXT = ["/work/shared/data/tinyshakespeare/input.txt", "/work/shared/data/recipes/recipes.txt"]
MODEL = ["--arch", "decoder", "--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--block-size", "64",
         "--batch-size", "8", "--device", "cpu", "--seed", "1", "--set", "run.log_every=1",
         "--set", "run.eval_batches=20", "--eval-every", "2", "--set", "run.checkpoint_every=1"]


def make_corpus(path: Path, megabytes: int) -> Path:
    """Real text repeated to `megabytes` MB (whole copies, then a cut at a line end)."""
    if path.is_file() and path.stat().st_size >= megabytes * 10**6 * 0.99:
        return path
    text = b"".join(Path(p).read_bytes() for p in TEXT)
    with open(path, "wb") as out:
        written = 0
        while written < megabytes * 10**6:
            piece = text[: megabytes * 10**6 - written]
            piece = piece[: piece.rfind(b"\n") + 1]
            if not piece:
                break
            out.write(piece)
            written += len(piece)
    return path


def timed(cmd: list[str], stdin: Path | None = None) -> tuple[float, int, str]:
    """(seconds, peak RSS in MB of the largest process of the tree, stderr) of a command."""
    start = time.perf_counter()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as fh:
        proc = subprocess.run(["/usr/bin/time", "-f", "peak_kb %M", *cmd], stdin=fh, capture_output=True,
                              text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    peak = int(proc.stderr.rsplit("peak_kb", 1)[1].split()[0]) // 1024
    return seconds, peak, proc.stderr


def first_step(cmd: list[str], stdin: Path | None = None) -> tuple[float, float, int]:
    """(seconds from launch to the first train event, seconds of the first validation, peak RSS MB)."""
    launch = time.time()
    _, peak, err = timed(cmd, stdin)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    train = [e for e in events if e.get("event") == "train"]
    valid = [e for e in events if e.get("event") == "valid"]
    eval_s = valid[0]["time"] - next(e["time"] for e in train if e["step"] == valid[0]["step"])
    return train[0]["time"] - launch, eval_s, peak


def spm_rate(corpus: Path, tok_dir: Path, repeats: int) -> list[float]:
    """MB/s of sentencepiece's own batch encode over the corpus (batches of 1000 lines)."""
    code = f"""
import time, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file={str(tok_dir / 'spm.model')!r})
t = time.perf_counter(); batch = []; n = 0
with open({str(corpus)!r}, encoding='utf-8') as fh:
    for line in fh:
        batch.append(line.rstrip('\\n'))
        if len(batch) == 1000:
            n += sum(map(len, sp.encode(batch))); batch = []
n += sum(map(len, sp.encode(batch)))
print(time.perf_counter() - t, n)
"""
    rates = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        rates.append(corpus.stat().st_size / 1e6 / float(out.split()[0]))
    return rates


DATA_READY = """
import sys, time
from pathlib import Path
from seqtool.config import TokenizerConfig
from seqtool.metrics import TextSize, text_size
from seqtool.training import lm
from seqtool.training.streams import token_streams
from seqtool.training.transformer import TransformerDataConfig
from seqtool.workspace import Workspace
mode, corpus, tok, store, ws = sys.argv[1:]
data = TransformerDataConfig(train=[corpus], store=store)
t = time.perf_counter()
if mode == "in-memory":
    from seqtool.data.tokenizers import load_tokenizer
    corpus = lm.read_corpus(data)
    tokenizer = load_tokenizer(tok)
    train, valid = lm.encode(tokenizer, corpus.train), lm.encode(tokenizer, corpus.valid)
    ready = time.perf_counter() - t
    text_size(corpus.valid, valid.numel() - 1)
else:
    space = Workspace.open(ws) if mode == "resume" else Workspace.create(ws, "transformer-lm", {})
    s = token_streams(data, TokenizerConfig(path=tok), space, mode == "resume", 1, lambda m: None)
    ready = time.perf_counter() - t
    s.valid_text if isinstance(s.valid_text, TextSize) else text_size(s.valid_text, s.valid_ids.numel() - 1)
print(ready, time.perf_counter() - t - ready)
"""


def data_ready(mode: str, corpus: Path, tok: Path, store: Path, ws: Path) -> tuple[float, float]:
    """(seconds until the token streams are ready, seconds counting the validation text's bytes and
    words) in a fresh process, imports excluded: `mode` in-memory (the old path: read, encode and hold
    the corpus), fresh (a new workspace mapping the store) or resume (the same workspace again)."""
    if mode == "fresh":
        shutil.rmtree(ws, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", DATA_READY, mode, str(corpus), str(tok), str(store), str(ws)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


PER_CORE = """
import os, shutil, sys, tempfile, time
import sentencepiece as spm
from seqtool.data import store_build
from seqtool.data.tokenizers import load_tokenizer
corpus, tok_dir = sys.argv[1:]
tok, sp = load_tokenizer(tok_dir), spm.SentencePieceProcessor(model_file=tok_dir + "/spm.model")
t = time.perf_counter(); batch = []
with open(corpus, encoding="utf-8") as fh:
    for line in fh:
        batch.append(line.rstrip("\\n"))
        if len(batch) == 1000:
            sp.encode(batch); batch = []
sp.encode(batch)
theirs = time.perf_counter() - t
with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    store_build.build_corpus(tmp + "/s", [corpus], [], tok, "k", workers=1)
    ours = time.perf_counter() - t
print(os.path.getsize(corpus) / 1e6 / ours, os.path.getsize(corpus) / 1e6 / theirs)
"""


def per_core(corpus: Path, tok: Path) -> tuple[float, float]:
    """(MB/s of the store's encoder with one worker, of sentencepiece's batch encode), one after the
    other in one process: the encoders compared on one core, whatever the machine's other load."""
    out = subprocess.run([sys.executable, "-c", PER_CORE, str(corpus), str(tok)], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def seqtool(*args: str) -> list[str]:
    return [sys.executable, "-m", "seqtool", "--log-format", "json", *args]


def measure_runs(args: argparse.Namespace, work: Path, tok: Path, corpus: Path, mb: int, size: float) -> str:
    """The table row of one corpus: store builds, sentencepiece, and train-transformer runs."""
    builds, peaks = [], []
    for _ in range(args.repeats):
        shutil.rmtree(work / "store", ignore_errors=True)
        _, peak, _ = timed(seqtool("tokenize", str(corpus), "-t", str(tok), "--format", "store",
                                   "-o", str(work / "store")))
        manifest = next(m for f in (work / "store").glob("*/manifest.json")
                        if (m := json.loads(f.read_text()))["sources"][0]["path"] == str(corpus.resolve()))
        builds.append(size / manifest["seconds"])  # the encoding itself, as timed for sentencepiece
        peaks.append(peak)
    spm = spm_rate(corpus, tok, args.repeats)
    fresh, resume, evals, run_peaks = [], [], [], []
    for i in range(args.repeats):
        ws = work / f"ws-{mb}-{i}"
        shutil.rmtree(ws, ignore_errors=True)
        run = seqtool("train-transformer", str(corpus), "-t", str(tok), "--data-store",
                      str(work / "store"), "-w", str(ws), *MODEL)
        ttfs, eval_s, peak = first_step([*run, "--max-steps", "2"])
        fresh.append(ttfs)
        evals.append(eval_s)
        run_peaks.append(peak)
        ttfs, _, peak = first_step([*run, "--max-steps", "4"])  # resumes from step 2
        resume.append(ttfs)
        run_peaks.append(peak)
    old = "not measured"
    old_peak = ""
    if mb <= args.old_path_up_to:
        ws = work / f"ws-{mb}-old"
        shutil.rmtree(ws, ignore_errors=True)
        ttfs, _, peak = first_step(seqtool("train-transformer", "-", "-t", str(tok), "-w", str(ws),
                                           *MODEL, "--max-steps", "2"), stdin=corpus)
        old, old_peak = f"{ttfs:.1f} s", str(peak)

    ratio = statistics.median(builds) / statistics.median(spm)
    return (f"| {size:,.0f} MB | {med(builds, '', '{:.1f}')} | {med(spm, '', '{:.1f}')} | {ratio:.2f}× | "
          f"{max(peaks)} | {med(fresh)} | {med(resume)} | {med(evals)} | {max(run_peaks)} | {old} | "
          f"{old_peak} |")


def first_steps(args: argparse.Namespace, work: Path, tok: Path, corpus: Path, mb: int, size: float) -> str:
    """The table row of --first-step-only: the store built once, then fresh runs reusing it and resumes."""
    time.sleep(max(0.0, 2.5 - (time.time() - corpus.stat().st_mtime)))  # a file this new is hashed again
    timed(seqtool("tokenize", str(corpus), "-t", str(tok), "--format", "store", "-o", str(work / "store")))
    fresh, resume, loads = [], [], [os.getloadavg()[0]]
    for i in range(args.repeats):
        ws = work / f"ws-{mb}-{i}"
        shutil.rmtree(ws, ignore_errors=True)
        run = seqtool("train-transformer", str(corpus), "-t", str(tok), "--data-store", str(work / "store"),
                      "-w", str(ws), *MODEL)
        fresh.append(first_step([*run, "--max-steps", "2"])[0])
        resume.append(first_step([*run, "--max-steps", "4"])[0])  # resumes from step 2
        loads.append(os.getloadavg()[0])
    return (f"| {size:,.0f} MB | {med(fresh)} | {med(resume)} | {min(loads):.1f}–{max(loads):.1f} |")


def med(xs: list[float], unit: str = " s", fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(xs))}{unit} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100", help="corpus sizes in MB")
    parser.add_argument("--work", default="/tmp/bench_store", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-path-up-to", type=int, default=10, help="measure the in-memory path up to MB")
    parser.add_argument("--only-data-ready", action="store_true", help="skip the runs: data readiness only")
    parser.add_argument("--first-step-only", action="store_true",
                        help="build each store once; time only the first step of fresh runs and resumes")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    tok = work / "tok"
    if not tok.is_dir():
        subprocess.run(seqtool("build-vocab", *TEXT, "-o", str(tok), "--kind", "bpe", "--vocab-size", "8000"),
                       check=True, capture_output=True)
    print(f"machine: {os.cpu_count()} CPU cores; python {sys.version.split()[0]}; tokenizer bpe 8000")
    if args.first_step_only:
        print("| corpus | first step, fresh run reusing the store | first step, resume | load average "
              "(1 min) |")
        print("|---|---|---|---|")
    else:
        print("| corpus | store build MB/s | spm batch encode MB/s | ratio | build peak RSS MB | first step, "
              "fresh run reusing the store | first step, resume | validation (20 batches) | peak RSS of the "
              "run MB | in-memory path: first step | in-memory path: peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    data_lines = ["", "Data ready (in a fresh process, imports excluded): median (min–max)", "",
                  "| corpus | path | token streams ready | counting the validation text (bpb, word ppl) |",
                  "|---|---|---|---|"]
    core_lines = ["", "One core: the store's encoder (1 worker) vs sentencepiece's batch encode, one after "
                  "the other in one process", "", "| corpus | store MB/s | spm MB/s | ratio |",
                  "|---|---|---|---|"]
    for mb in map(int, args.sizes.split(",")):
        corpus = make_corpus(work / f"corpus-{mb}MB.txt", mb)
        size = corpus.stat().st_size / 1e6
        if args.only_data_ready:
            timed(seqtool("tokenize", str(corpus), "-t", str(tok), "--format", "store", "-o",
                          str(work / "store")))
        elif args.first_step_only:
            row = first_steps(args, work, tok, corpus, mb, size)
        else:
            row = measure_runs(args, work, tok, corpus, mb, size)
        ready: dict[str, list[tuple[float, float]]] = {"in-memory": [], "fresh": [], "resume": []}
        for _ in range(args.repeats):  # interleaved, so that the machine's load falls on each alike
            for mode in ready if mb <= args.old_path_up_to else ("fresh", "resume"):
                ready[mode].append(data_ready(mode, corpus, tok, work / "store", work / f"ready-{mb}"))
        if mb <= args.old_path_up_to and not args.first_step_only:  # one core, beside the in-memory path
            cores = [per_core(corpus, tok) for _ in range(args.repeats)]
            ratio = statistics.median(c[0] for c in cores) / statistics.median(c[1] for c in cores)
            core_lines.append(f"| {size:,.0f} MB | {med([c[0] for c in cores], '', '{:.2f}')} | "
                              f"{med([c[1] for c in cores], '', '{:.2f}')} | {ratio:.2f}× |")
        for mode, times in ready.items():
            if times:
                data_lines.append(f"| {size:,.0f} MB | {mode} | {med([t[0] for t in times])} | "
                                  f"{med([t[1] for t in times])} |")
        if not args.only_data_ready:
            print(row, flush=True)
    print("\n".join(data_lines))
    print("\n".join(core_lines))


if __name__ == "__main__":
    main()
