"""`seqtool generate`: text from a language-model workspace, streamed to stdout as it is produced."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Annotated, Literal, Optional

import typer

from seqtool.cli.options import (
    Adapter,
    Device,
    EncodingErrors,
    Key,
    Quantize,
    Seed,
    Workspace,
    config_options,
    pick,
    reporter,
    require_workspace,
)

Opt = typer.Option
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def generate(
    ctx: typer.Context,
    workspace: Workspace = None,
    prompt: Annotated[Optional[str], Opt("--prompt", "-p", help="Text to continue (default: start a new "
                                         "text).", show_default=False)] = None,
    prompt_file: Annotated[Optional[str], Opt(help="Continue each line of this file ('-': stdin), "
                                              "--batch-size lines at a time, in order.",
                                              show_default=False)] = None,
    max_tokens: Annotated[Optional[int], Opt(help="New tokens per sample, at most."), Key("max_tokens")] \
        = None,
    num_samples: Annotated[int, Opt("--num-samples", "-n", help="Samples per prompt (decoded together, "
                                    "up to --batch-size at a time).")] = 1,
    batch_size: Annotated[int, Opt(help="Samples decoded together as one batch (prompts of --prompt-file "
                                   "and --num-samples); greedy output is the same as one at a time. 1: "
                                   "each sample streamed as it is produced.")] = 16,
    temperature: Annotated[Optional[float], Opt(help="Divide the logits by this; < 1 is more conservative, "
                                                "0 is greedy."), Key("temperature")] = None,
    top_k: Annotated[Optional[int], Opt(help="Sample among the k most likely tokens only (0: all)."),
                     Key("top_k")] = None,
    top_p: Annotated[Optional[float], Opt(help="Nucleus sampling: the smallest set of tokens holding this "
                                          "much probability (1: all)."), Key("top_p")] = None,
    greedy: Annotated[bool, Opt("--greedy", help="Always take the most likely token."), Key("greedy")] \
        = False,
    beam: Annotated[Optional[int], Opt("--beam", "-k", help="Beam search of this width instead of sampling: "
                                       "the most likely continuation (with -n N, the N best); 1 is greedy. "
                                       "A --stop text that is one token (e.g. '\\n') ends a hypothesis."),
                    Key("beam")] = None,
    length_penalty: Annotated[Optional[float], Opt(
        "--length-penalty", "-a", help="Beam search: a hypothesis Y scores log P(Y) / ((5 + |Y|) / 6)^α "
        "(GNMT's length normalisation); 0 ranks by raw log-probability, which favours ending early."),
        Key("length_penalty")] = None,
    window: Annotated[Optional[int], Opt(help="Feed the model only the last N tokens before each new one, "
                                         "from a fresh state (re-read the window, as the window objective "
                                         "trains). Default: the training window of a model trained with "
                                         "--objective window, else 0 (read the whole text once).",
                                         show_default=False)] = None,
    newline_prefix: Annotated[bool, Opt("--newline-prefix/--no-newline-prefix", help="Condition on a newline "
                                        "before the prompt, as the model read each line of its training "
                                        "text. --no-newline-prefix: the prompt's tokens alone, as "
                                        "transformers' generate() takes them (an empty prompt still starts "
                                        "after a newline).")] = True,
    stop: Annotated[Optional[list[str]], Opt(help=r"End a sample where this text appears, e.g. '\n\n' "
                                             r"(escapes \n \t \\ understood; repeatable). </s> always ends "
                                             "one.", show_default=False)] = None,
    fill: Annotated[Optional[str], Opt("--fill", help="Masked LM workspaces (train-transformer --arch "
                                       "encoder): the --top-k (default 5) candidates for each <mask> in "
                                       "this text.",
                                       show_default=False)] = None,
    fmt: Annotated[Literal["text", "jsonl"], Opt("--format", help="text (streamed) | jsonl (text, tokens, "
                                                 "ids and per-token log-probs per sample).")] = "text",
    seed: Seed = None,
    adapter: Adapter = None,
    quantize: Quantize = "none",
    device: Device = None,
    encoding_errors: EncodingErrors = "strict",
) -> None:
    """Generate text with a language-model workspace (greedy, temperature, top-k, top-p, beam search).

    The model continues a newline followed by the prompt, since it learnt from text read as lines: an
    imported GPT-2 given the bare prompt (transformers, or --no-newline-prefix) continues differently.

    A model trained with --objective window (N tokens → the next) generates as it was trained: each
    new token from the last N tokens alone (see --window).

    Example: seqtool generate -w runs/recipes --prompt "Chocolate" --max-tokens 300 --temperature 0.7 --seed 1

    Example: seqtool generate -w runs/recipes --prompt "Chocolate" --beam 5 --stop '\\n' -n 3
    """
    options = config_options(ctx, generate, locals())
    import random

    import torch

    from seqtool.config import check_seed, resolve
    from seqtool.data.io import iter_lines, open_output
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.decoding import DecodeConfig, TextStream, WindowLM, lm_beam
    from seqtool.errors import InputError
    from seqtool.evaluation import workspace_reading
    from seqtool.generation import sample_batch
    from seqtool.kinds import LM_KINDS, MLM_KINDS
    from seqtool.models import load_published
    from seqtool.models.quantize import quantize_int8
    from seqtool.training import runtime
    from seqtool.workspace import Workspace as WS

    if num_samples < 1:
        raise InputError(f"--num-samples must be ≥ 1, got {num_samples}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be ≥ 1, got {batch_size}")
    if prompt is not None and prompt_file is not None:
        raise InputError("give --prompt or --prompt-file, not both")
    cfg = resolve(DecodeConfig, options=options)
    searching = beam is not None or cfg.beam > 1
    if searching and (temperature is not None or top_k is not None or top_p is not None):
        raise InputError("beam search does not sample: --temperature, --top-k and --top-p do not apply",
                         hint="leave them out, or leave out --beam")
    if searching and num_samples > cfg.beam:
        raise InputError(f"with --beam, -n/--num-samples prints the N best hypotheses: it must be ≤ the "
                         f"beam size {cfg.beam}, got {num_samples}",
                         hint=f"raise --beam to at least {num_samples}")
    if length_penalty is not None and not searching:
        raise InputError("--length-penalty ranks beam-search hypotheses", hint="add --beam N")
    if window is not None and window < 0:
        raise InputError(f"--window must be ≥ 0 (0: read the whole text), got {window}")
    report = reporter(ctx)
    path = require_workspace(workspace, ctx)
    if fill is not None or WS.open(path).kind in MLM_KINDS:
        _fill(path, fill, cfg.top_k or 5, fmt, pick(device, ctx, "device"))
        return
    ws = WS.open(path, kinds=LM_KINDS, purpose="generating text")
    dev = runtime.pick_device(pick(device, ctx, "device"))
    model = load_published(ws, dev, adapter)
    if quantize == "int8":
        model = quantize_int8(model, dev)
    tok = load_tokenizer(ws.tokenizer_dir)
    if window is None:
        reading, context, _ = workspace_reading(ws.kind, ws.config, model)
        window = context if reading == "window" else 0
    if window:
        model = WindowLM(model, window).eval()
    seed = pick(seed, ctx, "seed")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    check_seed("--seed", seed)
    generator = torch.Generator(device=dev).manual_seed(seed)
    stops = [unescape(s) for s in stop or []]
    prompts = iter_lines(prompt_file, encoding_errors) if prompt_file is not None else [prompt or ""]

    def rows() -> Iterator[tuple[int, str, int]]:  # (prompt number, prompt, sample number)
        for n, text in enumerate(prompts):
            if unknown := tok.unknown(text):
                report.warn(f"prompt {n + 1}: {_describe_unknown(unknown, tok.kind)} not in the vocabulary "
                            "(read as <unk>)")
            for k in range(num_samples):
                yield n, text, k

    if searching:  # each prompt's --num-samples best continuations, best first
        cfg = dataclasses.replace(cfg, nbest=num_samples)
        with open_output("-") as out:
            for n, text, k in rows():
                if k:
                    continue
                for k, s in enumerate(lm_beam(model, tok, text, cfg, stops, newline_prefix)):
                    if fmt == "text":
                        out.write(("\n" if n or k else "") + text + s.text + "\n")
                    else:
                        out.write(json.dumps({"prompt": text, "sample": k, "beam": cfg.beam, "text": s.text,
                                              "tokens": [tok.id_to_piece(i) for i in s.ids], "ids": s.ids,
                                              "logprobs": [round(lp, 5) for lp in s.logprobs],
                                              "stop_reason": s.stop_reason}, ensure_ascii=False) + "\n")
                out.flush()
        return
    with open_output("-") as out:
        for chunk in _chunks(rows(), batch_size):
            if len(chunk) == 1:  # one row: streamed as it is produced
                (n, text, k), = chunk
                stream = TextStream(model, tok, text, cfg, generator, stops, newline_prefix)
                if fmt == "text":
                    out.write("\n" if n or k else "")  # a blank line between samples
                    out.write(text)
                    for piece in stream:
                        out.write(piece)
                        out.flush()
                    out.write("\n")
                else:
                    for _ in stream:
                        pass
                samples = [stream.sample]
            else:
                samples = sample_batch(model, tok, [text for _, text, _ in chunk], cfg, generator, stops,
                                       newline_prefix)
            for (n, text, k), s in zip(chunk, samples, strict=True):
                if fmt == "text" and len(chunk) > 1:
                    out.write(("\n" if n or k else "") + text + s.text + "\n")
                elif fmt == "jsonl":
                    out.write(json.dumps({"prompt": text, "sample": k, "seed": seed, "text": s.text,
                                          "tokens": [tok.id_to_piece(i) for i in s.ids], "ids": s.ids,
                                          "logprobs": [round(lp, 5) for lp in s.logprobs],
                                          "stop_reason": s.stop_reason}, ensure_ascii=False) + "\n")
            out.flush()


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last one shorter), read lazily."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _fill(path, text: str | None, top_k: int, fmt: str, device: str | None) -> None:
    """--fill: the top candidates for each <mask> of `text`, from a masked language model."""
    from seqtool.data.masking import MASK_TEXT, fill_masks
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.errors import InputError
    from seqtool.kinds import MLM_KINDS
    from seqtool.models import load_published
    from seqtool.training import runtime
    from seqtool.workspace import Workspace as WS

    ws = WS.open(path)
    if ws.kind not in MLM_KINDS:
        raise InputError(f"--fill needs a masked language model; workspace {path} holds a {ws.kind} model",
                         hint="train one with: seqtool train-transformer --arch encoder")
    if text is None:
        raise InputError(f"workspace {path} holds a masked language model (a BERT-like encoder), which fills "
                         "in masked tokens rather than generating text left to right",
                         hint=f'use: seqtool generate -w {path} --fill "the students opened their <mask>"')
    tok = load_tokenizer(ws.tokenizer_dir)
    masks = fill_masks(load_published(ws, runtime.pick_device(device)), tok, text, top_k)
    parts = text.split(MASK_TEXT)
    filled = parts[0] + "".join(c[0][0].replace("▁", " ") + part
                                for c, part in zip(masks, parts[1:], strict=True))
    if fmt == "jsonl":
        candidates = [[{"token": piece, "prob": round(p, 5)} for piece, p in c] for c in masks]
        sys.stdout.write(json.dumps({"text": text, "filled": filled, "masks": candidates},
                                    ensure_ascii=False) + "\n")
        return
    sys.stdout.write(filled + "\n")
    for n, candidates in enumerate(masks, 1):
        shown = "  ".join(f"{piece!r} {p:.3f}" for piece, p in candidates)
        sys.stdout.write(f"{MASK_TEXT} {n}: {shown}\n")


def unescape(text: str) -> str:
    r"""'\n\n' typed on a command line → two newlines (also \t, \r and \\)."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def _describe_unknown(unknown: dict[str, int], kind: str) -> str:
    what = "words" if kind == "word" else "characters"
    items = ", ".join(f"{piece!r}" + (f" ×{n}" if n > 1 else "") for piece, n in sorted(unknown.items()))
    return f"{what} {items}"

