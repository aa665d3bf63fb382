"""Benchmark `seqtool tokenize --format ids` against calling sentencepiece directly.

Builds a text file of at least --size-mb MB (by reshuffling the lines of --corpus, or takes --input),
trains a bpe tokenizer with `seqtool build-vocab`, then measures in one run: throughput of
seqtool and of a minimal sentencepiece script writing the same ids (both as subprocesses, output
to /dev/null), their ratio end to end and without each program's start-up, peak RSS on the input and
on the input doubled, and the median start-up time of `seqtool --help`, `seqtool tokenize` and the
sentencepiece script on one line. Checks that both write the same ids. Prints markdown tables.

    python benchmarks/bench_tokenize.py [--corpus FILE | --input FILE] [--size-mb 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_CORPUS = Path("/work/shared/data/tinyshakespeare/input.txt")
HERE = Path(__file__).resolve().parent
SEQTOOL = [sys.executable, "-m", "seqtool"]

# Runs a command with stdin/stdout redirected and reports its wall time and peak RSS (KiB): each
# measured command gets a fresh parent, so RUSAGE_CHILDREN holds that command alone.
MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
with open(sys.argv[1], "rb") as stdin, open("/dev/null", "wb") as stdout:
    code = subprocess.run(sys.argv[2:], stdin=stdin, stdout=stdout).returncode
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""

# The reference: read lines, encode 1,000 at a time with sentencepiece's batch encoder, write ids.
REFERENCE = """
import sys, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
write = sys.stdout.write
batch = []
def flush():
    write("".join(" ".join(map(str, ids)) + "\\n" for ids in sp.encode(batch)))
    batch.clear()
for line in sys.stdin:
    batch.append(line.rstrip("\\n"))
    if len(batch) == 1000:
        flush()
flush()
"""


def measure(cmd: list[str], stdin: Path) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(stdin), *cmd], capture_output=True, text=True,
                         check=True).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return float(out[0]), int(out[1])


def synthetic_lines(n: int = 20000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice("etaoinshrdlucmfwypvbgkqjxz") for _ in range(rng.randint(1, 9)))
             for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 14))) for _ in range(n)]


def build_input(corpus: Path | None, size_mb: float, path: Path) -> None:
    lines = (corpus.read_text(encoding="utf-8").splitlines() if corpus and corpus.exists()
             else synthetic_lines())
    rng = random.Random(1234)
    size, target = 0, size_mb * 1e6
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            rng.shuffle(lines)
            chunk = "\n".join(lines) + "\n"
            f.write(chunk)
            size += len(chunk.encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, help="Text file to tokenize (default: built from --corpus).")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS if DEFAULT_CORPUS.exists() else None,
                    help="Lines to reshuffle into the input (default: tiny Shakespeare, else synthetic).")
    ap.add_argument("--size-mb", type=float, default=10.0)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--runs", type=int, default=3, help="Throughput runs per command (the best counts).")
    ap.add_argument("--startup-runs", type=int, default=7)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        work = Path(tmp)
        data = args.input or work / "input.txt"
        if args.input is None:
            build_input(args.corpus, args.size_mb, data)
        doubled = work / "doubled.txt"
        doubled.write_bytes(data.read_bytes() * 2)
        tok = work / "tok"
        train_on = args.corpus if args.input is None and args.corpus else data
        subprocess.run([*SEQTOOL, "-q", "build-vocab", str(train_on), "--kind", "bpe",
                        "--vocab-size", str(args.vocab_size), "--sample", "200000", "-o", str(tok)],
                       check=True)
        with open(data, "rb") as f:
            n_lines = sum(1 for _ in f)
        n_bytes = data.stat().st_size

        seqtool_cmd = [*SEQTOOL, "tokenize", "-t", str(tok), "--format", "ids"]
        reference_cmd = [sys.executable, "-c", REFERENCE, str(tok / "spm.model")]
        commands = {"seqtool tokenize --format ids": seqtool_cmd, "sentencepiece directly": reference_cmd}
        outputs = set()
        for cmd in commands.values():  # both must write the same ids
            with open(data, "rb") as stdin:
                outputs.add(subprocess.run(cmd, stdin=stdin, capture_output=True, check=True).stdout)
        if len(outputs) != 1:
            raise SystemExit("seqtool and sentencepiece wrote different ids")
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
        for _ in range(args.runs):  # interleaved, so both see the same machine load
            for name, cmd in commands.items():
                runs[name].append(measure(cmd, data))
        results = {name: (min(t for t, _ in runs[name]), max(r for _, r in runs[name]),
                          measure(cmd, doubled)[1]) for name, cmd in commands.items()}
        one_line = work / "one.txt"
        one_line.write_text("To be, or not to be, that is the question.\n")

        def startup(cmd: list[str]) -> float:
            return statistics.median(measure(cmd, one_line)[0] for _ in range(args.startup_runs))

        starts = {"seqtool --help": startup([*SEQTOOL, "--help"]),
                  "seqtool tokenize (one line)": startup(seqtool_cmd),
                  "sentencepiece script (one line)": startup(reference_cmd)}

    print(f"input: {n_bytes / 1e6:.1f} MB, {n_lines:,} lines; bpe vocabulary {args.vocab_size}; "
          f"best of {args.runs} interleaved runs; outputs identical\n")
    print("| command | time (s) | lines/s | MB/s | peak RSS (MB) | peak RSS, input ×2 (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (seconds, rss, rss2) in results.items():
        print(f"| {name} | {seconds:.2f} | {n_lines / seconds:,.0f} | {n_bytes / 1e6 / seconds:.2f} | "
              f"{rss / 1024:.0f} | {rss2 / 1024:.0f} |")
    ours, ref = results["seqtool tokenize --format ids"][0], results["sentencepiece directly"][0]
    # Steady-state speed: the same runs less each program's one-line start-up time.
    ours_steady = ours - starts["seqtool tokenize (one line)"]
    ref_steady = ref - starts["sentencepiece script (one line)"]
    print(f"\nthroughput ratio seqtool / sentencepiece: **{ref / ours:.2f}×** end to end, "
          f"**{ref_steady / ours_steady:.2f}×** without start-up (target ≥ 0.8×)\n")
    print(f"| start-up | median of {args.startup_runs} (s) |")
    print("|---|---:|")
    for name, seconds in starts.items():
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
