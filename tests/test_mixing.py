"""Several corpora with weights (data.mix, --mix) and bounded validation (data.valid_tokens): batches are
drawn by weight, a resumed mixture continues bit for bit, each corpus is validated apart, a bad mixture is
one error line, and a validation cap scores the same whole held-out lines at every evaluation."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from seqtool.cli import app
from seqtool.data import store, store_build
from seqtool.data.io import file_fingerprint
from seqtool.data.mixing import MixedBatches, draws_per_epoch, parse_mix
from seqtool.data.tokenizers import train_tokenizer
from seqtool.errors import InputError
from seqtool.storage import load_tensors
from seqtool.training.streams import held_out

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "red", "hat"]
OTHER = ["x", "y", "zz", "qq", "w"]
DECODER = ["train-transformer", "--arch", "decoder", "--n-layers", "1", "--heads", "2", "--d-model", "16",
           "--d-ff", "32", "--block-size", "8", "--batch-size", "4", "--kind", "char", "--eval-every", "3",
           "--set", "run.checkpoint_every=3", "--device", "cpu", "--seed", "3", "--set", "run.eval_batches=3"]
RNN = ["train-rnn", "--cell", "gru", "--n-layers", "1", "--hidden", "16", "--embedding", "16",
       "--batch-size", "4", "--objective", "window", "--window", "8", "--eval-every", "3",
       "--set", "run.checkpoint_every=3", "--device", "cpu", "--seed", "1", "--kind", "char",
       "--set", "run.eval_batches=3"]


def lines_of(words: list[str], n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(words) for _ in range(6)) + "\n" for _ in range(n))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    (d / "big.txt").write_text(lines_of(WORDS, 300, 0))
    (d / "small.txt").write_text(lines_of(OTHER, 60, 1))
    return d


def run(args: list[str], stdin: str | None = None) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(app, ["--log-format", "json", *args], input=stdin)
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip().startswith("{")]
    return result.exit_code, lines, result.stderr


def train(args: list[str], stdin: str | None = None) -> list[dict]:
    code, lines, _ = run(args, stdin)
    assert code == 0, lines[-3:]
    return lines


def valid_rows(ws: Path) -> list[dict]:
    rows = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    drop = ("time", "elapsed")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows if r.get("event") == "valid"]


def messages(lines: list[dict]) -> str:
    return "\n".join(str(line.get("message", "")) for line in lines)


# ---------------------------------------------------------------------------------------------
# the spec and the sampler


def test_a_mix_spec_reads_names_files_and_normalized_weights():
    parts = parse_mix(["data/web.txt.gz:70", "dom=a.txt,b/*.txt:30"])
    assert [(p.name, p.files, p.weight) for p in parts] == [("web", ("data/web.txt.gz",), 0.7),
                                                           ("dom", ("a.txt", "b/*.txt"), 0.3)]
    assert parse_mix(["x/*.txt:1", "y.txt:1"])[0].name == "x"


@pytest.mark.parametrize("items, says", [
    (["a.txt", "b.txt:1"], "has no weight"),
    (["a.txt:abc", "b.txt:1"], "must be a finite number > 0"),
    (["a.txt:0", "b.txt:1"], "must be a finite number > 0"),
    (["a.txt:-1", "b.txt:1"], "must be a finite number > 0"),
    (["a.txt:nan", "b.txt:1"], "must be a finite number > 0"),
    (["a.txt:1"], "two corpora or more"),
    (["d1/a.txt:1", "d2/a.txt:1"], "names two corpora 'a'"),
    (["-:1", "b.txt:1"], "not stdin"),
])
def test_a_bad_mix_spec_names_the_item(items, says):
    with pytest.raises(InputError, match=says):
        parse_mix(items)


class Tagged:
    """A batch source whose batches say which corpus, epoch and index they are."""

    def __init__(self, corpus: int, steps: int):
        self.corpus, self.steps_per_epoch = corpus, steps

    def batches(self, epoch, start):
        for i in range(start, self.steps_per_epoch):
            yield {"corpus": self.corpus, "epoch": epoch, "i": i}


def test_batches_are_drawn_by_weight_whatever_the_sizes():
    mixed = MixedBatches([Tagged(0, 500), Tagged(1, 20)], [0.7, 0.3], seed=5)
    assert mixed.steps_per_epoch == 520 and mixed.draws == [364, 156]
    drawn = [b for epoch in range(3) for b in mixed.batches(epoch, 0)]
    counts = Counter(b["corpus"] for b in drawn)
    assert counts[1] / len(drawn) == pytest.approx(0.3, abs=0.01)
    first_100 = Counter(b["corpus"] for b in drawn[:100])  # shuffled, not 364 of one then 156 of the other
    assert 15 <= first_100[1] <= 45
    # each corpus is read in its own order, epoch after epoch: the small one 7.8 times over, never skipping
    for k, steps in ((0, 500), (1, 20)):
        seen = [(b["epoch"], b["i"]) for b in drawn if b["corpus"] == k]
        assert seen == [divmod(j, steps) for j in range(len(seen))]


def test_a_mixture_resumes_mid_epoch_on_the_same_batches():
    mixed = MixedBatches([Tagged(0, 7), Tagged(1, 3), Tagged(2, 5)], [0.5, 0.3, 0.2], seed=1)
    for epoch in (0, 2):
        whole = list(mixed.batches(epoch, 0))
        for start in (1, 6, 14):
            assert list(mixed.batches(epoch, start)) == whole[start:]
    assert list(MixedBatches([Tagged(0, 7), Tagged(1, 3)], [0.5, 0.5], seed=2).batches(0, 0)) != \
        list(MixedBatches([Tagged(0, 7), Tagged(1, 3)], [0.5, 0.5], seed=3).batches(0, 0))


def test_draws_per_epoch_sum_to_the_epoch():
    assert draws_per_epoch([1 / 3, 1 / 3, 1 / 3], 10) == [4, 3, 3]
    assert sum(draws_per_epoch([0.123, 0.877], 997)) == 997


# ---------------------------------------------------------------------------------------------
# training on a mixture


def test_a_mixed_decoder_resumes_bit_for_bit_and_validates_each_corpus(data, tmp_path):
    mix = ["--mix", f"{data / 'big.txt'}:1", "--mix", f"web={data / 'small.txt'}:3"]
    lines = train([*DECODER, *mix, "-w", str(tmp_path / "ref"), "--max-steps", "6"])
    assert messages(lines).count("token store: built") == 2  # one entry per corpus
    assert "a mixture of 2 corpora — big (weight 0.25)" in messages(lines)
    train([*DECODER, *mix, "-w", str(tmp_path / "cut"), "--max-steps", "3"])
    resumed = train([*DECODER, *mix, "-w", str(tmp_path / "cut"), "--max-steps", "6"])
    assert "token store: reusing" in messages(resumed) and "token store: built" not in messages(resumed)
    a, b = (load_tensors(tmp_path / name / "model.safetensors") for name in ("ref", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref = valid_rows(tmp_path / "ref")
    assert ref == valid_rows(tmp_path / "cut")
    for row in ref:  # the mixture's loss: the corpora's, weighted as the batches are drawn
        assert row["loss"] == pytest.approx(0.25 * row["loss_big"] + 0.75 * row["loss_web"])
    # seqtool.yaml records the mixture; info shows it
    meta = yaml.safe_load((tmp_path / "ref" / "seqtool.yaml").read_text())
    assert meta["config"]["data"]["mix"] == mix[1::2]
    assert {f.get("corpus") for f in meta["data"]} == {"big", "web"}
    out = CliRunner().invoke(app, ["info", "-w", str(tmp_path / "ref"), "--json"])
    assert [(p["name"], p["weight"]) for p in json.loads(out.stdout)["mix"]] == [("big", 0.25), ("web", 0.75)]
    out = CliRunner().invoke(app, ["runs", str(tmp_path / "ref"), "--json"])
    assert json.loads(out.stdout)[0]["mix"] == "big 0.25, web 0.75"


def test_a_mixed_rnn_trains_with_the_window_objective(data, tmp_path):
    mix = ["--mix", f"{data / 'big.txt'}:1", "--mix", f"{data / 'small.txt'}:1"]
    train([*RNN, *mix, "-w", str(tmp_path / "ws"), "--max-steps", "3"])
    assert {"loss_big", "loss_small", "loss"} <= set(valid_rows(tmp_path / "ws")[0])


def test_a_mixed_masked_lm_validates_each_corpus(data, tmp_path):
    encoder = [a if a != "decoder" else "encoder" for a in DECODER]
    train([*encoder, "--mix", f"{data / 'big.txt'}:1", "--mix", f"{data / 'small.txt'}:1",
           "-w", str(tmp_path / "ws"), "--max-steps", "3"])
    row = valid_rows(tmp_path / "ws")[0]
    assert row["loss"] == pytest.approx(0.5 * row["loss_big"] + 0.5 * row["loss_small"])


def one_error(args: list[str]) -> str:
    code, lines, stderr = run(args)
    errors = [line for line in lines if line.get("event") == "error"]
    assert code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr[-500:]
    return errors[0]["message"]


def test_a_bad_mixture_is_one_error_line_exit_2(data, tmp_path):
    big, small = str(data / "big.txt"), str(data / "small.txt")
    ws = ["-w", str(tmp_path / "ws"), "--max-steps", "2"]
    both = ["--mix", f"{big}:1", "--mix", f"{small}:1", *ws]
    assert "has no weight" in one_error([*DECODER, "--mix", big, "--mix", f"{small}:1", *ws])
    assert "finite number > 0" in one_error([*DECODER, "--mix", f"{big}:-2", "--mix", f"{small}:1", *ws])
    assert "either as FILES or as --mix" in one_error([*DECODER, big, *both])
    assert "--valid cannot be used with --mix" in one_error([*DECODER, "--valid", small, *both])
    bptt = [a if a != "window" else "bptt" for a in RNN]
    assert "--mix needs --objective window" in one_error([*bptt, *both, "-w", str(tmp_path / "rnn")])
    assert "--mix mixes text corpora" in one_error([*DECODER, "--arch", "encoder-decoder", *both])
    assert "not found" in one_error([*DECODER, "--mix", f"{big}:1", "--mix", f"{tmp_path}/0.txt:1", *ws])


def test_a_resume_with_other_weights_is_refused(data, tmp_path):
    ws = ["-w", str(tmp_path / "ws")]
    train([*DECODER, "--mix", f"{data / 'big.txt'}:1", "--mix", f"{data / 'small.txt'}:1", *ws,
           "--max-steps", "3"])
    message = one_error([*DECODER, "--mix", f"{data / 'big.txt'}:2", "--mix", f"{data / 'small.txt'}:1", *ws,
                         "--max-steps", "6"])
    assert "holds a run with data.mix=" in message


# ---------------------------------------------------------------------------------------------
# bounded validation


@pytest.fixture(scope="module")
def entry(tmp_path_factory) -> store.StoredCorpus:
    d = tmp_path_factory.mktemp("entry")
    (d / "t.txt").write_text(lines_of(WORDS, 40, 2))
    tok = train_tokenizer("char", (d / "t.txt").read_text().splitlines())
    store_build.build_corpus(d / "e", [str(d / "t.txt")], [file_fingerprint(d / "t.txt")], tok, workers=1)
    return store.open_corpus(d / "e")


def test_the_cap_keeps_the_whole_first_lines_that_fit(entry):
    first = 30
    ends = entry.line_ends
    start = int(ends[first - 1]) - 1
    exact = int(ends[first + 3]) - start - 1  # tokens to predict in lines first..first+3: exactly 4 lines
    for cap, lines in ((exact, 4), (exact + 1, 4), (exact - 1, 3)):
        ids, size, note = held_out(entry, first, cap)
        assert torch.equal(ids, entry.slice_lines(first, first + lines))
        assert size.tokens == ids.numel() - 1 <= cap
        assert (size.bytes, size.words) == entry.text_size(first, first + lines)
        assert f"validation scores {ids.numel() - 1:,} tokens, those of its first {lines} lines" in note
    assert held_out(entry, first, exact)[0].numel() - 1 == exact
    ids, size, note = held_out(entry, first, 5)  # shorter than one line: cut inside it, no text size
    assert torch.equal(ids, entry.tokens[start:start + 6]) and size == () and "first 5 tokens" in note
    whole, _, note = held_out(entry, first, 0)
    assert torch.equal(whole, entry.slice_lines(first, entry.lines)) and "those of" not in note


def test_a_capped_validation_scores_exactly_the_lines_a_valid_file_of_them_gives(data, tmp_path):
    text = (data / "big.txt").read_text().splitlines(keepends=True)  # 300 lines: 285 train, 15 held out
    (tmp_path / "train.txt").write_text("".join(text[:285]))
    (tmp_path / "valid.txt").write_text("".join(text[285:290]))  # the first 5 held-out lines
    cap = sum(len(line) for line in text[285:290])  # char tokens to predict: each line and its newline
    lines = train([*RNN, str(data / "big.txt"), "-w", str(tmp_path / "capped"), "--max-steps", "6",
                   "--valid-tokens", str(cap)])
    assert f"validation scores {cap:,} tokens, those of its first 5 lines (data.valid_tokens {cap:,})" \
        in messages(lines)
    train([*RNN, str(tmp_path / "train.txt"), "--valid", str(tmp_path / "valid.txt"),
           "-w", str(tmp_path / "file"), "--max-steps", "6", "--valid-tokens", "0"])
    capped = valid_rows(tmp_path / "capped")
    assert len(capped) == 2 and capped == valid_rows(tmp_path / "file")  # every evaluation: the same 5 lines
    # text from stdin (in memory) is capped the same way
    train([*RNN, "-", "-w", str(tmp_path / "stdin"), "--max-steps", "6", "--valid-tokens", str(cap + 3)],
          stdin=(data / "big.txt").read_text())
    assert valid_rows(tmp_path / "stdin") == capped


def test_a_bad_valid_tokens_is_one_error_line(data, tmp_path):
    message = one_error([*RNN, str(data / "big.txt"), "-w", str(tmp_path / "ws"), "--max-steps", "2",
                         "--valid-tokens", "-1"])
    assert "data.valid_tokens must be ≥ 0" in message


def test_a_workspace_written_before_the_new_data_keys_resumes(data, tmp_path):
    ws = tmp_path / "ws"
    train([*RNN, str(data / "big.txt"), "-w", str(ws), "--max-steps", "3"])
    meta = yaml.safe_load((ws / "seqtool.yaml").read_text())
    for key in ("mix", "valid_tokens"):  # as an older seqtool wrote it
        del meta["config"]["data"][key]
    (ws / "seqtool.yaml").write_text(yaml.safe_dump(meta))
    lines = train([*RNN, str(data / "big.txt"), "-w", str(ws), "--max-steps", "6"])
    assert "resumed from step-0000003" in messages(lines)
