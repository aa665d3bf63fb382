"""The one table of workspace kinds (seqtool.yaml's `kind`): each kind's model family (models.MODELS),
task and reading. Free of torch, because build-vocab and info open workspaces without importing the
models; the family's facts (its LoRA targets, freeze groups, vocabulary keys) sit on its model class.
A new kind is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """What a workspace of this kind holds: a model of `family` (models.MODELS) trained for `task`, which
    reads text as `reading` (language models only)."""

    family: str
    task: str  # "lm" (next token) | "mlm" (masked tokens) | "translation" | "classify" (a label per text)
    # | "forecast" (the next value of a numeric series)
    reading: str = ""  # "bptt" (a recurrent state over one stream; or windows) | "block" | "masked"


KINDS = {
    "rnn-lm": Kind("rnn-lm", "lm", "bptt"),
    "seq2seq": Kind("seq2seq", "translation"),
    "transformer-lm": Kind("transformer", "lm", "block"),
    "transformer-mt": Kind("transformer", "translation"),
    "transformer-mlm": Kind("transformer", "mlm", "masked"),
    "rnn-forecast": Kind("forecaster", "forecast"),  # the next value of a numeric series (MSE)
    "classifier": Kind("classifier", "classify"),  # any of the bodies above under a label head
}
LM_KINDS = tuple(name for name, kind in KINDS.items() if kind.task == "lm")
MLM_KINDS = tuple(name for name, kind in KINDS.items() if kind.task == "mlm")
MT_KINDS = tuple(name for name, kind in KINDS.items() if kind.task == "translation")
