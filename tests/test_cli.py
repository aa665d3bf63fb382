"""The app's conventions: --help lists every command, --version, exit codes, one-line errors, info."""

from __future__ import annotations

import json
import subprocess
import sys

from seqtool import __version__
from seqtool.cli import COMMANDS, app
from seqtool.workspace import Workspace


def test_help_lists_every_command(cli):
    result = cli(["--help"])
    assert result.exit_code == 0
    for name, _ in COMMANDS:
        assert name in result.stdout


def test_every_command_help_has_an_example(cli):
    for name, _ in COMMANDS:
        result = cli([name, "--help"])
        assert result.exit_code == 0, name
        assert "seqtool " + name in result.stdout, f"{name} --help shows no runnable example"


def test_version(cli):
    result = cli(["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_bad_option_is_usage_error(cli):
    result = cli(["info", "--no-such-option"])
    assert result.exit_code == 2


def test_bad_log_format(cli):
    assert cli(["--log-format", "xml", "info"]).exit_code == 2


def test_info_on_missing_workspace(cli, tmp_path):
    result = cli(["info", "-w", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    assert result.stdout == ""


def test_info_json_and_global_workspace(cli, tmp_path):
    Workspace.create(tmp_path / "ws", "rnn-lm", {"model": {"hidden": 8}})
    result = cli(["-w", str(tmp_path / "ws"), "info", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "rnn-lm" and data["parameters"] is None and data["status"] == "untrained"
    assert cli(["info", "-w", str(tmp_path / "ws")]).exit_code == 0


def test_no_traceback_without_debug(tmp_path):
    cmd = [sys.executable, "-m", "seqtool", "info", "-w", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    proc = subprocess.run([sys.executable, "-m", "seqtool", "--debug", "info", "-w", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_app_object_is_typer():
    assert app.info.name == "seqtool"


def test_closed_pipe_exits_quietly(tmp_path):
    """`seqtool tokenize big.txt | head -1`: the reader going away is not an error."""
    corpus = tmp_path / "big.txt"
    corpus.write_text("the cat sat on the mat\n" * 200_000)
    subprocess.run([sys.executable, "-m", "seqtool", "build-vocab", str(corpus), "--kind", "char",
                    "--sample", "1000", "-o", str(tmp_path / "tok")], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "seqtool", "tokenize", "-t", str(tmp_path / "tok"),
                             str(corpus)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"error" not in err
