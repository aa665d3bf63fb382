"""Fine-tuning: continue training a workspace's model (or an imported GPT-2) on new data, fully or with
LoRA adapters, and merge adapters back into a workspace of plain weights.

The new workspace starts as a copy of the source (same kind, tokenizer and published weights), so it
is usable from the first second; the one trainer then runs as for any model. Text the source
tokenizer cannot represent is counted, and `extend_vocab` grows char/word vocabularies and the
embeddings (and tied output layer) for it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqtool.config import OptimConfig, RunConfig
from seqtool.errors import InputError
from seqtool.models import load_published, lora
from seqtool.training.trainer import TrainTask
from seqtool.workspace import LM_KINDS, MT_KINDS, Workspace

Report = Callable[[dict[str, Any]], None]
TRAINABLE_KINDS = (*LM_KINDS, *MT_KINDS, "transformer-mlm")


@dataclass
class FinetuneData:
    train: list[str] = field(default_factory=list)  # language models: text files
    valid: list[str] = field(default_factory=list)
    src: str | None = None  # translation: line-aligned files (or one TSV)
    tgt: str | None = None
    tsv: str | None = None
    valid_src: str | None = None
    valid_tgt: str | None = None
    valid_fraction: float = 0.05  # held out from the end of the data (first run only; then kept fixed)
    context: int = 0  # tokens per training row (bptt / block size); 0: the source's, else 64
    encoding_errors: str = "strict"


@dataclass
class FinetuneOptim(OptimConfig):
    lr: float = 1e-4  # a trained model needs small steps: a tenth or less of training's rates
    optimizer: str = "adamw"


@dataclass
class FinetuneConfig:
    source: str = ""  # a workspace directory, or hf:DIR
    data: FinetuneData = field(default_factory=FinetuneData)
    extend_vocab: bool = False
    freeze: list[str] = field(default_factory=list)  # embeddings | encoder | layers:0-3
    lora: lora.LoraConfig | None = None
    adapter_name: str = "default"
    promote_if_better: bool = False
    optim: FinetuneOptim = field(default_factory=FinetuneOptim)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.adapter_name):
            raise InputError(f"--adapter-name {self.adapter_name!r} must be letters, digits, _ . -")
        if self.lora is not None and (self.freeze or self.extend_vocab):
            raise InputError("LoRA trains only the adapters: --freeze and --extend-vocab do not apply",
                             hint="drop them, or fine-tune fully without --lora-rank")


# ---------------------------------------------------------------------------------------------
# loading a model: a workspace (+ an adapter) or hf:DIR


@dataclass
class Source:
    kind: str
    model: nn.Module
    tokenizers: dict[str, Any]  # "" (one tokenizer) or "src" and "tgt"
    config: dict[str, Any]  # the source run's resolved config (empty for hf:DIR)

    @property
    def family(self) -> str:
        return str(self.model.arch()["model"])


def open_source(source: str) -> Source:
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.models.gpt2 import is_hf_source, load_hf_gpt2

    if is_hf_source(source):
        model, tok = load_hf_gpt2(source)
        return Source("transformer-lm", model, {"": tok}, {})
    ws = Workspace.open(source, kinds=TRAINABLE_KINDS, purpose="fine-tuning")
    model = load_published(ws).train()
    root = ws.sub("tokenizer")
    sides = ["src", "tgt"] if (root / "src").is_dir() else [""]
    config = ws.config
    while "source_config" in config:  # a fine-tuned workspace: the original run's settings
        config = config["source_config"] or {}
    return Source(ws.kind, model, {s: load_tokenizer(root / s) for s in sides}, config)


def side_tokenizers(src: Source) -> tuple[Any, Any]:
    toks = src.tokenizers
    return (toks[""], toks[""]) if "" in toks else (toks["src"], toks["tgt"])


# ---------------------------------------------------------------------------------------------
# unknown text and vocabulary growth


def count_unknown(tok: Any, lines: list[str]) -> Counter:
    """Characters (char/bpe/unigram) or words (word) of `lines` that `tok` turns into <unk>."""
    counts: Counter = Counter()
    for line in lines:
        counts.update(tok.unknown(line))
    return counts


def describe_unknown(counts: Counter, what: str, limit: int = 12) -> str:
    total = sum(counts.values())
    shown = ", ".join(f"{sym!r}×{n}" for sym, n in counts.most_common(limit))
    more = f", … {len(counts) - limit} more" if len(counts) > limit else ""
    return (f"{what}: {total} occurrences of {len(counts)} symbols the tokenizer cannot represent: "
            f"{shown}{more}")


VOCAB_KEYS = {"rnn-lm": {"": ("vocab_size",)},
              "transformer": {"": ("vocab_size",), "src": ("src_vocab_size",), "tgt": ("vocab_size",)},
              "seq2seq": {"": ("src_vocab", "tgt_vocab"), "src": ("src_vocab",), "tgt": ("tgt_vocab",)}}


def extend_vocab(src: Source, unknown: dict[str, Counter]) -> Source:
    """Add every unknown symbol to its char/word tokenizer and grow the model's embeddings and output
    rows to match (old rows kept, new rows freshly initialised; tied weights stay tied)."""
    from seqtool.data.tokenizers import VocabTokenizer

    new_toks = dict(src.tokenizers)
    arch = src.model.arch()
    for side, counts in unknown.items():
        tok = src.tokenizers[side]
        if not counts:
            continue
        if not isinstance(tok, VocabTokenizer):
            raise InputError(f"--extend-vocab works for char and word tokenizers, not {tok.kind}",
                             hint="subword tokenizers spell new words from known pieces; drop --extend-vocab")
        added = sorted(counts, key=lambda p: (-counts[p], p))
        new_toks[side] = type(tok)(tok.pieces + added, tok.options)
        for key in VOCAB_KEYS[src.family][side]:
            arch[key] = new_toks[side].vocab_size
    if new_toks == src.tokenizers:
        return src
    from seqtool.models import MODELS

    grown = MODELS[src.family].from_arch(arch)
    state = grown.state_dict()
    with torch.no_grad():
        for key, old in src.model.state_dict().items():
            rows = tuple(slice(0, n) for n in old.shape)
            state[key][rows] = old  # a vocabulary-sized axis keeps its old rows at the front
    grown.load_state_dict(state)
    return dataclasses.replace(src, model=grown, tokenizers=new_toks)


# ---------------------------------------------------------------------------------------------
# freezing


def freeze(model: nn.Module, specs: list[str]) -> None:
    """embeddings | encoder | layers:A-B (or layers:N): set requires_grad False on what they name."""
    for spec in specs:
        if spec == "embeddings":
            match = lambda name: "embed" in name or name.split(".")[-2:-1] == ["pos"]  # noqa: E731
        elif spec == "encoder":
            match = lambda name: name.startswith(("encoder.", "src_embed."))  # noqa: E731
        elif m := re.fullmatch(r"layers:(\d+)(?:-(\d+))?", spec):
            lo, hi = int(m[1]), int(m[2] or m[1])
            index = "|".join(str(i) for i in range(lo, hi + 1))
            pattern = re.compile(rf"(^|\.)layers\.({index})\.|_l({index})(_reverse)?$")
            match = lambda name, p=pattern: bool(p.search(name))  # noqa: E731
        else:
            raise InputError(f"--freeze {spec!r} is not one of embeddings, encoder, layers:A-B")
        hit = [p for name, p in model.named_parameters() if match(name)]
        if not hit:
            raise InputError(f"--freeze {spec}: this model has no such parameters",
                             hint="see `seqtool info -w WS` for its architecture")
        for param in hit:
            param.requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# data → task


def _lm_lines(paths: list[str], errors: str) -> list[str]:
    from seqtool.data.io import iter_lines

    return [line for path in paths for line in iter_lines(path, encoding_errors=errors)]


def lm_data(cfg: FinetuneConfig, ws: Workspace, src: Source, report: Report) -> tuple[list[str], list[str]]:
    """(train, valid) lines. The validation lines are stored in WS/data/valid.txt on the first run and
    read from there afterwards, so --promote-if-better always compares on the same text."""
    fixed = ws.sub("data", "valid.txt")
    train = _lm_lines(cfg.data.train, cfg.data.encoding_errors)
    if not train:
        raise InputError("no training text", hint="pass --data FILE")
    if cfg.data.valid:
        valid = _lm_lines(cfg.data.valid, cfg.data.encoding_errors)
    elif fixed.is_file():
        valid = fixed.read_text(encoding="utf-8").split("\n")
    else:
        k = max(1, int(round(len(train) * cfg.data.valid_fraction)))
        if len(train) - k < 1:
            raise InputError("too little text to hold out a validation set", hint="pass --valid FILE")
        train, valid = train[:-k], train[-k:]
    return train, valid


def lm_task(cfg: FinetuneConfig, src: Source, train: list[str], valid: list[str],
            device: torch.device) -> TrainTask:
    from seqtool.data.batching import StreamBatches, stream_eval_batches

    tok = src.tokenizers[""]
    context = cfg.data.context or int(src.config.get("data", {}).get("bptt", 0) or 64)
    if src.family == "transformer":
        context = min(context, src.model.cfg.max_len)
    rnn = src.kind == "rnn-lm"
    train_ids = torch.tensor(list(tok.encode_stream(train)), dtype=torch.long)
    valid_ids = torch.tensor(list(tok.encode_stream(valid)), dtype=torch.long)
    batches = StreamBatches(train_ids, cfg.run.batch_size, context)

    def evaluate(model: nn.Module) -> dict[str, float]:
        total, tokens, state = 0.0, 0, None
        for i, batch in enumerate(stream_eval_batches(valid_ids, cfg.run.batch_size, context)):
            if cfg.run.eval_batches and i >= cfg.run.eval_batches:
                break
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            if rnn:
                _, loss, state = model(batch, state=state)
            else:
                _, loss = model(batch)
            total += float(loss) * batch["ntokens"]
            tokens += batch["ntokens"]
        loss = total / max(tokens, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}

    return TrainTask(model=src.model, data=batches, evaluate=evaluate,
                     arch=src.model.arch(), carries_state=rnn)


def mt_task(cfg: FinetuneConfig, ws: Workspace, src: Source, report: Report,
            device: torch.device) -> TrainTask:
    from seqtool.data.parallel import ParallelBatches, encode_pairs, read_parallel, split_off
    from seqtool.training.seq2seq import ParallelDataConfig, Seq2SeqTrainConfig, ValidConfig, make_evaluate

    d = cfg.data
    src_tok, tgt_tok = side_tokenizers(src)
    train = read_parallel(d.src, d.tgt, d.tsv, d.encoding_errors)
    fixed_src, fixed_tgt = ws.sub("data", "valid.src"), ws.sub("data", "valid.tgt")
    if d.valid_src or d.valid_tgt:
        valid = read_parallel(d.valid_src, d.valid_tgt, None, d.encoding_errors)
    elif fixed_src.is_file():
        valid = read_parallel(str(fixed_src), str(fixed_tgt), None, d.encoding_errors)
    else:
        train, valid = split_off(train, d.valid_fraction)
    _store_fixed(ws, {"valid.src": valid.src, "valid.tgt": valid.tgt})
    source_cfg = src.config
    data_cfg = ParallelDataConfig(**{k: v for k, v in source_cfg.get("data", {}).items()
                                     if k in ("max_len", "batch_tokens")})
    valid_cfg = ValidConfig(**source_cfg.get("valid", {})) if "valid" in source_cfg else ValidConfig()
    s2s = Seq2SeqTrainConfig(data=data_cfg, valid=valid_cfg, run=cfg.run)
    train_pairs = encode_pairs(train, src_tok, tgt_tok, data_cfg.max_len)
    valid_pairs = encode_pairs(valid, src_tok, tgt_tok, data_cfg.max_len)
    for line in train_pairs.report(train.where):
        report({"event": "warning", "message": line})
    batches = ParallelBatches(train_pairs, data_cfg.batch_tokens, tgt_tok.pad_id, tgt_tok.bos_id,
                              tgt_tok.eos_id, seed=cfg.run.seed)
    evaluate = make_evaluate(valid, valid_pairs, src_tok, tgt_tok, s2s, device)
    metric, mode = ("bleu", "max") if valid_cfg.bleu else ("loss", "min")
    return TrainTask(model=src.model, data=batches, evaluate=evaluate, arch=src.model.arch(), metric=metric,
                     mode=mode)


def _store_fixed(ws: Workspace, files: dict[str, list[str]]) -> None:
    from seqtool.workspace import atomic_write

    for name, lines in files.items():
        if not ws.sub("data", name).is_file():
            atomic_write(ws.sub("data", name), "\n".join(lines))


# ---------------------------------------------------------------------------------------------
# the run


def prepare(cfg: FinetuneConfig, ws_path: Path, device: torch.device, report: Report,
            resume: bool = False) -> tuple[Workspace, TrainTask, float | None]:
    """Open the source, set up the workspace, count unknown text, and build the task.

    Returns (workspace, task, baseline): the baseline is the validation metric of the weights the
    workspace publishes before training, when --promote-if-better asks for it.
    """
    from seqtool.data.tokenizers import save_tokenizers

    src = open_source(cfg.source)
    target = Path(ws_path)
    previous = Workspace.open(target) if (target / "seqtool.yaml").exists() else None
    if previous is not None and previous.kind != src.kind:
        raise InputError(f"workspace {target} holds a {previous.kind} model, the source a {src.kind} one",
                         hint="fine-tune into a new -w directory")
    config = {"finetune": dataclasses.asdict(cfg), "source_config": src.config}
    ws = Workspace.create(target, src.kind, config, data_files=_fingerprints(cfg))
    if not resume:
        shutil.rmtree(ws.sub("checkpoints"), ignore_errors=True)  # resume points of an earlier run
    if src.kind in MT_KINDS:
        lines = {"src": _read_side(cfg, "src"), "tgt": _read_side(cfg, "tgt")}
        sides = {"": lines["src"] + lines["tgt"]} if "" in src.tokenizers else lines
    else:
        sides = {"": _lm_lines(cfg.data.train, cfg.data.encoding_errors)}
    unknown = {side: count_unknown(src.tokenizers[side], text) for side, text in sides.items()}
    for side, counts in unknown.items():
        if counts:
            report({"event": "warning", "message": describe_unknown(counts, f"{side or 'training'} text")})
    if cfg.extend_vocab and any(unknown.values()):
        src = extend_vocab(src, unknown)
        report({"event": "info", "message": "vocabulary extended: " + ", ".join(
            f"{s or 'tokenizer'} {t.vocab_size}" for s, t in src.tokenizers.items())})
    if not (resume and ws.sub("tokenizer").is_dir()):
        save_tokenizers(ws.sub("tokenizer"), src.tokenizers)
    if resume and previous is not None and previous.has_weights() and cfg.lora is None:
        state, _ = previous.load_published()  # continue from what this workspace publishes
        src.model.load_state_dict(state)
    elif not (cfg.lora is not None and resume and ws.has_weights()):
        ws.publish(src.model.state_dict(), src.model.arch(), {"step": 0, "source": cfg.source})
    if src.kind in MT_KINDS:
        task = mt_task(cfg, ws, src, report, device)
    elif src.kind in LM_KINDS:
        train, valid = lm_data(cfg, ws, src, report)
        _store_fixed(ws, {"valid.txt": valid})
        task = lm_task(cfg, src, train, valid, device)
    else:
        raise InputError(f"fine-tuning a {src.kind} workspace is not supported yet",
                         hint="fine-tune a language or translation model")
    if cfg.lora is not None:
        _add_adapters(cfg, ws, src, task, resume)
    else:
        freeze(src.model, cfg.freeze)
    trainable, total = lora.count_parameters(src.model)
    report({"event": "info", "message": f"trainable parameters: {trainable:,} of {total:,} "
            f"({100.0 * trainable / max(total, 1):.3f}%)"})
    baseline = None
    if cfg.promote_if_better:
        model = task.model.to(device).eval()
        with torch.no_grad():
            baseline = float(task.evaluate(model)[task.metric])
        model.train()
    return ws, task, baseline


def _add_adapters(cfg: FinetuneConfig, ws: Workspace, src: Source, task: TrainTask, resume: bool) -> None:
    assert cfg.lora is not None
    lora.add_lora(src.model, lora.resolve_targets(src.family, cfg.lora.targets), cfg.lora)
    name = cfg.adapter_name
    if (ws.sub("adapters", f"{name}.safetensors")).exists() and not resume and cfg.promote_if_better:
        state, _ = ws.load_adapter(name)  # the adapter to beat is the one this workspace publishes
        lora.load_adapter_state(src.model, state, f"adapter {name!r}")
    task.adapter = name
    task.arch = {**cfg.lora.to_dict(), "family": src.family, "base": ws.path.name}


def _read_side(cfg: FinetuneConfig, side: str) -> list[str]:
    from seqtool.data.parallel import read_parallel

    text = read_parallel(cfg.data.src, cfg.data.tgt, cfg.data.tsv, cfg.data.encoding_errors)
    return text.src if side == "src" else text.tgt


def _fingerprints(cfg: FinetuneConfig) -> list[dict[str, Any]]:
    from seqtool.data.io import file_fingerprint

    d = cfg.data
    paths = [*d.train, *d.valid, d.src, d.tgt, d.tsv, d.valid_src, d.valid_tgt]
    return [file_fingerprint(p) for p in paths if p and p != "-" and Path(p).is_file()]


def run_finetune(cfg: FinetuneConfig, ws_path: Path, device: torch.device, report: Report,
                 resume: bool = False) -> dict[str, Any]:
    """Fine-tune into `ws_path` under its lock; returns the trainer's summary (plus the promotion)."""
    from seqtool.training.trainer import Trainer
    from seqtool.workspace import WorkspaceLock

    Path(ws_path).mkdir(parents=True, exist_ok=True)
    with WorkspaceLock(Path(ws_path) / ".lock"):
        ws, task, baseline = prepare(cfg, Path(ws_path), device, report, resume)
        values: list[float] = []
        if baseline is not None:
            task.evaluate = _recording(task.evaluate, task.metric, values)
        trainer = Trainer(ws, task, cfg.optim, cfg.run, report, device)
        if baseline is not None and not resume:
            trainer.state.best_value = baseline  # publish only weights that beat the current ones
        summary = trainer.fit(resume=resume)
        if baseline is not None:
            event = promotion_event(baseline, values, summary, task.metric, task.mode)
            ws.append_metrics(event)
            report({**event, "event": "info", "message": (
                f"{event['decision']}: {task.metric} {event['candidate']} vs {baseline} before")})
            summary["promotion"] = event
    return summary


