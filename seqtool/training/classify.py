"""Training a text classifier (workspace kind `classifier`): from scratch over an RNN or a Transformer
encoder/decoder (`train-rnn --task classify`, `train-transformer --arch encoder|decoder --task classify`),
or by fine-tuning a language model's workspace or an imported GPT-2 with a new head (`finetune --task
classify`): fully, with the body frozen (feature-based) or with LoRA adapters in the body. Each is a Job
of the one training run (training/run.py); validation scores accuracy and macro-F1 (evaluation.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from seqtool.config import OptimConfig, RunConfig, TokenizerConfig
from seqtool.data import labelled
from seqtool.data.io import data_fingerprints
from seqtool.data.labelled import LabelledDataConfig
from seqtool.errors import InputError
from seqtool.models.classifier import Classifier, HeadConfig, new_classifier
from seqtool.models.lora import LoraConfig
from seqtool.models.rnn_lm import RNNLMConfig
from seqtool.models.transformer import TransformerConfig
from seqtool.training.run import Job
from seqtool.training.tasks import TrainTask
from seqtool.workspace import Workspace

KIND = "classifier"
Note = Callable[[str], None]
FIXED = ("data", "tokenizer", "model", "head", "run.batch_size", "run.seed")  # a resume must keep these


@dataclass
class RNNClassifyConfig:
    """`seqtool train-rnn --task classify`: the sections of its YAML config."""

    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="char"))
    model: RNNLMConfig = field(default_factory=RNNLMConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class TransformerClassifyConfig:
    """`seqtool train-transformer --arch encoder|decoder --task classify`: its YAML sections."""

    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(kind="char"))
    model: TransformerConfig = field(default_factory=lambda: TransformerConfig(arch="encoder"))
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        optimizer="adamw", lr=5e-4, weight_decay=0.01, schedule="inverse-sqrt", warmup_steps=100))
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.model.arch == "encoder-decoder":
            raise InputError("--task classify puts a head on an encoder or a decoder, not an encoder-decoder",
                             hint="pass --arch encoder or --arch decoder")


@dataclass
class FinetuneClassifyOptim(OptimConfig):
    lr: float = 0.0  # 0: 1e-4 for full fine-tuning; 1e-3 when only the head (and adapters) train
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        lr, self.lr = self.lr, self.lr or 1.0  # OptimConfig's checks, with 0 meaning "the default"
        super().__post_init__()
        self.lr = lr


@dataclass
class FinetuneClassifyConfig:
    """`seqtool finetune --task classify`: the sections of its YAML config."""

    source: str = ""  # a language-model workspace (rnn-lm, transformer-lm, transformer-mlm) or hf:DIR
    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    freeze: list[str] = field(default_factory=list)  # body (feature-based) | embeddings | layers:A-B
    lora: LoraConfig | None = None
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: FinetuneClassifyOptim = field(default_factory=FinetuneClassifyOptim)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if not self.source:
            raise InputError("no source model", hint="pass --from WS or --from hf:DIR")
        if self.lora is not None and self.freeze:
            raise InputError("LoRA trains only the adapters and the head: --freeze does not apply",
                             hint="drop --freeze, or drop the --lora-* options")
        if not self.optim.lr:
            self.optim.lr = 1e-3 if self.lora is not None or "body" in self.freeze else 1e-4


def jobs() -> dict[str, Job]:
    """The three ways to train a classifier, as jobs of training/run.py."""
    def files(cfg: Any, known: list[dict]) -> list[dict]:
        return data_fingerprints(cfg.data, known=known)

    return {"rnn": Job(KIND, RNNClassifyConfig, files, build_rnn, fixed=FIXED),
            "transformer": Job(KIND, TransformerClassifyConfig, files, build_transformer, fixed=FIXED),
            "finetune": Job(KIND, FinetuneClassifyConfig, files, build_finetune,
                            fixed=("source", "data", "freeze", "lora", "head", "run.batch_size", "run.seed"))}


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class Split:
    train: labelled.Labelled
    valid: labelled.Labelled
    labels: list[str]
    note: str


def read_split(data: LabelledDataConfig, ws: Workspace) -> Split:
    """The training and validation examples and the label set. The validation rows are kept in
    WS/data/valid.tsv, where `seqtool evaluate` finds them without --data."""
    if not data.train:
        raise InputError("no training data given",
                         hint="pass FILES (text<TAB>label), or data.train in --config")
    train = labelled.read_labelled(data.train, data)
    source = labelled.source_name(data.train)
    if data.valid:
        valid = labelled.read_labelled(data.valid, data)
        where = f"validation: {labelled.source_name(data.valid)}"
    else:
        train, valid = labelled.split_valid(train, data.valid_fraction)
        where = (f"validation: every {round(1 / data.valid_fraction)}th row held out" if len(valid)
                 else "no validation rows (valid_fraction 0): validating on the training data")
    labels = labelled.label_set(train, source)
    if not len(valid):
        valid = train
    labelled.label_ids(valid, labels, "validation data")  # an unseen label fails here, naming its row
    flat = [" ".join(text.splitlines()) for text in valid.texts]  # a JSON text may hold line breaks
    ws.keep_fixed_data({"valid.tsv": [f"{t}\t{y}" for t, y in zip(flat, valid.labels, strict=True)]})
    note = (f"{len(train):,} training texts, {len(labels)} labels: {labelled.balance(train.labels)}; "
            f"{len(valid):,} {where}")
    return Split(train, valid, labels, note)


def classify_task(model: Classifier, tok: Any, split: Split, data: LabelledDataConfig, run: RunConfig,
                  note: Note) -> TrainTask:
    """The trainer's task: shuffled batches of the encoded training texts; validation by macro-F1."""
    from seqtool.evaluation import classifier_validation

    max_len = data.max_len
    positions = getattr(getattr(model.body, "cfg", None), "max_len", 0)  # a Transformer's
    if positions and positions < max_len:
        max_len = positions
    train_rows, cut = labelled.encode_texts(tok, split.train.texts, max_len)
    valid_rows, _ = labelled.encode_texts(tok, split.valid.texts, max_len)
    train_ids = labelled.label_ids(split.train, split.labels, "training data")
    valid_ids = labelled.label_ids(split.valid, split.labels, "validation data")
    if cut:
        note(f"{cut:,} training texts were cut to {max_len} tokens (data.max_len)")
    batches = labelled.LabelledBatches(train_rows, train_ids, run.batch_size, tok.pad_id, run.seed)
    evaluate = classifier_validation(valid_rows, valid_ids, run.batch_size, tok.pad_id, run.eval_batches)
    return TrainTask(model=model, data=batches, evaluate=evaluate, arch=model.arch(), metric="macro_f1",
                     mode="max")


