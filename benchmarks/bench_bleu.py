"""Wall time of `seqtool bleu` against the `sacrebleu` command line on a 10,000-line file.

Builds the file from ../shared/data/mt-testset (WMT22 en-de, repeated to 10,000 lines), checks both
tools print the same BLEU, and reports median and spread of N runs. Target: ratio ≤ 1.2.
Run: python benchmarks/bench_bleu.py [--runs 7] [--data ../shared/data/mt-testset/wmt22]
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(data: Path, out: Path, n: int) -> tuple[Path, Path]:
    hyp = (data / "system-outputs/generaltest2022.en-de.hyp.OpenNMT.de").read_text(encoding="utf-8")
    ref = (data / "references/generaltest2022.en-de.ref.A.de").read_text(encoding="utf-8")
    pairs = list(zip(hyp.splitlines(), ref.splitlines(), strict=False))
    chosen = list(itertools.islice(itertools.cycle(pairs), n))
    hyp_path, ref_path = out / "hyp.de", out / "ref.de"
    hyp_path.write_text("".join(h + "\n" for h, _ in chosen), encoding="utf-8")
    ref_path.write_text("".join(r + "\n" for _, r in chosen), encoding="utf-8")
    return hyp_path, ref_path


def timed(cmd: list[str], runs: int) -> tuple[list[float], str]:
    times, out = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - start)
        out = proc.stdout
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/mt-testset/wmt22")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hyp, ref = build(args.data, Path(tmp), args.lines)
        sacre = [str(Path(sys.executable).with_name("sacrebleu")), str(ref), "-i", str(hyp), "-b", "-w", "2"]
        ours = [sys.executable, "-m", "seqtool", "bleu", str(hyp), str(ref)]
        rows = []
        for name, cmd in (("sacrebleu CLI", sacre), ("seqtool bleu", ours)):
            times, out = timed(cmd, args.runs)
            rows.append((name, times, out))
    theirs = float(rows[0][2].strip())
    mine = float(re.search(r"BLEU = ([\d.]+)", rows[1][2]).group(1))
    print(f"{args.lines} lines, {args.runs} runs each (wall seconds)")
    print(f"{'tool':<16}{'median':>8}{'min':>8}{'max':>8}   BLEU")
    for (name, times, _), score in zip(rows, (theirs, mine), strict=False):
        print(f"{name:<16}{statistics.median(times):8.3f}{min(times):8.3f}{max(times):8.3f}   {score:.2f}")
    ratio = statistics.median(rows[1][1]) / statistics.median(rows[0][1])
    print(f"ratio seqtool/sacrebleu (median): {ratio:.2f}  (target ≤ 1.2)")
    if abs(theirs - mine) > 0.005:
        sys.exit(f"BLEU differs: sacrebleu {theirs} vs seqtool {mine}")


if __name__ == "__main__":
    main()