def _recording(evaluate: Callable[[nn.Module], dict[str, float]], metric: str, values: list[float]):
    def recorded(model: nn.Module) -> dict[str, float]:
        metrics = evaluate(model)
        values.append(float(metrics[metric]))
        return metrics

    return recorded


def promotion_event(baseline: float, values: list[float], summary: dict[str, Any], metric: str,
                    mode: str) -> dict[str, Any]:
    """The decision --promote-if-better records: promoted when the run beat the baseline (the trainer
    then published the better weights); the candidate is the run's best validation value."""
    best = (min(values) if mode == "min" else max(values)) if values else None
    promoted = best is not None and (best < baseline if mode == "min" else best > baseline)
    return {"event": "promote", "decision": "promoted" if promoted else "kept", "metric": metric,
            "baseline": baseline, "candidate": best, "step": summary.get("step")}


# ---------------------------------------------------------------------------------------------
# merging


def merge_adapter(ws_path: Path, adapter: str, out_path: Path) -> Workspace:
    """Write a workspace at `out_path` whose weights are the base with adapters/NAME merged in."""
    ws = Workspace.open(ws_path, kinds=TRAINABLE_KINDS, purpose="merging an adapter")
    if Path(out_path).resolve() == ws.path.resolve():
        raise InputError("--merge writes a new workspace", hint="pass -o DIR different from -w")
    model = load_published(ws, adapter=adapter)
    lora.strip_lora(model)
    config = {**ws.config, "merged_adapter": {"workspace": str(ws.path), "adapter": adapter}}
    out = Workspace.create(out_path, ws.kind, config, data_files=ws.meta.get("data"))
    shutil.copytree(ws.sub("tokenizer"), out.sub("tokenizer"), dirs_exist_ok=True)
    out.publish(model.state_dict(), model.arch(), {"merged_from": str(ws.path), "adapter": adapter})
    return out
