"""The shipped corpora cannot rot silently: counts, parsing, duplicates, split overlap, empty lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from recipes_format import parse_recipes

DATA = Path(__file__).resolve().parents[1] / "recipes_data"
HEADER = "  Amount  Measure       Ingredient -- Preparation Method"


@pytest.fixture(scope="module")
def recipes():
    return parse_recipes((DATA / "recipes.txt").read_text(encoding="utf-8"))


def test_recipe_counts(recipes):
    text = (DATA / "recipes.txt").read_text(encoding="utf-8")
    assert len(recipes) >= 400
    assert len(text.split()) >= 60_000
    assert text.count(HEADER) == len(recipes)  # every recipe in the file was parsed
    assert "\t" not in text and "\r" not in text


def test_every_recipe_is_complete(recipes):
    for r in recipes:
        assert r.title and r.title == r.title.strip()
        assert len(r.ingredients) >= 2, r.title
        assert r.directions and all(p.strip() for p in r.directions), r.title
        assert r.yield_, r.title


def test_no_duplicate_recipes(recipes):
    titles = [r.title.lower() for r in recipes]
    assert len(set(titles)) == len(titles)
    bodies = [" ".join(r.directions) for r in recipes]
    assert len(set(bodies)) == len(bodies)


def test_variety(recipes):
    yields = {r.yield_.split()[-1] for r in recipes}
    assert len(yields) > 10  # servings, loaves, cookies, pints, cups, ...
    sizes = [len(r.ingredients) for r in recipes]
    assert min(sizes) <= 4 and max(sizes) >= 14


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text[:-1].split("\n")


def test_phrasebook_splits():
    splits = {}
    for name in ("train", "valid", "test"):
        en, fr = _lines(DATA / "phrasebook" / f"{name}.en"), _lines(DATA / "phrasebook" / f"{name}.fr")
        assert len(en) == len(fr), name
        assert all(s.strip() for s in en + fr), f"empty line in {name}"
        assert all(3 <= len(s.split()) <= 30 for s in en + fr), name
        splits[name] = set(zip(en, fr, strict=True))
        assert len(splits[name]) == len(en), f"duplicate pair in {name}"
    assert len(splits["test"]) >= 300 and len(splits["valid"]) >= 200
    assert sum(map(len, splits.values())) >= 3000
    english = {name: {e.lower() for e, _ in pairs} for name, pairs in splits.items()}
    assert not english["train"] & english["valid"]
    assert not english["train"] & english["test"]
    assert not english["valid"] & english["test"]


def test_pairs_file_matches_splits():
    pairs = {tuple(line.split("\t")) for line in _lines(DATA / "phrasebook" / "pairs.tsv")}
    total = set()
    for name in ("train", "valid", "test"):
        en, fr = _lines(DATA / "phrasebook" / f"{name}.en"), _lines(DATA / "phrasebook" / f"{name}.fr")
        total |= set(zip(en, fr, strict=True))
    assert pairs == total


def test_split_script_is_reproducible(tmp_path):
    import shutil

    copy = tmp_path / "recipes_data"
    shutil.copytree(DATA / "phrasebook", copy / "phrasebook")
    shutil.copy(DATA / "make_splits.py", copy / "make_splits.py")
    subprocess.run([sys.executable, str(copy / "make_splits.py")], check=True, capture_output=True)
    for name in ("train.en", "train.fr", "valid.en", "valid.fr", "test.en", "test.fr"):
        assert (copy / "phrasebook" / name).read_bytes() == (DATA / "phrasebook" / name).read_bytes()


def test_course_labels_script_is_reproducible(tmp_path):
    import shutil

    copy = tmp_path / "recipes_data"
    copy.mkdir()
    shutil.copy(DATA / "recipes.txt", copy / "recipes.txt")
    shutil.copy(DATA / "make_courses.py", copy / "make_courses.py")
    subprocess.run([sys.executable, str(copy / "make_courses.py")], check=True, capture_output=True)
    for name in ("train.tsv", "valid.tsv", "test.tsv"):
        assert (copy / "courses" / name).read_bytes() == (DATA / "courses" / name).read_bytes()
    rows = [line.split("\t") for name in ("train.tsv", "valid.tsv", "test.tsv")
            for line in (DATA / "courses" / name).read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 513 and all(len(row) == 2 for row in rows)
    assert {row[1] for row in rows} == {"soup", "main", "side", "condiment", "dessert", "baking", "drink",
                                        "breakfast"}


def _config_class(command: str, classify: bool = False):
    from seqtool.training.classify import RNNClassifyConfig, TransformerClassifyConfig
    from seqtool.training.lm import TrainRNNConfig
    from seqtool.training.seq2seq import Seq2SeqTrainConfig
    from seqtool.training.transformer import TransformerTrainConfig

    if classify:
        return {"train-rnn": RNNClassifyConfig, "train-transformer": TransformerClassifyConfig}[command]
    return {"train-rnn": TrainRNNConfig, "train-seq2seq": Seq2SeqTrainConfig,
            "train-transformer": TransformerTrainConfig}[command]


@pytest.mark.parametrize("path", sorted((DATA / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_resolve(path):
    """Each config opens with the command that runs it, resolves for that command, and its data exist."""
    import dataclasses

    from seqtool.config import parse_duration, resolve

    text = path.read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("#") and "seqtool train-" in line)
    command = line.split("seqtool ", 1)[1].split()[0]
    assert text.startswith("# ")
    if "--task forecast" in line:
        from seqtool.training.forecast import ForecastConfig

        cfg = resolve(ForecastConfig, path)
    else:
        cfg = resolve(_config_class(command, "--task classify" in line), path)
    root = DATA.parent
    for value in dataclasses.asdict(cfg.data).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.startswith("recipes_data/"):
                assert (root / item).is_file(), item
    budget = parse_duration(cfg.run.time_budget)
    assert budget is not None and budget <= 600  # each runs in 10 minutes on 2 cores