def _tokenizer(cfg: TokenizerConfig, split: Split, ws: Workspace, resuming: bool) -> Any:
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.training.lm import prepare_tokenizer

    return load_tokenizer(ws.tokenizer_dir) if resuming else prepare_tokenizer(cfg, split.train.texts, ws)


def _describe(model: Classifier, tok: Any, what: str) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (f"{what} classifier ({model.pooling} pooling): {model.num_params():,} parameters "
            f"({trainable:,} trained), {tok.kind} vocabulary of {tok.vocab_size:,}")


# ---------------------------------------------------------------------------------------------
# from scratch


def build_rnn(cfg: RNNClassifyConfig, ws: Workspace, resuming: bool, device: torch.device,
              note: Note) -> tuple[TrainTask, None]:
    from seqtool.models.rnn_lm import RNNLM

    split = read_split(cfg.data, ws)
    tok = _tokenizer(cfg.tokenizer, split, ws, resuming)
    model = new_classifier(RNNLM(cfg.model, tok.vocab_size), split.labels, cfg.head)
    note(_describe(model, tok, cfg.model.cell))
    note(split.note)
    return classify_task(model, tok, split, cfg.data, cfg.run, note), None


def build_transformer(cfg: TransformerClassifyConfig, ws: Workspace, resuming: bool, device: torch.device,
                      note: Note) -> tuple[TrainTask, None]:
    from seqtool.models.transformer import Transformer

    split = read_split(cfg.data, ws)
    tok = _tokenizer(cfg.tokenizer, split, ws, resuming)
    body = Transformer(dataclasses.replace(cfg.model, vocab_size=tok.vocab_size, src_vocab_size=0,
                                           pad_id=tok.pad_id, max_len=cfg.data.max_len))
    model = new_classifier(body, split.labels, cfg.head)
    note(_describe(model, tok, f"Transformer {cfg.model.arch}"))
    note(split.note)
    return classify_task(model, tok, split, cfg.data, cfg.run, note), None


# ---------------------------------------------------------------------------------------------
# fine-tuning a language model with a new head


def build_finetune(cfg: FinetuneClassifyConfig, ws: Workspace, resuming: bool, device: torch.device,
                   note: Note) -> tuple[TrainTask, None]:
    """The source's body and tokenizer under a new head. A resumed run rebuilds the same (the seed draws
    the same head) and the trainer then loads its checkpoint over it."""
    from seqtool.kinds import LM_KINDS, MLM_KINDS
    from seqtool.source_model import open_source

    src = open_source(cfg.source)
    if src.kind not in (*LM_KINDS, *MLM_KINDS):
        kinds = " or ".join((*LM_KINDS, *MLM_KINDS))
        raise InputError(f"{cfg.source} holds a {src.kind} model; --task classify fine-tunes language models",
                         hint=f"pass a workspace of kind {kinds}, or hf:DIR")
    tok = src.tokenizers[""]
    split = read_split(cfg.data, ws)
    ws.save_tokenizers({"": tok})
    model = new_classifier(src.model, split.labels, cfg.head, cfg.lora)
    freeze_body(model, cfg.freeze)
    how = ("LoRA" if cfg.lora is not None else "feature-based (body frozen)" if "body" in cfg.freeze
           else "full")
    note(_describe(model, tok, f"{src.kind} → {how}"))
    note(split.note)
    unknown = sum(sum(tok.unknown(text).values()) for text in split.train.texts)
    if unknown:
        note(f"the source tokenizer cannot represent {unknown:,} symbols of the training texts (<unk>)")
    return classify_task(model, tok, split, cfg.data, cfg.run, note), None


def freeze_body(model: Classifier, specs: list[str]) -> None:
    """body: every parameter of the body (only the head trains); other specs as finetune --freeze."""
    rest = [s for s in specs if s != "body"]
    if "body" in specs:
        for param in model.body.parameters():
            param.requires_grad_(False)
    if rest:
        from seqtool.models.freezing import freeze

        freeze(model.body, rest)
