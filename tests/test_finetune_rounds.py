"""finetune on every Transformer arch (encoder-decoder, encoder/MLM), and its rounds: --resume
auto|never, a cron job's repeated runs, and --promote-if-better against what the workspace publishes."""

from __future__ import annotations

import json

import yaml

from seqtool.workspace import Workspace
from tests.test_cli_train_transformer import TINY, corpus, pairs
from tests.test_finetune import COMMON, NEW, _lm_workspace


def ok(result):
    assert result.exit_code == 0, result.stderr + result.stdout
    return result


def _finetune(cli, *args):
    return cli(["finetune", *map(str, args)])


def _events(path, name):
    return [e for e in Workspace.open(path).read_metrics() if e.get("event") == name]


def test_transformer_mt_continued_training_full_and_lora(cli, tmp_path, tmp_text):
    tsv = tmp_text(pairs(), name="pairs.tsv")
    ok(cli(["train-transformer", "-w", tmp_path / "mt", "--arch", "encoder-decoder", "--tsv", tsv, "--kind",
            "word", "--batch-tokens", "200", *TINY]))
    new = tmp_text("one two\tun deux\nsix five four\tsix cinq quatre\n" * 20, name="new.tsv")
    run = ("--max-steps", 3, "--eval-every", 3, "--device", "cpu", "--lr", 1e-3)
    ok(_finetune(cli, "--from", tmp_path / "mt", "--tsv", new, "-w", tmp_path / "full", *run))
    ok(_finetune(cli, "--from", tmp_path / "mt", "--tsv", new, "-w", tmp_path / "lora", *run,
                 "--lora-rank", 2, "--lora-targets", "q,v,o,mlp"))
    for name, extra in (("full", []), ("lora", ["--adapter", "default"])):
        ws = Workspace.open(tmp_path / name)
        assert ws.kind == "transformer-mt" and ws.status["state"] == "finished"
        assert "bleu" in _events(tmp_path / name, "valid")[-1]
        out = ok(cli(["translate", "-w", tmp_path / name, *extra], input="one two three\nsix\n"))
        assert len(out.stdout.splitlines()) == 2
    assert Workspace.open(tmp_path / "lora").adapters() == ["default"]
    a, _ = Workspace.open(tmp_path / "mt").load_published()
    b, _ = Workspace.open(tmp_path / "full").load_published()
    assert any(not (a[k] == b[k]).all() for k in a)  # full fine-tuning moved the weights


def test_transformer_mlm_continued_training_full_and_lora(cli, tmp_path, tmp_text):
    ok(cli(["train-transformer", tmp_text(corpus()), "-w", tmp_path / "mlm", "--arch", "encoder", "--kind",
            "word", "--block-size", "16", *TINY]))
    new = tmp_text("\n".join(reversed(corpus().splitlines())) + "\n", name="new.txt")  # same words
    run = ("--max-steps", 4, "--eval-every", 2, "--batch-size", 4, "--device", "cpu", "--lr", 1e-3)
    ok(_finetune(cli, "--from", tmp_path / "mlm", "--data", new, "-w", tmp_path / "full", *run))
    ok(_finetune(cli, "--from", tmp_path / "mlm", "--data", new, "-w", tmp_path / "lora", *run,
                 "--lora-rank", 2))
    for name, extra in (("full", []), ("lora", ["--adapter", "default"])):
        assert Workspace.open(tmp_path / name).kind == "transformer-mlm"
        valid = _events(tmp_path / name, "valid")
        assert valid and 0.0 <= valid[-1]["accuracy"] <= 1.0 and valid[-1]["masked_tokens"] > 0
        out = ok(cli(["generate", "-w", tmp_path / name, *extra, "--fill", "the cat <mask> on a mat"]))
        assert out.stdout.splitlines()[1].startswith("<mask> 1:")
        out = ok(cli(["evaluate", "-w", tmp_path / name, *extra]))  # the fixed validation text in WS/data
        assert "masked-token accuracy" in out.stdout


