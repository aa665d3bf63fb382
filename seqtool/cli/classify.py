"""`seqtool classify`: one label per input line from a classifier workspace; what `evaluate` prints for a
classifier; and the options train-rnn / train-transformer / finetune take with `--task classify`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal, Optional

import typer

from seqtool.cli.options import Device, EncodingErrors, Workspace, pick, reporter, require_workspace

Opt = typer.Option
POOLINGS = ("last", "first", "mean", "attention")  # models.classifier.POOLINGS (no torch for --help)

# -- the options of --task classify (set on the config by classify_options, so --help needs no key) --
Task = Annotated[Literal["lm", "classify", "forecast"], Opt(
    "--task", help="lm: what the model family trains by itself (language model, masked LM or translation) | "
    "classify: a text classifier on labelled data (TSV text<TAB>label or .jsonl), workspace kind "
    "classifier | forecast (train-rnn): the next value of a numeric CSV column (--column), MSE, workspace "
    "kind rnn-forecast.")]
Pooling = Annotated[Optional[Literal[POOLINGS]], Opt(
    help="--task classify: how the states become one vector: last (RNN, decoder) | first ([CLS]-style, "
    "encoder) | mean | attention. Default: last, or first for an encoder. [head.pooling]",
    show_default=False)]
LabelColumn = Annotated[Optional[int], Opt(
    help="--task classify, TSV: the label's column, 1-based (default: the last); the rest is the text. "
    "[data.label_column]", show_default=False)]
TextKey = Annotated[Optional[str], Opt(help="--task classify, .jsonl: the text's key (default: text). "
                                       "[data.text_key]", show_default=False)]
LabelKey = Annotated[Optional[str], Opt(help="--task classify, .jsonl: the label's key (default: label). "
                                        "[data.label_key]", show_default=False)]


def classify_options(task: str, options: dict[str, Any], **given: Any) -> dict[str, Any]:
    """`options` with the --task classify options put under their config keys; given without --task
    classify they are an error."""
    from seqtool.errors import InputError

    keys = {"pooling": "head.pooling", "label_column": "data.label_column", "text_key": "data.text_key",
            "label_key": "data.label_key"}
    used = [name for name, value in given.items() if value is not None]
    if task != "classify":
        if used:
            flag = "--" + used[0].replace("_", "-")
            raise InputError(f"{flag} applies to --task classify only",
                             hint=f"add --task classify, or drop {flag}")
        return options
    return {**options, **{keys[name]: given[name] for name in used}}


# -- seqtool classify ----------------------------------------------------------------------------------
def classify(
    ctx: typer.Context,
    files: Annotated[Optional[list[str]], typer.Argument(
        help="Texts, one per line: files, globs, .gz, or - for stdin (the default).", show_default=False)]
    = None,
    workspace: Workspace = None,
    probs: Annotated[bool, Opt("--probs", help="Print JSON lines {\"label\": ..., \"probs\": {label: p}} "
                               "instead of the label alone.")] = False,
    batch_size: Annotated[int, Opt(help="Texts classified together.")] = 64,
    device: Device = None,
    encoding_errors: EncodingErrors = "strict",
) -> None:
    """Label each input line with a classifier workspace: one label (or --probs JSON line) per line.

    Example: seqtool classify -w runs/courses titles.txt > labels.txt
    """
    from seqtool.classification import TextClassifier
    from seqtool.data.io import expand_paths, iter_lines
    from seqtool.errors import InputError
    from seqtool.training import runtime

    if batch_size < 1:
        raise InputError(f"--batch-size must be ≥ 1, got {batch_size}")
    classifier = TextClassifier.from_workspace(require_workspace(workspace, ctx),
                                               runtime.pick_device(pick(device, ctx, "device")))
    out = sys.stdout
    for path in expand_paths(files or ["-"]):
        where = "<stdin>" if path == "-" else path
        for prediction in classifier.predict(iter_lines(path, encoding_errors), batch_size, where):
            if probs:
                out.write(json.dumps({"label": prediction.label, "probs": {
                    k: round(v, 6) for k, v in prediction.probs.items()}}, ensure_ascii=False) + "\n")
            else:
                out.write(prediction.label + "\n")
        out.flush()


# -- seqtool evaluate on a classifier ------------------------------------------------------------------
def evaluate_classifier(ctx: typer.Context, ws: Any, data: list[str] | None, as_json: bool, device: Any,
                        encoding_errors: str) -> None:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (a table on stdout and
    WS/plots/confusion.png) on --data, else on the run's own validation rows (WS/data/valid.tsv)."""
    from dataclasses import replace

    from seqtool.classification import TextClassifier, data_config
    from seqtool.data.labelled import read_labelled
    from seqtool.errors import InputError
    from seqtool.storage import json_line

    report = reporter(ctx)
    fmt = replace(data_config(ws.config), encoding_errors=encoding_errors)
    if not data:
        if not ws.fixed_data("valid.tsv").is_file():
            raise InputError(f"workspace {ws.path} keeps no validation rows", hint="pass --data FILE.tsv")
        data, fmt = [str(ws.fixed_data("valid.tsv"))], replace(fmt, label_column=0)  # written text<TAB>label
    scores = TextClassifier.from_workspace(ws.path, device).score(read_labelled(data, fmt))
    try:
        from seqtool.viz import plot_confusion

        png = ws.plot_file("confusion.png")
        png.parent.mkdir(parents=True, exist_ok=True)
        plot_confusion(scores["confusion"], scores["labels"], png, title=", ".join(data))
        report.info(f"confusion matrix: {png}")
    except Exception as err:  # noqa: BLE001 - a picture must not fail the scores
        report.warn(f"could not draw plots/confusion.png: {err}")
    if as_json:
        sys.stdout.write(json_line({"data": data, "model": scores}, indent=2) + "\n")
        return
    sys.stdout.write(format_scores(scores, ", ".join(data)))


def format_scores(scores: dict[str, Any], data: str) -> str:
    """The terminal report: totals, a per-class table, the confusion matrix (rows gold, columns predicted)."""
    labels = scores["labels"]
    width = max(9, *(len(label) + 2 for label in labels))
    lines = [f"{'data':<{width}}{data} ({scores['texts']:,} texts)",
             f"{'accuracy':<{width}}{scores['accuracy']:.4f}",
             f"{'macro-F1':<{width}}{scores['macro_f1']:.4f}",
             f"{'loss':<{width}}{scores['loss']:.4f}", "",
             f"{'label':<{width}}{'precision':>10}{'recall':>8}{'F1':>8}{'support':>9}"]
    for label, v in scores["per_class"].items():
        lines.append(f"{label:<{width}}{v['precision']:>10.3f}{v['recall']:>8.3f}{v['f1']:>8.3f}"
                     f"{v['support']:>9}")
    cell = max(6, *(len(label) + 1 for label in labels))
    lines += ["", "confusion matrix (rows: gold, columns: predicted)",
              " " * width + "".join(f"{label:>{cell}}" for label in labels)]
    for label, row in zip(labels, scores["confusion"], strict=True):
        lines.append(f"{label:<{width}}" + "".join(f"{n:>{cell}}" for n in row))
    return "\n".join(lines) + "\n"
