"""Fine-tuning: continue training a workspace's model (or an imported GPT-2) on new data, fully or with
LoRA adapters (merging one back into plain weights is merge.py).

The new workspace starts as a copy of the source (source_model.py: the model, its tokenizers, the text
they cannot represent and --extend-vocab), so it is usable from the first second; fine-tuning is then a
job of the one training run (training/run.py), which it hands its round rule (the tasks are built in
training/finetune.py; --freeze is models/freezing.py).

A fine-tuning *round* runs from the source to a stop condition. `resume="auto"` continues an
interrupted round; a finished round followed by new data or new settings starts the next round (a
nightly cron job), and the same command on the same data again does nothing. With
`promote_if_better`, the weights to beat are the ones the workspace publishes when the round starts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqtool.config import first_difference
from seqtool.data.io import data_fingerprints
from seqtool.errors import InputError
from seqtool.kinds import MT_KINDS
from seqtool.models import load_published, lora
from seqtool.models.freezing import freeze
from seqtool.source_model import (
    Source,
    _same_tokenizers,
    count_unknown,
    describe_unknown,
    extend_vocab,
    grown_symbols,
    new_symbols,
    open_source,
    side_tokenizers,
)
from seqtool.training.finetune import FIXED_KEYS, FinetuneConfig, lm_task, mt_task, read_lines
from seqtool.training.run import Job, Prepared, Rounds, new_workspace
from seqtool.training.tasks import TrainTask
from seqtool.workspace import Workspace, is_workspace

Report = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------
# the run


def job(force: bool = False) -> Job:
    """finetune as a job of the one training run (training/run.py): its round rule and its set-up from
    the source model. `force` lets it write over a workspace that holds another run's model."""
    files = lambda cfg, known: data_fingerprints(cfg.data, known=known)  # noqa: E731
    return Job("finetune", FinetuneConfig, files, rounds=Rounds(
        check=lambda cfg, target: check_target(cfg, target, force), continues=continues_round,
        prepare=start_round))


def start_round(cfg: FinetuneConfig, target: Path, previous: Workspace | None, data_files: list[dict],
                resuming: bool, device: torch.device, dist: Any, report: Report) -> Prepared:
    """The workspace and task of this round (`prepare`); with --promote-if-better also the value to beat,
    every validation value recorded, and the decision written once the round has finished (rank 0)."""
    from seqtool.training import runtime

    ws, task, baseline = prepare(cfg, target, previous, data_files, device, report, resuming,
                                 new_workspace(target, dist), sync=lambda: runtime.barrier(dist))
    values: list[float] = list(ws.status.get("promote_candidates") or []) if resuming else []
    if baseline is not None:
        task.evaluate = _recording(task.evaluate, task.metric, values, ws)

    def finished(summary: dict[str, Any]) -> None:
        if cfg.lora is not None:
            summary["adapter"] = cfg.adapter_name  # for the command's closing hint
        if baseline is None:
            return
        event = promotion_event(baseline, values, summary, task.metric, task.mode)
        ws.append_metrics(event)
        report({**event, "event": "info", "message": (
            f"{event['decision']}: {task.metric} {event['candidate']} vs {baseline} before")})
        summary["promotion"] = event
        ws.update_status(promote_candidates=[])

    return Prepared(ws, task, resuming, after=finished, best_value=baseline)


def check_target(cfg: FinetuneConfig, target: Path, force: bool) -> None:
    """Refuse to fine-tune over the source itself (unless --promote-if-better, which replaces its model
    only by a better one), and (unless `force`) over a workspace holding a model that is not an earlier
    round from the same source: either would lose a model the user had."""
    from seqtool.models.gpt2 import is_hf_source

    if not cfg.source:
        raise InputError("no source model", hint="pass --from WS or --from hf:DIR")
    itself = not is_hf_source(cfg.source) and Path(cfg.source).resolve() == target.resolve()
    if itself and not cfg.promote_if_better:
        raise InputError(f"-w {target} is the source workspace: fine-tuning into it would replace the model "
                         "it starts from", hint="pass a new -w directory, or --promote-if-better to replace "
                         "its model only by a better one")
    if itself or force or not is_workspace(target):
        return
    old = Workspace.open(target)
    before = (old.config.get("finetune") or {}).get("source")
    if before is not None and _same_path(before, cfg.source):
        return  # the next round of the same fine-tuning
    if old.has_weights() or old.checkpoint_dirs():
        what = f"fine-tuned from {before}" if before is not None else f"a trained {old.kind} model"
        raise InputError(f"workspace {target} holds another run ({what}); fine-tuning from {cfg.source} "
                         "would replace it", hint="pass a new -w directory, or --force to replace it")


