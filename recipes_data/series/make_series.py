"""Write the two series that `seqtool train-rnn --task forecast` ships with (run from anywhere):

  sines.csv                t,value — 2,000 steps of two noisy sines (periods 50 and 23 steps, amplitudes 1
                           and 0.5, Gaussian noise σ 0.1), seeded: the same file on every machine.
  recipe_line_lengths.csv  line,chars — the length in characters of each line of ../recipes.txt, in file
                           order (13,762 values): a measured series with the recipes' layout in it
                           (titles, header rows, ingredient rows, blank lines, wrapped paragraphs).

Usage: python recipes_data/series/make_series.py
"""

from __future__ import annotations

import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sines(n: int = 2000, seed: int = 17) -> list[float]:
    rng = random.Random(seed)
    return [math.sin(2 * math.pi * t / 50) + 0.5 * math.sin(2 * math.pi * t / 23) + rng.gauss(0, 0.1)
            for t in range(n)]


def line_lengths(corpus: Path) -> list[int]:
    return [len(line) for line in corpus.read_text(encoding="utf-8").split("\n")[:-1]]


def main() -> None:
    rows = "".join(f"{t},{v:.6f}\n" for t, v in enumerate(sines()))
    (HERE / "sines.csv").write_text("t,value\n" + rows, encoding="utf-8", newline="\n")
    lengths = line_lengths(HERE.parent / "recipes.txt")
    rows = "".join(f"{i},{n}\n" for i, n in enumerate(lengths, 1))
    (HERE / "recipe_line_lengths.csv").write_text("line,chars\n" + rows, encoding="utf-8", newline="\n")


if __name__ == "__main__":
    main()
