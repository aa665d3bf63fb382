"""The CLI explains itself: --help shows each option's default (read from the command's config
dataclass) and the choices of each choice option, the shell completes those choices, a bad choice is a
one-line usage error, and the global options work before or after the command name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from seqtool.cli import COMMANDS, evaluate, train, train_seq2seq, train_transformer
from seqtool.cli.options import CONFIGS, config_default, config_keys


def flat(text: str) -> str:
    return " ".join(text.split())  # --help wraps its lines


def test_train_rnn_help_shows_the_config_defaults_and_the_cell_choices(cli):
    from seqtool.models.rnn_lm import RNNLMConfig
    from seqtool.training.lm import TrainRNNConfig

    result = cli(["train-rnn", "--help"])
    assert result.exit_code == 0
    text = flat(result.stdout)
    assert "--cell <rnn|rnn-relu|gru|lstm|ugrnn>" in text
    assert f"[default: {RNNLMConfig().hidden}, from model.hidden]" in text
    assert f"[default: {TrainRNNConfig().optim.lr:g}, from optim.lr]" in text
    assert "[default: tie, from model.tie]" in text and "[default: char, from tokenizer.kind]" in text
    for choices in ("--kind <char|word|bpe|unigram>", "--optimizer <sgd|adam|adamw>",
                    "--precision <auto|fp32|bf16|fp16>", "--resume <auto|never>", "--objective <bptt|window>",
                    "--log-format <auto|rich|plain|json>"):
        assert choices in text


def test_each_training_command_shows_its_own_defaults(cli):
    from seqtool.training.seq2seq import Seq2SeqTrainConfig
    from seqtool.training.transformer import TransformerTrainConfig

    rnn, transformer, seq2seq = (flat(cli([name, "--help"]).stdout)
                                 for name in ("train-rnn", "train-transformer", "train-seq2seq"))
    lr = config_default(TransformerTrainConfig, "optim.lr")
    assert f"[default: {lr:g}, from optim.lr]" in transformer and f"[default: {lr:g}," not in rnn
    assert "[default: inverse-sqrt, from optim.schedule]" in transformer
    assert "--arch <encoder-decoder|decoder|encoder>" in transformer
    assert "--attention <none|additive|dot|general|scaled-dot|cosine|location>" in seq2seq
    attention = config_default(Seq2SeqTrainConfig, "model.attention")
    assert f"[default: {attention}, from model.attention]" in seq2seq


def test_generate_and_translate_show_their_decoding_defaults(cli):
    from seqtool.decoding import DecodeConfig
    from seqtool.translation import TranslateConfig

    generate = flat(cli(["generate", "--help"]).stdout)
    assert f"New tokens per sample, at most. [default: {DecodeConfig().max_tokens}]" in generate
    assert "--format <text|jsonl>" in generate
    translate = flat(cli(["translate", "--help"]).stdout)
    assert f"Sentences decoded together. [default: {TranslateConfig().batch_size}]" in translate
    assert "from batch_size" not in translate  # no --config/--set here: no key to name


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_named_option_names_a_real_config_key(cli, command):
    module, _, name = CONFIGS[command].partition(":")
    config = getattr(__import__(module, fromlist=[name]), name)
    keys = config_keys(dict(COMMANDS)[command])
    assert len(keys) > 4
    text = flat(cli([command, "--help"]).stdout)
    for key in keys.values():
        config_default(config, key)  # raises on a key the dataclass does not have
        assert f"from {key}]" in text or command in ("generate", "translate"), key


def test_choices_written_in_the_cli_are_the_cores():
    """The CLI spells out the choices of torch-importing modules, so --help and completion start fast."""
    from seqtool.models import ngram, rnn_lm, seq2seq, transformer
    from seqtool.training import lm

    assert (train.CELLS, train.OBJECTIVES) == (rnn_lm.CELLS, lm.OBJECTIVES)
    assert (train_seq2seq.CELLS, train_seq2seq.ATTENTIONS, train_seq2seq.DECAYS) == \
        (seq2seq.CELLS, seq2seq.ATTENTIONS, seq2seq.DECAYS)
    assert (train_transformer.ARCHS, train_transformer.POSITIONS, train_transformer.ACTIVATIONS) == \
        (transformer.ARCHS, transformer.POSITIONS, transformer.ACTIVATIONS)
    assert evaluate.SMOOTHINGS == ngram.SMOOTHINGS


COMPLETE = """import sys
from seqtool.cli import main
try:
    main()