def _same_path(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()


def continues_round(cfg: FinetuneConfig, old: Workspace | None, data_files: list[dict[str, Any]],
                    resume: str, report: Report) -> bool:
    """Whether this run continues the fine-tuning round in the workspace `old` (else a new round
    starts); `data_files` are this run's data fingerprints.

    auto continues a round that has checkpoints and was not finished, when the settings it cannot
    change (FIXED_KEYS) are the same; a finished round continues only on the same data and settings
    (the trainer then has nothing to do unless a limit was raised). never always starts a new round.
    """
    from seqtool.config import check_choice

    check_choice("--resume", resume, ("auto", "never"))
    if resume == "never" or old is None:
        return False
    before = old.config.get("finetune")
    if before is None or not old.checkpoint_dirs():
        return False
    changed = first_difference(before, dataclasses.asdict(cfg), FIXED_KEYS)
    recorded = {(f.get("role"), f.get("path")): f.get("sha256") for f in old.meta.get("data") or []}
    new_data = recorded != {(f["role"], f["path"]): f.get("sha256") for f in data_files}
    if old.finished_status() is not None:  # the final checkpoint says so, whatever a kill -9 left
        if changed or new_data:
            why = "new data" if new_data else changed
            report({"event": "info", "message": f"the last fine-tuning round here has finished; starting a "
                    f"new one ({why})"})
            return False
        return True
    if changed:
        raise InputError(f"workspace {old.path} holds an unfinished fine-tuning run with {changed}",
                         hint="continue it with the same settings, start afresh with --resume never, "
                              "or use a new -w")
    if new_data:
        report({"event": "warning", "message": "the data changed since this fine-tuning run began; "
                "continuing on the new contents"})
    return True


def prepare(cfg: FinetuneConfig, target: Path, previous: Workspace | None, data_files: list[dict[str, Any]],
            device: torch.device, report: Report, resuming: bool,
            create: Callable[[str, dict, list[dict]], Workspace] | None = None,
            sync: Callable[[], None] = lambda: None) -> tuple[Workspace, TrainTask, float | None]:
    """Open the source, read the new text once, count what the tokenizer cannot represent, set up the
    workspace `target` (holding `previous`, if any; after `sync`: every rank has read what it needs from
    it; `create` starts it, training/run.py's new_workspace: ranks other than 0 get a read-only view and
    write nothing), and build the task.

    Returns (workspace, task, baseline): the baseline is the validation metric of the weights the
    workspace publishes when the round starts, when --promote-if-better asks for it.
    """
    src = open_source(cfg.source)
    if previous is not None and previous.kind != src.kind:
        raise InputError(f"workspace {target} holds a {previous.kind} model, the source a {src.kind} one",
                         hint="fine-tune into a new -w directory")
    if src.kind in MT_KINDS:
        from seqtool.data.parallel import read_parallel

        text = read_parallel(cfg.data.src, cfg.data.tgt, cfg.data.tsv, cfg.data.encoding_errors)
        sides = {"": text.src + text.tgt} if "" in src.tokenizers else {"src": text.src, "tgt": text.tgt}
    else:
        text = read_lines(cfg.data.train, cfg.data.encoding_errors)
        sides = {"": text}
    if cfg.extend_vocab and resuming:  # the vocabulary this round grew at its start
        src = extend_vocab(src, grown_symbols(previous, src))
    unknown = {side: count_unknown(src.tokenizers[side], lines) for side, lines in sides.items()}
    for side, counts in unknown.items():
        if counts:
            report({"event": "warning", "message": describe_unknown(counts, f"{side or 'training'} text")})
    if cfg.extend_vocab and any(unknown.values()) and not resuming:
        src = extend_vocab(src, new_symbols(unknown))
        report({"event": "info", "message": "vocabulary extended: " + ", ".join(
            f"{s or 'tokenizer'} {t.vocab_size}" for s, t in src.tokenizers.items())})
    # --promote-if-better into a workspace that publishes weights keeps them (and its tokenizer, the
    # same) byte for byte until better ones are found: the incumbent (full), or the same base (LoRA)
    keeps = cfg.promote_if_better and not resuming and previous is not None and previous.has_weights()
    incumbent = _incumbent(cfg, previous, src) if keeps else None

    sync()
    config = {"finetune": dataclasses.asdict(cfg), "source_config": src.config}
    if resuming:
        assert previous is not None
        ws = previous
        ws.meta.update(config=config, data=data_files)  # e.g. a raised --max-steps
        ws.write_meta()
    else:
        if create is None:
            create = lambda kind, config, data: Workspace.create(target, kind, config, data)  # noqa: E731
        ws = create(src.kind, config, data_files)
        if ws.clear_checkpoints():  # resume points of an earlier round (or of the training run itself)
            report({"event": "info", "message": f"starting a new fine-tuning round in {target}: removed the "
                    "earlier run's checkpoints (its published weights and metrics stay)"})
        if not keeps:
            ws.save_tokenizers(src.tokenizers)
            ws.publish(src.model.state_dict(), src.model.arch(), {"step": 0, "source": cfg.source})
    if src.kind in MT_KINDS:
        src_tok, tgt_tok = side_tokenizers(src)
        task = mt_task(cfg, ws, src.model, src_tok, tgt_tok, src.config, text, device, report)
    else:
        task = lm_task(cfg, ws, src.kind, src.model, src.tokenizers[""], src.config, text)
    if cfg.distill is not None:
        from seqtool.training.distill import attach

        task = attach(cfg.distill, task, ws, src.kind, src.tokenizers, resuming, device)
    if cfg.lora is not None:
        _add_adapters(cfg, ws, src, task, resuming)
    else:
        freeze(src.model, cfg.freeze)
    trainable, total = lora.count_parameters(src.model)
    report({"event": "info", "message": f"trainable parameters: {trainable:,} of {total:,} "
            f"({100.0 * trainable / max(total, 1):.3f}%)"})
    if not cfg.promote_if_better:
        return ws, task, None
    if resuming and ws.status.get("promote_baseline") is not None:
        return ws, task, float(ws.status["promote_baseline"])
    model = (incumbent if incumbent is not None else task.model).to(device).eval()
    with torch.no_grad():
        baseline = float(task.evaluate(model)[task.metric])
    task.model.train()
    ws.update_status(promote_baseline=baseline, promote_candidates=[])
    return ws, task, baseline


def _incumbent(cfg: FinetuneConfig, ws: Workspace, src: Source) -> nn.Module | None:
    """--promote-if-better into a workspace that already publishes weights: the model to beat (full
    fine-tuning), or None for LoRA, whose base must be the source's weights. Refuses what would make
    the comparison meaningless: another tokenizer, another shape, another base under the adapter."""
    if not _same_tokenizers(ws, src.tokenizers):
        raise InputError(f"--promote-if-better: {ws.path} uses another tokenizer than the source",
                         hint="fine-tune into a new -w, or drop --promote-if-better")
    incumbent = load_published(ws)
    if json.dumps(incumbent.arch(), sort_keys=True) != json.dumps(src.model.arch(), sort_keys=True):
        raise InputError(f"--promote-if-better: {ws.path} publishes a model of another shape than the source",
                         hint="fine-tune into a new -w, or drop --promote-if-better")
    if cfg.lora is None:
        return incumbent
    state, mine = incumbent.state_dict(), src.model.state_dict()
    if state.keys() != mine.keys() or not all(torch.equal(state[k], mine[k]) for k in state):
        raise InputError(f"--promote-if-better: the adapters in {ws.path} sit on other base weights "
                         "than the source's", hint=f"use --from {ws.path}, or a new -w")
    return None


def _add_adapters(cfg: FinetuneConfig, ws: Workspace, src: Source, task: TrainTask, resuming: bool) -> None:
    assert cfg.lora is not None
    lora.add_lora(src.model, lora.resolve_targets(src.family, cfg.lora.targets), cfg.lora)
    name = cfg.adapter_name
    if ws.adapter_file(name).exists() and not resuming and cfg.promote_if_better:
        state, _ = ws.load_adapter(name)  # the adapter to beat is the one this workspace publishes
        lora.load_adapter_state(src.model, state, f"adapter {name!r}")
    task.adapter = name
    task.arch = {**cfg.lora.to_dict(), "family": src.family, "base": ws.path.name}


def _recording(evaluate: Callable[[nn.Module], dict[str, float]], metric: str, values: list[float],
               ws: Workspace):
    """`evaluate`, also keeping each value of the metric (in the workspace's status too, so a resumed
    round decides on all of its evaluations)."""
    def recorded(model: nn.Module) -> dict[str, float]:
        metrics = evaluate(model)
        values.append(float(metrics[metric]))
        ws.update_status(promote_candidates=list(values))
        return metrics

    return recorded


def promotion_event(baseline: float, values: list[float], summary: dict[str, Any], metric: str,
                    mode: str) -> dict[str, Any]:
    """The decision --promote-if-better records: promoted when the run beat the baseline (the trainer
    then published the better weights); the candidate is the run's best validation value."""
    best = (min(values) if mode == "min" else max(values)) if values else None
    promoted = best is not None and (best < baseline if mode == "min" else best > baseline)
    return {"event": "promote", "decision": "promoted" if promoted else "kept", "metric": metric,
            "baseline": baseline, "candidate": best, "step": summary.get("steps")}
