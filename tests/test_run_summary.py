"""The last line of a training command: one summary on every exit path, JSON logs one object per line,
ranks other than 0 silent."""

from __future__ import annotations

import json

import click
import pytest

from seqtool.cli.console import Reporter, final_summary
from seqtool.errors import InputError, RuntimeFailure, TemporaryFailure


def json_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


@pytest.mark.parametrize(("error", "code", "status"), [
    (TemporaryFailure("workspace ws is locked by pid 7 on host h"), 75, "tempfail"),
    (InputError("data file gone.txt does not exist"), 2, "usage-error"),
    (RuntimeFailure("training diverged"), 1, "failed"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_every_error_ends_with_one_summary(capsys, error, code, status):
    rep = Reporter(log_format="json")
    with pytest.raises(click.exceptions.Exit) as done, final_summary(rep, "runs/x"):
        raise error
    assert done.value.exit_code == code
    lines = json_lines(capsys)
    assert [e["event"] for e in lines] == ["error", "summary"]
    assert lines[-1]["status"] == status and lines[-1]["exit_code"] == code
    assert lines[-1]["workspace"] == "runs/x" and lines[-1]["steps"] == 0


def test_a_running_trainer_fills_in_the_summary(capsys):
    rep = Reporter(log_format="json")
    with pytest.raises(click.exceptions.Exit), final_summary(rep, "ws") as outcome:
        outcome.summary = lambda status: {"status": status, "steps": 40, "best_value": 2.5, "workspace": "ws"}
        raise TemporaryFailure("stopped by SIGTERM at step 40")
    last = json_lines(capsys)[-1]
    assert last == {**last, "status": "preempted", "steps": 40, "best_value": 2.5, "exit_code": 75}


def test_success_summary_is_not_repeated(capsys):
    rep = Reporter(log_format="json")
    with final_summary(rep, "ws"):
        rep.event({"event": "train", "step": 1, "loss": 3.0})
        rep.event({"event": "summary", "status": "finished", "steps": 1, "exit_code": 0})
    assert [e["event"] for e in json_lines(capsys)] == ["train", "summary"]
    with final_summary(Reporter(log_format="json"), "ws"):
        pass  # a command that never got to train still says how it ended
    assert json_lines(capsys)[-1]["status"] == "finished"


def test_the_summary_stays_the_last_line(capsys):
    rep = Reporter(log_format="json")
    with final_summary(rep, "ws"):
        rep.event({"event": "summary", "status": "finished", "steps": 3, "exit_code": 0})
        rep.info("sample: ws/samples/step-0000003.txt")
    assert [e["event"] for e in json_lines(capsys)] == ["info", "summary"]
    with pytest.raises(click.exceptions.Exit), final_summary(rep, "ws") as outcome:
        outcome.summary = lambda status: {"status": status, "steps": 3}
        rep.event({"event": "summary", "status": "finished", "steps": 3, "exit_code": 0})
        raise RuntimeFailure("could not write the sample")
    lines = json_lines(capsys)
    assert [e["event"] for e in lines] == ["error", "summary"] and lines[-1]["status"] == "failed"


def test_internal_errors_get_a_summary_and_travel_on(capsys):
    with pytest.raises(ZeroDivisionError), final_summary(Reporter(log_format="json"), "ws"):
        1 / 0  # noqa: B018
    last = json_lines(capsys)[-1]
    assert last["status"] == "failed" and last["exit_code"] == 1 and "ZeroDivisionError" in last["message"]


def test_other_ranks_only_report_errors(capsys):
    rep = Reporter(log_format="json", rank=1)
    rep.event({"event": "train", "step": 1})
    rep.warn("w")
    rep.info("i")
    rep.event({"event": "summary", "status": "finished"})
    rep.error("boom")
    (line,) = json_lines(capsys)
    assert line["event"] == "error" and line["message"] == "boom" and line["rank"] == 1


def test_plain_format_error_line_is_greppable(capsys):
    with pytest.raises(click.exceptions.Exit), final_summary(Reporter(log_format="plain"), "ws"):
        raise TemporaryFailure("locked")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: locked" and err[-1].startswith("summary")