except SystemExit:
    pass
print('torch' in sys.modules, file=sys.stderr)
"""


def complete(*words: str) -> list[str]:
    """What bash completion offers for `seqtool WORDS...` (the last word being typed), via the
    _SEQTOOL_COMPLETE protocol of the shipped completions/ scripts; completion must not import torch."""
    env = {**os.environ, "_SEQTOOL_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(["seqtool", *words]),
           "COMP_CWORD": str(len(words))}
    proc = subprocess.run([sys.executable, "-c", COMPLETE], env=env, capture_output=True, text=True)
    assert proc.stderr.strip().endswith("False"), proc.stderr
    return proc.stdout.split()


def test_completion_offers_the_choices():
    assert complete("train-rnn", "--cell", "") == ["rnn", "rnn-relu", "gru", "lstm", "ugrnn"]
    assert complete("train-seq2seq", "--attention", "sc") == ["scaled-dot"]
    assert complete("train-transformer", "--arch", "enc") == ["encoder-decoder", "encoder"]
    assert complete("bleu", "out", "ref", "-m", "bleu,ch") == ["bleu,chrf", "bleu,chrf++"]
    assert complete("bleu", "out", "ref", "--tokenize", "") == ["13a", "intl", "char", "zh", "none"]
    assert complete("--log-format", "p") == ["plain"]
    assert complete("info", "--log-format", "j") == ["json"]  # a global option after the command
    assert "cuda:0" in complete("generate", "--device", "cu")


def test_a_bad_choice_is_one_usage_error_line(tmp_path):
    for args in (["train-rnn", "x.txt", "-w", str(tmp_path / "ws"), "--cell", "transformer"],
                 ["info", "--log-format", "xml"], ["--log-format", "xml", "info"]):
        proc = subprocess.run([sys.executable, "-m", "seqtool", *args], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: Invalid value for '--"), proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "'ugrnn'" in proc.stderr or "'json'" in proc.stderr
    assert not (tmp_path / "ws").exists()


CORPUS = "".join(f"the {w} is on the table\n" for w in ("cat", "dog", "cup", "pen", "hat") * 30)
TINY = ["--hidden", "8", "--n-layers", "1", "--bptt", "8", "--batch-size", "4", "--max-steps", "3",
        "--seed", "1"]


def test_global_options_after_the_command(cli, tmp_text, tmp_path):
    corpus = tmp_text(CORPUS)
    vocab = cli(["build-vocab", corpus, "--kind", "char", "-o", tmp_path / "tok", "--log-format", "json"])
    assert vocab.exit_code == 0, vocab.stderr
    assert all(json.loads(line)["event"] for line in vocab.stderr.splitlines())
    quiet = cli(["build-vocab", corpus, "--kind", "char", "-o", tmp_path / "tok2", "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    tokens = cli(["tokenize", "--format", "ids", "-w", tmp_path / "tok"], input="the cat\n")
    assert tokens.exit_code == 0 and len(tokens.stdout.split()) == 7, tokens.stderr

    train = cli(["train-rnn", corpus, "-w", tmp_path / "ws", *TINY, "--log-format", "json"])
    assert train.exit_code == 0, train.stderr
    events = [json.loads(line) for line in train.stderr.splitlines()]
    assert events[-1]["event"] == "summary" and events[-1]["status"] == "finished"
    generate = cli(["generate", "-w", tmp_path / "ws", "--prompt", "the Zebra", "--max-tokens", "3",
                    "--log-format", "json"])
    assert generate.exit_code == 0, generate.stderr
    (warning,) = [json.loads(line) for line in generate.stderr.splitlines()]
    assert warning["event"] == "warning" and "'Z'" in warning["message"]
    quiet = cli(["train-rnn", corpus, "-w", tmp_path / "ws2", *TINY, "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr.splitlines()[0].startswith("summary"), quiet.stderr
    assert len(quiet.stderr.splitlines()) == 1  # the summary alone


def test_debug_after_the_command_shows_the_traceback(tmp_path):
    cmd = [sys.executable, "-m", "seqtool", "info", "-w", str(tmp_path / "none"), "--debug"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" in proc.stderr
