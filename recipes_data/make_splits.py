#!/usr/bin/env python3
"""Split recipes_data/phrasebook/pairs.tsv into line-aligned train/valid/test files, deterministically.

Usage: python recipes_data/make_splits.py   (rewrites phrasebook/{train,valid,test}.{en,fr})

Each pair goes to a split by the SHA-256 of its lower-cased English side, so the assignment does not
depend on file order, and pairs whose English sides differ only in case share a split. The test split
takes the first 10% of pairs in hash order (at least 300), valid the next 7% (at least 200).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent / "phrasebook"
TEST_SHARE, TEST_MIN = 0.10, 300
VALID_SHARE, VALID_MIN = 0.07, 200


def read_pairs(path: Path) -> list[tuple[str, str]]:
    pairs, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            raise SystemExit(f"{path}:{number}: empty line")
        fields = line.split("\t")
        if len(fields) != 2 or not all(f.strip() == f and f for f in fields):
            raise SystemExit(f"{path}:{number}: expected 'English<TAB>French' without stray spaces")
        key = fields[0].lower()
        if key in seen:
            raise SystemExit(f"{path}:{number}: duplicate English sentence {fields[0]!r}")
        seen.add(key)
        pairs.append((fields[0], fields[1]))
    return pairs


def split(pairs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    ordered = sorted(pairs, key=lambda p: hashlib.sha256(p[0].lower().encode("utf-8")).hexdigest())
    n_test = max(TEST_MIN, round(len(pairs) * TEST_SHARE))
    n_valid = max(VALID_MIN, round(len(pairs) * VALID_SHARE))
    parts = {"test": ordered[:n_test], "valid": ordered[n_test:n_test + n_valid],
             "train": ordered[n_test + n_valid:]}
    # keep each split in the order of pairs.tsv so neighbouring lines stay related
    index = {p: i for i, p in enumerate(pairs)}
    return {name: sorted(part, key=index.__getitem__) for name, part in parts.items()}


def main() -> None:
    pairs = read_pairs(HERE / "pairs.tsv")
    for name, part in split(pairs).items():
        for side, lang in ((0, "en"), (1, "fr")):
            text = "".join(pair[side] + "\n" for pair in part)
            (HERE / f"{name}.{lang}").write_text(text, encoding="utf-8")
        print(f"{name}: {len(part)} pairs")


if __name__ == "__main__":
    main()
