"""`seqtool bleu` and seqtool.metrics: same numbers as sacrebleu's API, breakdown, errors, no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sacrebleu
from typer.testing import CliRunner

from seqtool.cli import app
from seqtool.metrics import (
    BleuOptions,
    corpus_scores,
    paired_bootstrap,
    scores_by_length,
    sentence_scores,
    tokenisation_warning,
)

HYP = ["The cat sat on the mat.", "", "A quick brown fox jumps over the lazy dog!",
       "It rains today, he said.", "Ich bin ein Berliner."]
REF_A = ["The cat is sitting on the mat.", "Nothing here.", "The quick brown fox jumped over the lazy dog!",
         "Today it rains, he said.", "I am a Berliner."]
REF_B = ["A cat sat on a mat.", "", "A fast brown fox jumps over a lazy dog.",
         "He said it rains today.", "I am from Berlin."]
HYP2 = ["The cat sat on a mat.", "Nothing.", "A brown fox jumps over the dog!", "It rains.", "I am."]


def run(args: list[str], stdin: str | None = None):
    return CliRunner().invoke(app, args, input=stdin)


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, lines in (("hyp", HYP), ("a", REF_A), ("b", REF_B), ("hyp2", HYP2)):
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}


@pytest.mark.parametrize("tokenize", ["13a", "intl", "char", "zh", "none"])
@pytest.mark.parametrize("lowercase", [False, True])
def test_corpus_bleu_equals_sacrebleu_multiple_refs(tokenize, lowercase):
    options = BleuOptions(tokenize=tokenize, lowercase=lowercase)
    ours = corpus_scores(HYP, [REF_A, REF_B], ["bleu"], options)[0]
    theirs = sacrebleu.corpus_bleu(HYP, [REF_A, REF_B], tokenize=tokenize, lowercase=lowercase)
    assert ours.score == theirs.score
    assert ours.details["counts"] == theirs.counts and ours.details["totals"] == theirs.totals
    assert ours.details["bp"] == theirs.bp and ours.details["sys_len"] == theirs.sys_len
    assert "nrefs:2" in ours.signature and f"tok:{tokenize}" in ours.signature


@pytest.mark.parametrize("method,value", [("exp", None), ("floor", 0.1), ("add-k", 1), ("none", None)])
def test_smoothing_and_max_ngram(method, value):
    for n in (1, 2, 3, 4):
        ours = corpus_scores(HYP, [REF_A], ["bleu"], BleuOptions(smooth_method=method, smooth_value=value,
                                                                max_ngram=n))[0]
        theirs = sacrebleu.metrics.BLEU(smooth_method=method, smooth_value=value,
                                        max_ngram_order=n).corpus_score(HYP, [REF_A])
        assert ours.score == theirs.score
        assert len(ours.details["precisions"]) == n
        assert ours.name == ("BLEU" if n == 4 else f"BLEU-{n}")


def test_chrf_ter_and_empty_hypotheses():
    empty = [""] * len(REF_A)
    scores = corpus_scores(empty, [REF_A, REF_B], ["bleu", "chrf", "ter"])
    assert [s.score for s in scores] == [sacrebleu.corpus_bleu(empty, [REF_A, REF_B]).score,
                                         sacrebleu.corpus_chrf(empty, [REF_A, REF_B]).score,
                                         sacrebleu.corpus_ter(empty, [REF_A, REF_B]).score]
    assert scores[0].score == 0.0 and scores[0].details["sys_len"] == 0


def test_sentence_scores_equal_sacrebleu():
    rows, signatures = sentence_scores(HYP, [REF_A, REF_B], ["bleu", "chrf"])
    for hyp, a, b, row in zip(HYP, REF_A, REF_B, rows, strict=False):
        assert row["BLEU"] == sacrebleu.sentence_bleu(hyp, [a, b]).score
        assert row["chrF2"] == sacrebleu.sentence_chrf(hyp, [a, b]).score
    assert "eff:yes" in signatures["BLEU"]


def test_paired_bootstrap_matches_sacrebleu():
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    (ours,) = paired_bootstrap(HYP, HYP2, [REF_A], ["bleu"], n_samples=200)
    _, theirs = PairedTest([("a", HYP), ("b", HYP2)], {"BLEU": BLEU(references=[REF_A])}, None,
                           test_type="bs", n_samples=200)()
    assert ours.p_value == theirs["BLEU"][1].p_value and ours.system_ci == theirs["BLEU"][1].ci
    assert ours.baseline == theirs["BLEU"][0].score and "bs:200" in ours.signature


def test_tokenisation_warning():
    assert tokenisation_warning(["the c@@ at sat", "on the m@@ at"]) is not None
    assert tokenisation_warning(["▁the ▁cat", "▁sat"]) is not None
    assert tokenisation_warning(["the cat sat .", "he said , no ."]) is not None
    assert tokenisation_warning(["The cat sat.", "He said, no."]) is None


def test_cli_breakdown_signature_and_json(files):
    result = run(["bleu", files["hyp"], files["a"], files["b"], "--metrics", "bleu,chrf,ter"])
    assert result.exit_code == 0, result.output
    expected = sacrebleu.corpus_bleu(HYP, [REF_A, REF_B])
    assert f"BLEU = {expected.score:.2f}" in result.stdout
    assert "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:" in result.stdout
    assert "1-gram precision (clipped)" in result.stdout and "brevity penalty" in result.stdout
    assert "chrF2 = " in result.stdout and "TER = " in result.stdout
    data = json.loads(run(["bleu", files["hyp"], files["a"], "--json", "-tok", "intl", "-lc",
                           "--smooth-method", "floor", "--smooth-value", "0.2", "--max-ngram", "3"]).stdout)
    theirs = sacrebleu.metrics.BLEU(tokenize="intl", lowercase=True, smooth_method="floor", smooth_value=0.2,
                                    max_ngram_order=3).corpus_score(HYP, [REF_A])
    assert data[0]["score"] == theirs.score and data[0]["name"] == "BLEU-3"


def _sacrebleu_cli(hyp: str, refs: list[str], *args: str) -> list[dict]:
    """The real `sacrebleu` command line on the same files: JSON with 6 decimals."""
    command = [sys.executable, "-m", "sacrebleu", *refs, "-i", hyp, "-f", "json", "-w", "6", *args]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    return data if isinstance(data, list) else [data]


@pytest.mark.parametrize("flags", [[], ["-lc"], ["--chrf-lowercase", "--ter-case-sensitive"]])
def test_cli_equals_the_sacrebleu_command_line_case_bom_and_chrf_plus_plus(tmp_path, flags):
    """Same scores, names and signatures as `sacrebleu` for mixed-case text and a BOM-opened file:
    TER ignores case by default, -lc is BLEU-only, chrf++ is --chrf-word-order 2, the BOM is text."""
    hyp, ref_a, ref_b = tmp_path / "hyp.txt", tmp_path / "a.txt", tmp_path / "b.txt"
    hyp.write_text("\ufeff" + "\n".join(h.upper() if i % 2 else h for i, h in enumerate(HYP)) + "\n",
                   encoding="utf-8")
    ref_a.write_text("\n".join(REF_A) + "\n", encoding="utf-8")
    ref_b.write_text("\ufeff" + "\n".join(REF_B) + "\n", encoding="utf-8")
    refs = [str(ref_a), str(ref_b)]
    for ours_m, theirs_m in (("bleu,chrf,ter", ["bleu", "chrf", "ter"]),
                             ("chrf++", ["chrf", "--chrf-word-order", "2"])):
        theirs = _sacrebleu_cli(str(hyp), refs, "-m", *theirs_m, *flags)
        result = run(["bleu", str(hyp), *refs, "-m", ours_m, "--json", *flags])
        assert result.exit_code == 0, result.output
        ours = json.loads(result.stdout)
        assert [(s["name"], s["signature"]) for s in ours] == [(t["name"], t["signature"]) for t in theirs]
        assert [round(s["score"], 6) for s in ours] == [t["score"] for t in theirs]


def test_a_bom_is_scored_as_text_as_sacrebleu_does(tmp_path, files):
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + "".join(line + "\n" for line in REF_A).encode())
    for hyp, ref in ((str(bom), files["a"]), (files["a"], str(bom))):
        theirs = _sacrebleu_cli(hyp, [ref], "-m", "bleu", "chrf")
        ours = json.loads(run(["bleu", hyp, ref, "-m", "bleu,chrf", "--json"]).stdout)
        assert [round(s["score"], 6) for s in ours] == [t["score"] for t in theirs]
        assert ours[0]["score"] < 100


def test_cli_stdin_sentence_and_compare(files):
    text = "".join(line + "\n" for line in HYP)
    result = run(["bleu", "-", files["a"], "--sentence"], stdin=text)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(HYP)
    assert float(lines[0]) == round(sacrebleu.sentence_bleu(HYP[0], [REF_A[0]]).score, 2)
    assert "signature" in result.stderr
    rows = [json.loads(line) for line in run(["bleu", files["hyp"], files["a"], "--sentence", "--json",
                                              "-m", "bleu,ter"]).stdout.splitlines()]
    assert set(rows[0]) == {"BLEU", "TER"}
    result = run(["bleu", files["hyp"], files["a"], "--compare", files["hyp2"], "--bootstrap-samples", "100"])
    assert result.exit_code == 0 and "p = " in result.stdout and "bs:100" in result.stdout
    data = json.loads(run(["bleu", files["hyp"], files["a"], "--compare", files["hyp2"], "--json",
                           "--bootstrap-samples", "50"]).stdout)
    assert 0 <= data["comparison"][0]["p_value"] <= 1


def _by_length_corpus() -> tuple[list[str], list[str]]:
    """Lines of 3..44 plain words (13a splits them at the spaces): every default bucket is filled."""
    words = ["the", "cat", "sat", "on", "a", "mat", "while", "dogs", "ran", "over", "green", "hills", "and"]
    refs = [" ".join(words[(i + j) % len(words)] for j in range(n)) for i, n in enumerate(range(3, 45, 3))]
    hyps = [" ".join(ref.split()[: max(1, len(ref.split()) - i % 4)]) for i, ref in enumerate(refs)]
    return hyps, refs


def test_bleu_by_length_equals_sacrebleu_on_each_bucket(tmp_path):
    hyps, refs = _by_length_corpus()
    buckets = scores_by_length(hyps, [refs], ["bleu", "chrf"])
    assert [b.label for b in buckets] == ["≤10", "11-20", "21-30", "31-40", "41+"]
    assert sum(b.segments for b in buckets) == len(hyps)
    for b in buckets:
        rows = [i for i, r in enumerate(refs) if b.low <= len(r.split()) <= (b.high or 10**6)]
        assert b.segments == len(rows) > 0
        subset = [hyps[i] for i in rows], [[refs[i] for i in rows]]
        assert b.scores[0].score == sacrebleu.corpus_bleu(*subset).score
        assert b.scores[1].score == sacrebleu.corpus_chrf(*subset).score
    # the command line: a table (one row per bucket, '-' for an empty one) and --json
    (tmp_path / "h").write_text("\n".join(hyps) + "\n")
    (tmp_path / "r").write_text("\n".join(refs) + "\n")
    result = run(["bleu", str(tmp_path / "h"), str(tmp_path / "r"), "--by-length",
                  "--length-edges", "6,100,200"])
    assert result.exit_code == 0, result.output
    table = [line.split() for line in result.stdout.splitlines()]
    assert table[0] == ["ref", "tokens", "segments", "BLEU"] and [row[0] for row in table[1:]] == [
        "≤6", "7-100", "101-200", "201+"]
    assert table[1][1:] == ["2", f"{sacrebleu.corpus_bleu(hyps[:2], [refs[:2]]).score:.2f}"]
    assert table[3][1:] == ["0", "-"] and "BLEU signature" in result.stderr
    data = json.loads(run(["bleu", str(tmp_path / "h"), str(tmp_path / "r"), "--by-length", "--json"]).stdout)
    assert [d["segments"] for d in data] == [b.segments for b in buckets]
    assert data[-1]["max_tokens"] is None and data[0]["scores"][0]["score"] == buckets[0].scores[0].score
    for bad in (["--length-edges", "20,10"], ["--length-edges", "x"], ["--sentence"]):
        result = run(["bleu", str(tmp_path / "h"), str(tmp_path / "r"), "--by-length", *bad])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output


def test_cli_warns_about_tokenised_hypothesis(tmp_path, files):
    tok = tmp_path / "tok.txt"
    tok.write_text("".join(h.replace(".", " .").replace(",", " ,") + "\n" for h in REF_A))
    result = run(["bleu", str(tok), files["a"]])
    assert result.exit_code == 0 and "looks tokenised" in result.stderr


def test_cli_errors(tmp_path, files):
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    result = run(["bleu", str(short), files["a"]])
    assert result.exit_code == 2
    assert "1 lines" in result.stderr and "5" in result.stderr and result.stderr.count("\n") == 1
    assert run(["bleu", files["hyp"], str(tmp_path / "missing.txt")]).exit_code == 2
    assert run(["bleu", files["hyp"], files["a"], "--metrics", "meteor"]).exit_code == 2
    assert run(["bleu", files["hyp"], files["a"], "--tokenize", "moses"]).exit_code == 2
    assert run(["bleu", files["hyp"], files["a"], "--max-ngram", "5"]).exit_code == 2
    assert run(["bleu", "-", "-"], stdin="a\n").exit_code == 2


def test_bleu_does_not_import_torch(files):
    code = ("import sys\nfrom seqtool.cli import main\nsys.argv = ['seqtool', 'bleu', {!r}, {!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'bleu imported torch'\n").format(files["hyp"], files["a"])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "BLEU = " in proc.stdout
