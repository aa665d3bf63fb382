"""Config: YAML round trips, unknown keys, wrong types, precedence, durations."""

from __future__ import annotations

import dataclasses
import re

import pytest

from seqtool.config import (
    DataConfig,
    OptimConfig,
    RunConfig,
    TokenizerConfig,
    dump_yaml,
    from_dict,
    load_yaml,
    parse_duration,
    resolve,
)
from seqtool.errors import InputError


@dataclasses.dataclass
class Cfg:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


def test_yaml_round_trip(tmp_path):
    cfg = resolve(Cfg, sets=["optim.lr=0.01", "data.train=[a.txt, b.txt]", "run.time_budget=10m"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert resolve(Cfg, path) == cfg


def test_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.5\n  clip: 2.0\nrun:\n  batch_size: 8\n")
    cfg = resolve(Cfg, path, options={"optim.lr": 0.25, "run.batch_size": None}, sets=["optim.clip=3"])
    assert cfg.optim.lr == 0.25  # named option beats the file
    assert cfg.optim.clip == 3.0  # --set beats everything
    assert cfg.run.batch_size == 8  # an option left unset does not override the file
    assert cfg.tokenizer.kind == "char"  # defaults fill the rest


def test_unknown_key_names_it(tmp_path):
    with pytest.raises(InputError, match="optim.lrr"):
        resolve(Cfg, sets=["optim.lrr=1"])
    with pytest.raises(InputError, match="unknown config key 'modle'"):
        from_dict(Cfg, {"modle": {}})


@pytest.mark.parametrize("item, key", [("run.batch_size=abc", "run.batch_size"),
                                       ("optim.lr=[1]", "optim.lr"),
                                       ("run.compile=3", "run.compile"),
                                       ("tokenizer.kind=morse", "tokenizer.kind")])
def test_bad_types_name_the_key(item, key):
    with pytest.raises(InputError, match=key.replace(".", r"\.")):
        resolve(Cfg, sets=[item])


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: [1, 2\n")
    with pytest.raises(InputError, match=r"bad\.yaml:\d+"):
        load_yaml(path)


def test_workspace_yaml_is_a_config(tmp_path):
    path = tmp_path / "seqtool.yaml"
    path.write_text("format_version: 1\nkind: rnn-lm\nconfig:\n  optim:\n    lr: 0.125\n")
    assert resolve(Cfg, path).optim.lr == 0.125
    assert resolve(Cfg, tmp_path).optim.lr == 0.125


@dataclasses.dataclass
class Model:
    n_layers: int = 1
    hidden: int = 8


@dataclasses.dataclass
class WithModel:
    model: Model = dataclasses.field(default_factory=Model)


def test_renamed_key_model_layers_reads_as_model_n_layers(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  layers: 3\n")  # train-rnn's key before it was named as in the other models
    assert resolve(WithModel, path).model.n_layers == 3
    assert resolve(WithModel, path, base={"model": {"n_layers": 2}}).model.n_layers == 3  # the file wins
    assert resolve(WithModel, sets=["model.layers=4"]).model.n_layers == 4
    ws_yaml = tmp_path / "seqtool.yaml"
    ws_yaml.write_text("format_version: 1\nkind: rnn-lm\nconfig:\n  model:\n    layers: 5\n")
    assert resolve(WithModel, ws_yaml).model.n_layers == 5
    path.write_text("model:\n  layers: 3\n  n_layers: 2\n")
    with pytest.raises(InputError, match="unknown config key 'model.layers'"):
        resolve(WithModel, path)


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("1h30m", 5400), ("90", 90), ("90s", 90),
                                           ("1.5h", 5400), ("", None)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration():
    with pytest.raises(InputError, match="duration"):
        parse_duration("ten minutes")


@pytest.mark.parametrize("item, key", [("optim.lr=.nan", "optim.lr"), ("optim.lr=.inf", "optim.lr"),
                                       ("optim.clip=.nan", "optim.clip"), ("run.epochs=.nan", "run.epochs"),
                                       ("run.epochs=-1", "run.epochs"), ("run.max_steps=-1", "run.max_steps"),
                                       ("run.patience=-1", "run.patience"),
                                       ("run.max_bad_steps=-1", "run.max_bad_steps"),
                                       ("run.log_every=0", "run.log_every"),
                                       (f"run.seed={2**64}", "run.seed"),
                                       (f"tokenizer.vocab_size={10**12}", "tokenizer.vocab_size")])
def test_meaningless_values_name_the_key_and_the_valid_range(item, key):
    with pytest.raises(InputError, match=rf"^{re.escape(key)} must be .*[0-9]"):
        resolve(Cfg, sets=[item])


def test_a_run_with_no_end_is_refused():
    with pytest.raises(InputError, match="no end"):
        RunConfig().require_end()
    for end in ({"max_steps": 1}, {"epochs": 0.5}, {"time_budget": "1m"}):
        RunConfig(**end).require_end()
