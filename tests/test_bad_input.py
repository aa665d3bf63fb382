"""Bad input never loses work and never reads as an internal error: one table row per case.

Each row is a command line run in a fresh copy of a few tiny trained workspaces, the exit code and a
pattern its stderr must show, and the files whose bytes must not change (and those that must not be
created: bad values are refused before any work). Rows that close a stream run as real processes;
the rest run in-process through the app. A new command joins by adding rows.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqtool.cli import app

RNN = "--cell gru --n-layers 1 --hidden 8 --embedding 8 --batch-size 4 --set data.bptt=8 --eval-every 2 " \
      "--device cpu --kind char"
TRAIN = f"train-rnn train.txt -w new {RNN}"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "red", "hat"]


def invoke(argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, shlex.split(argv))
    return result.exit_code, result.stderr


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """rnn, rnn2 (two unrelated char RNN LMs), tlm (a Transformer LM), ft (a LoRA round on tlm) and s2s
    (an RNN seq2seq)."""
    root = tmp_path_factory.mktemp("base")
    rng = random.Random(0)
    (root / "train.txt").write_text("".join(" ".join(rng.choice(WORDS) for _ in range(6)) + "\n"
                                            for _ in range(60)))
    (root / "bad.tsv").write_text("the cat\tle chat\nred hat\tchapeau\trouge\n")
    (root / "pairs.tsv").write_text("".join(f"{a} {b}\t{b} {a}\n" for a in WORDS for b in WORDS[:4]))
    (root / "bad.yaml").write_text("run:\n  max_steps: -1\n")
    (root / "plain").write_text("a file, not a directory\n")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for argv in (f"train-rnn train.txt -w rnn {RNN} --max-steps 4 --seed 1",
                     f"train-rnn train.txt -w rnn2 {RNN} --max-steps 4 --seed 2",
                     "train-transformer train.txt -w tlm --arch decoder --n-layers 1 --heads 2 --d-model 8 "
                     "--d-ff 16 --block-size 8 --batch-size 4 --max-steps 4 --eval-every 4 --device cpu "
                     "--kind char",
                     "finetune --from tlm -w ft --data train.txt --lora-rank 2 --lr 0.05 --max-steps 8 "
                     "--eval-every 4 --device cpu --seed 1",
                     "train-seq2seq -w s2s --tsv pairs.tsv --kind word --hidden 8 --embedding 8 --n-layers 1 "
                     "--max-steps 2 --eval-every 2 --device cpu"):
            code, err = invoke(argv)
            assert code == 0, err
    finally:
        os.chdir(cwd)
    return root


def set_json(path: str, **values) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        arch = json.loads((root / path).read_text())
        (root / path).write_text(json.dumps({**arch, **values}))
    return damage


def write(path: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / path).write_text(text)


def copy(src: str, dst: str) -> Callable[[Path], None]:
    return lambda root: shutil.copyfile(root / src, root / dst)


@dataclass
class Case:
    argv: str  # run in a copy of `base`
    code: int
    stderr: str  # a regex that stderr must match
    unchanged: tuple[str, ...] = ()  # files or directories whose bytes must stay the same
    absent: tuple[str, ...] = ()  # paths the command must not create
    shell: str = ""  # redirections (e.g. "<&-"): run as a real process through bash
    process: bool = False  # a real process all the same (one that might never end gets a timeout)
    read_only: str = ""  # a directory that behaves as on a read-only file system
    damage: Callable[[Path], None] | None = None  # applied to the copy before the run


BAD_LOSS = {  # a command must refuse, exit 2, and name the way to do it on purpose
    "build-vocab -o WS": Case("build-vocab train.txt -o rnn --kind char", 2, r"rnn is a workspace.*-w rnn",
                              ("rnn",)),
    "build-vocab -o WS/tokenizer": Case("build-vocab train.txt -o rnn/tokenizer --kind char", 2,
                                        r"trained rnn-lm model.*--force", ("rnn",)),
    "build-vocab -w WS": Case("build-vocab train.txt -w rnn --kind char", 2, r"trained rnn-lm model.*--force",
                              ("rnn",)),
    "finetune into its source": Case("finetune --from rnn -w ./rnn/ --data train.txt --max-steps 2", 2,
                                     r"source workspace.*new -w", ("rnn",)),
    "finetune over another run": Case("finetune --from rnn -w rnn2 --data train.txt --max-steps 2", 2,
                                      r"rnn2 holds another run.*--force", ("rnn2", "rnn")),
    "finetune --merge over a trained workspace": Case("finetune --merge -w ft -o rnn", 2,
                                                      r"rnn holds a trained rnn-lm.*--force", ("rnn", "ft")),
    # --lr 300 makes the round worse; ./tlm names the same source another way (a cron job's cwd)
    "finetune --promote-if-better LoRA, worse round": Case(
        "finetune --from ./tlm -w ft --data train.txt --lora-rank 2 --lr 300 --max-steps 3 --eval-every 1 "
        "--promote-if-better --device cpu --seed 3", 0, r"kept: loss",
        ("ft/model.safetensors", "ft/model.json", "ft/adapters", "ft/tokenizer")),
}

BAD_VALUES = {  # exit 2, one line naming the option and its valid range, before any work
    "--lr nan": Case(f"{TRAIN} --max-steps 2 --lr nan", 2, r"optim\.lr must be a finite number > 0"),
    "--lr inf": Case(f"{TRAIN} --max-steps 2 --lr inf", 2, r"optim\.lr must be a finite number > 0"),
    "--clip nan": Case(f"{TRAIN} --max-steps 2 --clip nan", 2, r"optim\.clip must be a finite number ≥ 0"),
    "--epochs nan": Case(f"{TRAIN} --epochs nan", 2, r"run\.epochs must be a finite number ≥ 0"),
    "--epochs -1": Case(f"{TRAIN} --epochs -1", 2, r"run\.epochs must be a finite number ≥ 0"),
    "--max-steps -5": Case(f"{TRAIN} --max-steps -5", 2, r"run\.max_steps must be .*≥ 0"),
    "--patience -1": Case(f"{TRAIN} --max-steps 2 --patience -1", 2, r"run\.patience must be .*≥ 0"),
    "--max-bad-steps -1": Case(f"{TRAIN} --max-steps 2 --max-bad-steps -1", 2, r"run\.max_bad_steps must be"),
    "run.log_every 0": Case(f"{TRAIN} --max-steps 2 --set run.log_every=0", 2, r"run\.log_every must be"),
    "--seed 2**70": Case(f"{TRAIN} --max-steps 2 --seed {2**70}", 2, r"run\.seed must be in \[0, 2\*\*64"),
    "--vocab-size 10**12": Case(f"{TRAIN} --max-steps 2 --vocab-size {10**12}", 2,
                                r"tokenizer\.vocab_size must be in \[1, 10,000,000\]"),
    "no end": Case(TRAIN, 2, r"the run has no end.*--max-steps", process=True),
    "finetune no end": Case("finetune --from rnn -w new --data train.txt", 2, r"the run has no end",
                            process=True),
    "finetune --lr nan": Case("finetune --from rnn -w new --data train.txt --max-steps 2 --lr nan", 2,
                              r"optim\.lr must be a finite number > 0"),
    "generate --temperature nan": Case("generate -w rnn --temperature nan", 2,
                                       r"--temperature must be a finite number ≥ 0"),
    "generate --seed 2**70": Case(f"generate -w rnn --seed {2**70}", 2, r"--seed must be in \[0, 2\*\*64"),
    "build-vocab --vocab-size 10**12": Case(f"build-vocab train.txt -o new --vocab-size {10**12}", 2,
                                            r"--vocab-size must be in \[1, 10,000,000\]"),
    "--set optim.lr=.nan (YAML NaN)": Case(f"{TRAIN} --max-steps 2 --set optim.lr=.nan", 2,
                                           r"optim\.lr must be a finite number > 0"),
    "--config with run.max_steps -1": Case(f"{TRAIN} --config bad.yaml", 2, r"run\.max_steps must be"),
    "translate --max-len-a nan": Case("translate -w s2s pairs.tsv --max-len-a nan", 2,
                                      r"--max-len-a and --max-len-b must be finite numbers ≥ 0"),
    "translate --length-penalty nan": Case("translate -w s2s pairs.tsv --length-penalty nan", 2,
                                           r"--length-penalty must be a finite number"),
    "translate --beam 10**30": Case(f"translate -w s2s pairs.tsv --beam {10**30}", 2,
                                    r"--beam must be between 1 and 10,000"),
    "evaluate --add-k nan": Case("evaluate -w rnn --baseline ngram --smoothing addk --add-k nan", 2,
                                 r"--add-k must be a finite number > 0"),
    "finetune --context -1": Case("finetune --from rnn -w new --data train.txt --context -1 --max-steps 2", 2,
                                  r"data\.context must be a finite number ≥ 0"),
    "finetune --lora-alpha nan": Case("finetune --from tlm -w new --data train.txt --lora-alpha nan "
                                      "--max-steps 2", 2, r"--lora-alpha must be a finite number"),
    "train-seq2seq --tsv with 3 columns": Case(
        "train-seq2seq -w new --tsv bad.tsv --kind word --hidden 8 --embedding 8 --n-layers 1 --max-steps 2 "
        "--device cpu", 2, r"bad\.tsv:2: 3 tab-separated columns, not 2"),
}
for _case in BAD_VALUES.values():
    _case.absent = () if "seq2seq" in _case.argv else ("new",)  # (train-seq2seq reads the data later)
BAD_VALUES["--n-layers 10**30"] = Case(f"{TRAIN} --max-steps 2 --n-layers {10**30}", 2,
                                       r"model\.n_layers must be in \[1, 1,000\]", process=True)
BAD_VALUES["--hidden too large to allocate"] = Case(f"{TRAIN} --max-steps 2 --hidden {10**10}", 1,
                                                    r"^error: out of memory")
BAD_VALUES["--hidden past 64 bits"] = Case(f"{TRAIN} --max-steps 2 --hidden {10**30}", 1,
                                           r"^error: out of memory: a tensor size does not even fit")

BROKEN_ENVIRONMENT = {
    "tokenize, stdin closed": Case("tokenize -t rnn", 2, r"no input: stdin is closed", shell="<&-"),
    "build-vocab -, stdin closed": Case("build-vocab - -o tok --kind char", 2, r"no input", ("rnn",),
                                        shell="<&-"),
    "train-rnn -, stdin closed": Case(f"train-rnn - -w new {RNN} --max-steps 2", 2, r"no input", shell="<&-"),
    "generate --prompt-file -, stdin closed": Case("generate -w rnn --prompt-file -", 2, r"no input",
                                                   shell="<&-"),
    "tokenize, stdout closed": Case("tokenize -t rnn train.txt", 1, r"stdout is closed", shell=">&-"),
    "generate, stdout closed": Case("generate -w rnn --max-tokens 5", 1, r"stdout is closed", shell=">&-"),
    "--version, stdout closed": Case("--version", 1, r"stdout is closed", shell=">&-"),
    "train-rnn -, stdout closed": Case(f"train-rnn - -w new {RNN} --max-steps 2", 0, r"status finished",
                                       shell="<train.txt >&-"),
    "build-vocab -o under a file": Case("build-vocab train.txt -o plain/tok --kind char", 2,
                                        r"plain is a file", ("plain",)),
    "build-vocab -o read-only": Case("build-vocab train.txt -o ro/tok --kind char", 1,
                                     r"cannot write ro/tok: Read-only file system", read_only="ro"),
    "attention-map -o under a file": Case("attention-map -w s2s --source 'the cat' -o plain/map.png", 2,
                                          r"plain is a file, not a directory", ("plain",)),
    "attention-map -o read-only": Case("attention-map -w s2s --source 'the cat' -o ro/map.png", 1,
                                       r"cannot write ro/map\.png: Read-only file system", read_only="ro"),
    "finetune --merge -o under a file": Case("finetune --merge -w ft -o plain/merged", 2,
                                             r"plain is a file, not a directory", ("plain", "ft")),
    "finetune --merge -o read-only": Case("finetune --merge -w ft -o ro/merged", 1,
                                          r"cannot write ro/merged: Read-only file system", ("ft",),
                                          read_only="ro"),
    "train-rnn -w read-only workspace": Case(f"train-rnn train.txt -w rnn {RNN} --max-steps 8", 1,
                                             r"cannot write rnn/\.lock: Read-only file system", ("rnn",),
                                             read_only="rnn"),
    "model.json of wrong types": Case("generate -w rnn", 2, r"rnn is damaged: model\.json", ("rnn",),
                                      damage=set_json("rnn/model.json", hidden="big")),
    "model.json not an object": Case("generate -w rnn", 2, r"workspace rnn is damaged", ("rnn",),
                                     damage=write("rnn/model.json", "[1, 2]")),
    "seq2seq model.json of wrong values": Case("translate -w s2s pairs.tsv", 2,
                                               r"workspace s2s is damaged: model\.json: model\.attention",
                                               ("s2s",), damage=set_json("s2s/model.json", attention=5)),
    "weights of another architecture": Case("evaluate -w rnn --data train.txt", 2,
                                            r"workspace rnn is damaged: the weights do not fit", ("rnn",),
                                            damage=copy("tlm/model.safetensors", "rnn/model.safetensors")),
    "weights of another size, finetune": Case("finetune --from rnn -w new --data train.txt --max-steps 2", 2,
                                              r"workspace rnn is damaged: the weights do not fit", ("rnn",),
                                              damage=set_json("rnn/model.json", hidden=12)),
}

CASES = {**BAD_LOSS, **BAD_VALUES, **BROKEN_ENVIRONMENT}


def digest(path: Path) -> dict[str, str]:
    """sha256 of each file at or under `path` (a lock file, present only while a command runs, aside)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.name != ".lock"}