def test_rounds_resume_auto_and_never(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    args = ("--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", *COMMON)
    ok(_finetune(cli, *args))
    # the same command on the same data: the round has finished, nothing to do (a requeued job)
    assert "nothing to do" in ok(_finetune(cli, *args)).stderr
    # new data (the nightly cron job): a new round from the source
    new.write_text(NEW + "melt the butter\n" * 5, encoding="utf-8")
    result = ok(_finetune(cli, *args))
    assert "starting a new one (new data)" in result.stderr and "resumed" not in result.stderr
    # an interrupted round resumes; with a setting it cannot change, it is refused in one line
    ws = Workspace.open(tmp_path / "ft")
    ws.update_status(state="preempted")
    result = _finetune(cli, *args[:-len(COMMON)], *COMMON[:5], 8, *COMMON[6:])  # another --batch-size
    assert result.exit_code == 2 and "unfinished fine-tuning run with run.batch_size=4" in result.stderr
    assert "--resume never" in result.stderr
    result = ok(_finetune(cli, *args[:-len(COMMON)], *COMMON[:1], 9, *COMMON[2:]))
    assert "resumed from" in result.stderr
    assert max(e.get("step", 0) for e in Workspace.open(tmp_path / "ft").read_metrics()) == 9
    # --resume never: a new round, step 0 onwards
    result = ok(_finetune(cli, *args, "--resume", "never"))
    assert "resumed" not in result.stderr and Workspace.open(tmp_path / "ft").status["step"] == 6
    assert _finetune(cli, *args, "--resume", "sometimes").exit_code == 2


def test_promote_compares_with_what_the_workspace_publishes(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    into = ("--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", "--promote-if-better")
    ok(_finetune(cli, *into, *COMMON))
    first = _events(tmp_path / "ft", "promote")[-1]
    assert first["decision"] == "promoted" and first["step"] == 6
    published, _ = Workspace.open(tmp_path / "ft").load_published()
    # a new round from the untrained base must beat the fine-tuned weights, not the base's
    ok(_finetune(cli, *into, "--resume", "never", "--max-steps", 1, "--lr", 1e-9, "--batch-size", 4,
                 "--context", 16, "--set", "optim.optimizer=sgd"))
    second = _events(tmp_path / "ft", "promote")[-1]
    assert second["decision"] == "kept"
    assert abs(second["baseline"] - first["candidate"]) < 1e-6 < first["baseline"] - second["baseline"]
    after, _ = Workspace.open(tmp_path / "ft").load_published()
    assert all((after[k] == published[k]).all() for k in published)
    # another tokenizer (an extended vocabulary) makes the comparison meaningless: refused
    grown = tmp_text(NEW + "zesty jam!\n" * 5, name="grown.txt")
    ok(_finetune(cli, "--from", tmp_path / "base", "--data", grown, "-w", tmp_path / "ext", "--extend-vocab",
                 *COMMON))
    result = _finetune(cli, "--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ext",
                       "--promote-if-better", *COMMON)
    assert result.exit_code == 2 and "another tokenizer" in result.stderr


def test_json_log_ends_with_the_summary(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    result = ok(cli(["--log-format", "json", "finetune", "--from", str(tmp_path / "base"), "--data", str(new),
                     "-w", str(tmp_path / "ft"), *map(str, COMMON)]))
    lines = [json.loads(line) for line in result.stderr.splitlines() + result.stdout.splitlines() if line]
    summaries = [i for i, e in enumerate(lines) if e.get("event") == "summary"]
    assert summaries and lines[summaries[-1]]["status"] == "finished"
    # a failure before training still ends with one summary line (here: a missing data file)
    result = cli(["--log-format", "json", "finetune", "--from", str(tmp_path / "base"), "--data",
                  str(tmp_path / "missing.txt"), "-w", str(tmp_path / "ft2"), "--max-steps", "1"])
    assert result.exit_code == 2
    last = json.loads(result.stderr.strip().splitlines()[-1])
    assert last["event"] == "summary" and last["exit_code"] == 2
    assert yaml.safe_load((tmp_path / "ft" / "seqtool.yaml").read_text())["status"]["state"] == "finished"


def test_finetune_under_torchrun_two_ranks(tmp_path, tmp_text):
    """Two gloo ranks fine-tune one workspace: rank 0 alone writes, the run finishes once, and the
    weights moved (about 15 s on 2 cores)."""
    from tests.test_distributed import torchrun

    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    result = torchrun(2, "-m", "seqtool", "--log-format", "json", "finetune", "--from",
                      str(tmp_path / "base"), "--data", str(new), "-w", str(tmp_path / "ft"),
                      "--promote-if-better", *map(str, COMMON), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    events = Workspace.open(tmp_path / "ft").read_metrics()
    assert sum(e["event"] == "summary" for e in events) == 1
    assert sum(e["event"] == "promote" for e in events) == 1
    assert [e["step"] for e in events if e["event"] == "valid"] == [3, 6]
    assert not (tmp_path / "ft" / ".lock").exists()
    assert Workspace.open(tmp_path / "ft").status["state"] == "finished"


def test_a_resumed_round_keeps_its_extended_vocabulary(cli, tmp_path, tmp_text):
    from seqtool.data.tokenizers import load_tokenizer

    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW + "zesty jam!\n" * 10, name="new.txt")
    args = ("--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", "--extend-vocab")
    ok(_finetune(cli, *args, *COMMON))
    size = load_tokenizer(tmp_path / "ft" / "tokenizer").vocab_size
    Workspace.open(tmp_path / "ft").update_status(state="preempted")
    new.write_text(NEW + "quick fox?\n" * 10, encoding="utf-8")  # other unknown symbols now
    result = ok(_finetune(cli, *args, *COMMON[:1], 8, *COMMON[2:]))
    assert "resumed from" in result.stderr and "'q'" in result.stderr  # reported, not added mid-round
    assert load_tokenizer(tmp_path / "ft" / "tokenizer").vocab_size == size


def test_a_glob_of_data_files_is_recorded_and_new_files_start_a_round(cli, tmp_path, tmp_text):
    _lm_workspace(tmp_path / "base")
    tmp_text(NEW, name="day1.txt")
    args = ("--from", tmp_path / "base", "--data", tmp_path / "day*.txt", "-w", tmp_path / "ft", *COMMON)
    ok(_finetune(cli, *args))
    assert [f["path"] for f in Workspace.open(tmp_path / "ft").meta["data"]] == [str(tmp_path / "day1.txt")]
    tmp_text(NEW, name="day2.txt")  # the cron job's next file
    assert "starting a new one (new data)" in ok(_finetune(cli, *args)).stderr


def test_kill_9_before_the_finished_status_does_not_jam_the_nightly_rounds(cli, tmp_path, tmp_text):
    """A round killed after its final checkpoint but before its status said `finished`: the same command
    settles the status, and new data starts the next round (a real kill -9, see tests/test_faults.py)."""
    from tests.test_faults import run_killed_before_finished_status

    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    args = ["--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", "--promote-if-better", *COMMON]
    run_killed_before_finished_status(["finetune", *map(str, args)])
    assert Workspace.open(tmp_path / "ft").status["state"] == "running"
    assert "nothing to do" in ok(_finetune(cli, *args)).stderr
    assert Workspace.open(tmp_path / "ft").status["state"] == "finished"
    # killed again at the end of the next night's round; the night after brings new data once more
    new.write_text(NEW + "melt the butter\n" * 5, encoding="utf-8")
    run_killed_before_finished_status(["finetune", *map(str, args)])
    assert Workspace.open(tmp_path / "ft").status["state"] == "running"
    new.write_text(NEW + "whisk the eggs\n" * 5, encoding="utf-8")
    result = ok(_finetune(cli, *args))
    assert "starting a new one (new data)" in result.stderr and "nothing to do" not in result.stderr
    assert Workspace.open(tmp_path / "ft").status["state"] == "finished"
    assert len(_events(tmp_path / "ft", "promote")) == 1  # the killed rounds never got to record theirs


def test_finetune_takes_over_a_stale_lock_with_a_warning(cli, tmp_path, tmp_text):
    import os
    import socket
    import subprocess
    import sys

    _lm_workspace(tmp_path / "base")
    new = tmp_text(NEW, name="new.txt")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / ".lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    result = ok(_finetune(cli, "--from", tmp_path / "base", "--data", new, "-w", tmp_path / "ft", *COMMON))
    assert f"took over a stale lock of pid {dead}" in result.stderr
    assert not (tmp_path / "ft" / ".lock").exists() and os.path.isdir(tmp_path / "ft" / "checkpoints")


def test_a_resumed_round_trains_on_what_an_uninterrupted_one_does(cli, tmp_path, tmp_text):
    """The validation lines a round holds out of --data at its start stay out of training on resume (they
    used to be trained on after a resume: other batches, and validation on trained lines)."""
    from safetensors.torch import load_file

    _lm_workspace(tmp_path / "base")
    letters = "abcdefghij"
    new = tmp_text("".join(f"stir pot {letters[i % 10]}{letters[i // 10]} gently\n" for i in range(40)),
                   name="new.txt")
    rest = COMMON[2:]
    ok(_finetune(cli, "--from", tmp_path / "base", "--data", new, "-w", tmp_path / "straight",
                 "--max-steps", 9, *rest))
    args = ("--from", tmp_path / "base", "--data", new, "-w", tmp_path / "resumed")
    ok(_finetune(cli, *args, "--max-steps", 6, *rest))
    Workspace.open(tmp_path / "resumed").update_status(state="preempted")
    assert "resumed from" in ok(_finetune(cli, *args, "--max-steps", 9, *rest)).stderr
    final = [load_file(tmp_path / name / "checkpoints" / "step-0000009" / "model.safetensors")
             for name in ("straight", "resumed")]
    assert final[0].keys() == final[1].keys()
    assert all(final[0][k].equal(final[1][k]) for k in final[0])
    assert [e["loss"] for e in _events(tmp_path / "resumed", "valid")][-1] == \
        [e["loss"] for e in _events(tmp_path / "straight", "valid")][-1]
