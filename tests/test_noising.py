"""Denoising pretraining: each BART noise function's properties (masking rate, deletion keeps order,
infilling replaces spans with one <mask>, permutation permutes sentences, seeded), its batches, and
train-transformer --objective denoise → finetune for translation, end to end."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from seqtool.data.noising import (
    DenoisingBatches,
    NoiseConfig,
    delete_tokens,
    infill,
    mask_tokens,
    noise_example,
    pack,
    permute_sentences,
    poisson,
)
from seqtool.data.tokenizers import train_tokenizer
from seqtool.workspace import Workspace

MASK = 4
IDS = list(range(10, 2010))  # 2000 distinct ordinary tokens


def test_masking_keeps_the_length_and_masks_about_the_ratio():
    out = mask_tokens(IDS, 0.3, MASK, random.Random(0))
    assert len(out) == len(IDS)
    assert all(o in (i, MASK) for o, i in zip(out, IDS, strict=True))
    assert out.count(MASK) / len(IDS) == pytest.approx(0.3, abs=0.04)
    assert mask_tokens(IDS, 0.0, MASK, random.Random(0)) == IDS


def test_deletion_keeps_the_order_of_what_is_left():
    out = delete_tokens(IDS, 0.3, random.Random(1))
    assert out == sorted(out) and set(out) <= set(IDS)  # a subsequence: IDS is increasing
    assert 1 - len(out) / len(IDS) == pytest.approx(0.3, abs=0.04)


def test_infilling_replaces_each_span_by_one_mask():
    out = infill(IDS, 0.3, 3.0, MASK, random.Random(2))
    kept = [t for t in out if t != MASK]
    assert kept == sorted(kept)  # the rest in order
    removed = len(IDS) - len(kept)
    assert removed / len(IDS) == pytest.approx(0.3, abs=0.06)
    # every run of missing tokens between two kept ones is marked by exactly one <mask>, and where no
    # token is missing there is at most one <mask> (a 0-length span)
    previous, masks = IDS[0] - 1, 0
    for t in [*out, IDS[-1] + 1]:
        if t == MASK:
            masks += 1
            continue
        gap = t - previous - 1
        assert masks == 1 if gap else masks <= 1
        previous, masks = t, 0
    assert out.count(MASK) < removed  # spans longer than one token: fewer masks than tokens removed


def test_poisson_has_the_mean_lambda():
    rng = random.Random(3)
    draws = [poisson(3.0, rng) for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(3.0, abs=0.15)


def test_permutation_is_a_permutation_of_the_sentences():
    sentences = [[10 + i, 20 + i] for i in range(8)]
    out = permute_sentences(sentences, random.Random(4))
    assert sorted(out) == sorted(sentences) and out != sentences


def test_noise_is_seeded():
    sentences = [list(range(10 + 10 * k, 18 + 10 * k)) for k in range(5)]
    cfg = NoiseConfig(functions=["mask", "delete", "infill", "permute"], ratio=0.3)
    a = noise_example(sentences, cfg, MASK, 3, random.Random(7))
    assert a == noise_example(sentences, cfg, MASK, 3, random.Random(7))
    assert a != noise_example(sentences, cfg, MASK, 3, random.Random(8))
    with pytest.raises(Exception, match="not one of"):
        NoiseConfig(functions=["shuffle"])


def test_examples_pack_consecutive_sentences_and_batches_are_deterministic():
    examples = pack([[11] * 4, [12] * 4, [13] * 9, [14] * 30], max_tokens=10)
    assert examples == [[[11] * 4, [12] * 4], [[13] * 9], [[14] * 10]]
    tok = train_tokenizer("char", ["abc def", "ghi"])
    lines = [tok.encode(s) for s in ["abc def", "ghi", "bad", "fed cab"] * 6]
    source = DenoisingBatches(pack(lines, 16), NoiseConfig(), 64, tok, seed=1, max_len=32)
    first = list(source.batches(1, 0))
    again = list(source.batches(1, 2))
    assert [b["src"].tolist() for b in first[2:]] == [b["src"].tolist() for b in again]  # a resume
    other = list(source.batches(2, 0))
    assert [b["src"].tolist() for b in first] != [b["src"].tolist() for b in other]  # fresh noise
    for batch in first:
        assert Counter(batch["src"].flatten().tolist())[tok.mask_id] > 0 or batch["src"].shape[1] < 4
        assert (batch["tgt_out"] != tok.pad_id).sum() == batch["ntokens"]


EN = ["beat the eggs", "fold in the flour", "bake the cake", "serve it warm", "melt the butter",
      "pour the batter"]
FR = ["battez les oeufs", "incorporez la farine", "cuisez le gâteau", "servez chaud",
      "faites fondre le beurre", "versez la pâte"]


def test_denoise_pretraining_then_finetune_for_translation(cli, tmp_path, tmp_text):
    mono = tmp_text("\n".join(EN * 4 + FR * 4) + "\n", name="mono.txt")
    small = ("--n-layers", 1, "--d-model", 16, "--d-ff", 32, "--heads", 2, "--device", "cpu", "--seed", 1)
    result = cli(["train-transformer", mono, "-w", tmp_path / "pre", "--arch", "encoder-decoder",
                  "--objective", "denoise", "--noise", "mask,delete,infill,permute", "--kind", "word",
                  "--block-size", 12, "--max-steps", 3, "--eval-every", 3, *small])
    assert result.exit_code == 0, result.stderr
    assert "noise mask+delete+infill+permute" in result.stderr
    pre = Workspace.open(tmp_path / "pre")
    assert pre.kind == "transformer-mt" and pre.config["noise"]["ratio"] == 0.3
    src = tmp_text("\n".join(EN * 3) + "\n", name="en.txt")
    tgt = tmp_text("\n".join(FR * 3) + "\n", name="fr.txt")
    result = cli(["finetune", "--from", tmp_path / "pre", "--src", src, "--tgt", tgt, "-w", tmp_path / "mt",
                  "--max-steps", 2, "--eval-every", 2, "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert Workspace.open(tmp_path / "mt").status["best_metric"] == "bleu"
    result = cli(["translate", "-w", tmp_path / "mt", "--device", "cpu"], input="bake the cake\n")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1
    # the noise options belong to the denoising objective
    decoder = ("train-transformer", mono, "-w", tmp_path / "x", "--arch", "decoder")
    bad = cli([*decoder, "--objective", "denoise"])
    assert bad.exit_code == 2 and "--objective denoise pretrains an encoder-decoder" in bad.stderr
    bad = cli([*decoder, "--noise", "mask"])
    assert bad.exit_code == 2 and "apply to --objective denoise only" in bad.stderr