def read_only(monkeypatch, root: Path) -> None:
    """What a read-only mount at `root` does, even to root (whom chmod would not stop): creating a
    directory or opening a file for writing under it fails with EROFS."""
    real_mkdir, real_open = os.mkdir, os.open

    def refuse(path) -> None:
        if Path(os.path.abspath(path)).is_relative_to(root):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def mkdir(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


def run(case: Case, where: Path, monkeypatch) -> tuple[int, str]:
    if case.shell or case.process:  # a real process, its streams redirected by the shell
        command = ["bash", "-c", f'exec "$@" {case.shell}', "_", sys.executable, "-m", "seqtool",
                   *shlex.split(case.argv)]
        done = subprocess.run(command, cwd=where, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=120)
        return done.returncode, done.stderr
    monkeypatch.chdir(where)
    if case.read_only:
        (where / case.read_only).mkdir(exist_ok=True)
        read_only(monkeypatch, (where / case.read_only).resolve())
    return invoke(case.argv)


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name, base, tmp_path, monkeypatch):
    case = CASES[name]
    where = tmp_path / "w"
    shutil.copytree(base, where)
    if case.damage is not None:
        case.damage(where)
    before = {path: digest(where / path) for path in case.unchanged}
    code, stderr = run(case, where, monkeypatch)
    monkeypatch.undo()
    assert "internal error" not in stderr and "Traceback" not in stderr, stderr
    assert code == case.code, stderr
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) <= 1, stderr
    assert re.search(case.stderr, errors[0] if errors else stderr, re.MULTILINE), stderr
    for path in case.unchanged:
        assert digest(where / path) == before[path], f"{path} changed"
    for path in case.absent:
        assert not (where / path).exists(), f"{path} was created"
