"""Generation speed and int8 quality (issue 18).

1. speed: random models of three shapes (--models): GPT-2-shaped (6 layers, 384 wide, vocabulary 50,257,
   30M parameters), a small decoder (4 × 128, 65 chars) and a char LSTM (2 × 256), decoding 1 and 16 rows
   (--batches), greedy: seqtool, optionally an earlier seqtool (--baseline DIR) and `--quantize int8`
   (--int8), and transformers' `generate` (cache on, the same weights); interleaved rounds; each against
   the memory-bandwidth floor (rows × measured copy bandwidth, read + write / bytes of weights per step).
2. profile: where one decoding step's time goes (torch.profiler), per model and rows: linear layers,
   other ops, and the rest (Python and dispatch: wall time minus the ops' own time); then the GPT-2-shaped
   output layer alone, nn.Linear vs the (D, V) copy a decoding step reads (models/stepping.py).
3. with a language-model workspace (--lm WS --lm-text FILE): perplexity fp32 vs int8, and prompts decoded
   one at a time (--batch-size 1) vs batched (16 rows), tokens/s.
4. with a translation workspace (--mt WS --src FILE --ref FILE): BLEU and sentences/s, fp32 vs int8.

    python benchmarks/bench_generate.py --threads 1 --rounds 3
    mkdir -p /tmp/before && git archive 90bcf72 seqtool | tar -x -C /tmp/before   # before issue 18's cuts
    python benchmarks/bench_generate.py --threads 1 --baseline /tmp/before --skip-profile
    python benchmarks/bench_generate.py --lm runs/shk --lm-text valid.txt --mt runs/enfr \
        --src test.en --ref test.fr --skip-speed
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def copy_bandwidth(mbytes: int = 256, repeats: int = 7) -> float:
    """GB/s moved (read + write) by one large tensor copy, median of `repeats`."""
    import torch

    src = torch.ones(mbytes << 18)  # float32: mbytes MB
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times) / 1e9


def weight_bytes(model) -> int:
    """Bytes read per decoded token: every weight matrix once (a tied embedding/head once, as the head);
    embedding and position tables contribute one row, left out. Quantized linears count their int8 bytes."""
    import torch

    total, seen = 0, set()
    for module in model.modules():
        if hasattr(module, "_packed_params") and hasattr(module, "out_features"):  # DynamicQuantizedLinear
            w = module.weight()
            total += w.numel() + 4 * module.out_features  # int8 weights + float bias
        elif isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)):
            for p in module.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel() * p.element_size()
    return total


# ---------------------------------------------------------------------------------------------
# 1. speed

SHAPES = {  # the decoders, and the char LSTM of bench_generate_rnn.py
    "gpt2": dict(n_layers=6, n_heads=6, d_model=384, d_ff=1536, vocab_size=50257, max_len=1024),
    "small": dict(n_layers=4, n_heads=4, d_model=128, d_ff=512, vocab_size=65, max_len=1024),
    "lstm": dict(n_layers=2, hidden=256, vocab_size=65),
}


def load_baseline(directory: str) -> dict:
    """The model classes and `sample` of another seqtool (`directory` holds its `seqtool` package, e.g.
    `git archive COMMIT seqtool | tar -x -C DIR`), imported before this checkout's and then forgotten
    by sys.modules, so both run side by side in one process."""
    sys.path.insert(0, directory)
    from seqtool.decoding import DecodeConfig, sample
    from seqtool.models.rnn_lm import RNNLM, RNNLMConfig
    from seqtool.models.transformer import Transformer, TransformerConfig

    found = dict(Transformer=Transformer, TransformerConfig=TransformerConfig, RNNLM=RNNLM,
                 RNNLMConfig=RNNLMConfig, DecodeConfig=DecodeConfig, sample=sample)
    for name in [m for m in sys.modules if m == "seqtool" or m.startswith("seqtool.")]:
        del sys.modules[name]
    sys.path.remove(directory)
    return found


def current() -> dict:
    from seqtool.decoding import DecodeConfig, sample
    from seqtool.models.rnn_lm import RNNLM, RNNLMConfig
    from seqtool.models.transformer import Transformer, TransformerConfig

    return dict(Transformer=Transformer, TransformerConfig=TransformerConfig, RNNLM=RNNLM,
                RNNLMConfig=RNNLMConfig, DecodeConfig=DecodeConfig, sample=sample)


def build(code: dict, name: str):
    import torch

    torch.manual_seed(0)
    shape = SHAPES[name]
    if name == "lstm":
        cfg = code["RNNLMConfig"](cell="lstm", n_layers=shape["n_layers"], hidden=shape["hidden"],
                                  dropout=0.0)
        return code["RNNLM"](cfg, shape["vocab_size"]).eval()
    return code["Transformer"](code["TransformerConfig"](
        arch="decoder", positions="learned", norm_first=True, tie=True, activation="gelu-tanh", bias=True,
        dropout=0.0, **shape)).eval()


def bench_speed(args: argparse.Namespace, baseline: dict | None) -> None:
    import torch
    from bench_transformer import _hf_twin

    from seqtool.models.quantize import quantize_int8

    code = current()
    n = args.tokens
    counts = [int(t) for t in args.speed_threads.split(",")] if args.speed_threads else [args.threads]
    print(f"\n## speed: greedy, {n} new tokens per row, {args.rounds} interleaved rounds, "
          f"{' and '.join(map(str, counts))} thread(s)\n")
    print("Floor: copy bandwidth / bytes of weights read per step, × the rows a step serves.\n")
    print("| model | rows | run | tokens/s median (min–max) | vs seqtool | MB read/step | floor tokens/s | "
          "share of floor | greedy tokens = seqtool |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        ours = build(code, name)
        runs = {"seqtool": ours}
        if baseline is not None:
            runs["seqtool before"] = build(baseline, name)
        if args.int8:
            runs["seqtool int8"] = quantize_int8(ours)
        hf = _hf_twin(ours, SHAPES[name]) if name != "lstm" and not args.skip_transformers else None
        params = sum(p.numel() for p in ours.parameters()) / 1e6
        for rows in (int(b) for b in args.batches.split(",")):
            prompt = (torch.arange(rows) * 7 + 11).remainder(SHAPES[name]["vocab_size"]).view(rows, 1)
            fns = {}
            for label, model in runs.items():
                lib = baseline if label == "seqtool before" else code
                cfg = lib["DecodeConfig"](max_tokens=n, greedy=True)
                fns[label] = (lambda model=model, lib=lib, cfg=cfg, prompt=prompt:
                              [h.ids for h in lib["sample"](model, model.start(), prompt, cfg)])
            if hf is not None:
                def run_hf(hf=hf, prompt=prompt) -> list[list[int]]:
                    with torch.no_grad():
                        out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                          use_cache=True, pad_token_id=0, eos_token_id=None)
                    return out[:, 1:].tolist()
                fns["transformers"] = run_hf
            tokens = {label: fn() for label, fn in fns.items()}  # warm-up, and the tokens compared
            rates: dict[tuple[str, int], list[float]] = {(label, t): [] for t in counts for label in fns}
            bandwidth = []
            order = list(fns.items())
            for r in range(args.rounds):
                torch.set_num_threads(counts[0])
                bandwidth.append(copy_bandwidth())  # it flushes the caches: each run goes first in turn
                for t in counts:  # thread counts interleave too: their ratios come from the same minutes
                    torch.set_num_threads(t)
                    for label, fn in order[r % len(order):] + order[:r % len(order)]:
                        start = time.perf_counter()
                        fn()
                        rates[label, t].append(rows * n / (time.perf_counter() - start))
            torch.set_num_threads(counts[0])
            gbps, base = statistics.median(bandwidth), statistics.median(rates["seqtool", counts[0]])
            for (label, t), values in rates.items():
                size = weight_bytes(runs.get(label, ours))
                floor = rows * gbps * 1e9 / size
                same = sum(a == b for x, y in zip(tokens[label], tokens["seqtool"], strict=True)
                           for a, b in zip(x, y, strict=True)) / (rows * n)
                med = statistics.median(values)
                run = f"{label}, {t} thread{'s' if t > 1 else ''}" if len(counts) > 1 else label
                print(f"| {name} ({params:.1f}M) | {rows} | {run} | {spread(values)} | {med / base:.2f} | "
                      f"{size / 1e6:.1f} | {floor:.0f} | {med / floor:.0%} | {same:.0%} |", flush=True)
            print(f"| | | copy bandwidth (read + write) | {spread(bandwidth)} GB/s | | | | | |", flush=True)


# ---------------------------------------------------------------------------------------------
# 2. profile


def bench_profile(args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    code = current()
    steps = 48
    print(f"\n## profile: one greedy decoding step ({steps} steps at positions 17–64, "
          f"{torch.get_num_threads()} thread(s), profiler on)\n")
    print("| model | rows | ms/step | linear layers | other ops | Python, dispatch, profiler | "
          "op calls/step |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        model = build(code, name)
        for rows in (int(b) for b in args.batches.split(",")):
            state, token = model.start(), torch.full((rows, 1), 11)
            with torch.no_grad():
                for _ in range(16):
                    logits, state = model.step(token, state)
                    token = logits.argmax(-1, keepdim=True)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    start = time.perf_counter()
                    for _ in range(steps):
                        logits, state = model.step(token, state)
                        token = logits.argmax(-1, keepdim=True)
                    wall = time.perf_counter() - start
            events = prof.key_averages()
            ops = sum(e.self_cpu_time_total for e in events) / 1e6  # seconds
            linear = sum(e.self_cpu_time_total for e in events
                         if e.key in ("aten::addmm", "aten::mm", "aten::lstm_cell")) / 1e6
            calls = sum(e.count for e in events)
            print(f"| {name} | {rows} | {1000 * wall / steps:.2f} | {linear / wall:.0%} | "
                  f"{(ops - linear) / wall:.0%} | {max(wall - ops, 0.0) / wall:.0%} | {calls / steps:.0f} |",
                  flush=True)
    bench_head(args)


def bench_head(args: argparse.Namespace) -> None:
    """The GPT-2-shaped output layer alone: nn.Linear vs stepping.step_logits (its (D, V) copy)."""
    import torch

    from seqtool.models.stepping import step_logits

    torch.manual_seed(0)
    head = torch.nn.Linear(384, 50257, bias=False)
    print("\n| GPT-2-shaped head (50,257 × 384) | rows | nn.Linear ms | step_logits ms | ratio |")
    print("|---|---:|---:|---:|---:|")
    with torch.no_grad():
        for rows in (int(b) for b in args.batches.split(",")):
            h = torch.randn(rows, 384)
            step_logits(head, h)  # makes the copy
            times: dict[str, list[float]] = {"linear": [], "step": []}
            for _ in range(15):
                for label in times:
                    start = time.perf_counter()
                    head(h) if label == "linear" else step_logits(head, h)
                    times[label].append(1000 * (time.perf_counter() - start))
            a, b = statistics.median(times["linear"]), statistics.median(times["step"])
            print(f"| median of 15 interleaved calls | {rows} | {a:.2f} | {b:.2f} | ×{a / b:.2f} |")


# ---------------------------------------------------------------------------------------------
# 3. a language-model workspace


def bench_lm(args: argparse.Namespace) -> None:
    from seqtool import evaluation
    from seqtool.data.io import iter_lines
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.decoding import DecodeConfig, TextStream
    from seqtool.generation import sample_batch
    from seqtool.models import load_published
    from seqtool.models.quantize import quantize_int8
    from seqtool.training import lm
    from seqtool.workspace import Workspace

    ws = Workspace.open(args.lm)
    tok, model = load_tokenizer(ws.tokenizer_dir), load_published(ws)
    int8 = quantize_int8(model)
    lines = list(iter_lines(args.lm_text))
    ids = lm.encode(tok, lines)
    reading, context, rows = evaluation.workspace_reading(ws.kind, ws.config, model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"\n## {args.lm} ({ws.kind}, {params:.2f}M parameters) on "
          f"{args.lm_text} ({ids.numel():,} tokens)\n")
    print("| model | loss | perplexity | seconds |")
    print("|---|---:|---:|---:|")
    ppl = {}
    for name, m in (("fp32", model), ("int8", int8)):
        start = time.perf_counter()
        scores = evaluation.text_scores(m, tok, ids, reading, context, rows)
        ppl[name] = scores["ppl"]
        print(f"| {name} | {scores['loss']:.4f} | {scores['ppl']:.3f} | {time.perf_counter() - start:.1f} |")
    print(f"\nperplexity change int8 / fp32: {ppl['int8'] / ppl['fp32'] - 1:+.2%}")

    prompts = [line for line in lines if line.strip()][: args.prompts]
    cfg = DecodeConfig(max_tokens=args.lm_tokens, greedy=True)
    print(f"\n### {len(prompts)} prompts × {args.lm_tokens} new tokens, greedy, fp32 "
          f"({args.rounds} interleaved rounds)\n")
    alone_name, batched_name = "one at a time (--batch-size 1)", f"batched ({len(prompts)} rows)"
    rates: dict[str, list[float]] = {alone_name: [], batched_name: []}
    same = True
    for _ in range(args.rounds):
        start = time.perf_counter()
        alone = []
        for p in prompts:
            stream = TextStream(model, tok, p, cfg)
            for _piece in stream:
                pass
            alone.append(stream.sample.ids)
        rates[alone_name].append(sum(map(len, alone)) / (time.perf_counter() - start))
        start = time.perf_counter()
        together = [s.ids for s in sample_batch(model, tok, prompts, cfg)]
        rates[batched_name].append(sum(map(len, together)) / (time.perf_counter() - start))
        same &= together == alone
    print("| decoding | tokens/s median (min–max) |")
    print("|---|---:|")
    for name, values in rates.items():
        print(f"| {name} | {spread(values)} |")
    ratio = statistics.median(rates[batched_name]) / statistics.median(rates[alone_name])
    print(f"\nbatched / one at a time: ×{ratio:.2f}; the same greedy tokens: {same}")


# ---------------------------------------------------------------------------------------------
# 4. a translation workspace


def bench_mt(args: argparse.Namespace) -> None:
    import torch

    from seqtool.data.io import iter_lines
    from seqtool.metrics import corpus_bleu
    from seqtool.models.quantize import quantize_int8
    from seqtool.translation import TranslateConfig, Translator

    src = list(iter_lines(args.src))[: args.sentences]
    ref = list(iter_lines(args.ref))[: args.sentences]
    translator = Translator.from_workspace(args.mt, torch.device("cpu"))
    fp32 = translator.model
    print(f"\n## {args.mt}: {len(src)} sentences of {args.src}, greedy, batch 64\n")
    print("| model | BLEU | sentences/s |")
    print("|---|---:|---:|")
    bleu = {}
    for name, model in (("fp32", fp32), ("int8", quantize_int8(fp32))):
        translator.model = model
        start = time.perf_counter()
        hyps = [c[0].text for c in translator.translate(src, TranslateConfig())]
        seconds = time.perf_counter() - start
        score = corpus_bleu(hyps, [ref])
        bleu[name] = score.score
        print(f"| {name} | {score.score:.2f} | {len(src) / seconds:.1f} |")
    print(f"\nBLEU change int8 − fp32: {bleu['int8'] - bleu['fp32']:+.2f} ({score.signature})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--speed-threads", help="thread counts the speed runs interleave, e.g. 1,2 "
                        "(default: --threads)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per row and speed run")
    parser.add_argument("--models", default="gpt2,small,lstm", help=f"of {', '.join(SHAPES)}")
    parser.add_argument("--batches", default="1,16", help="rows decoded together")
    parser.add_argument("--int8", action="store_true", help="also time --quantize int8")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also time the seqtool package in DIR (an earlier commit), interleaved")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--lm", help="a language-model workspace")
    parser.add_argument("--lm-text", help="held-out text for --lm")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--lm-tokens", type=int, default=64)
    parser.add_argument("--mt", help="a translation workspace")
    parser.add_argument("--src")
    parser.add_argument("--ref")
    parser.add_argument("--sentences", type=int, default=500)
    args = parser.parse_args()
    baseline = load_baseline(args.baseline) if args.baseline else None  # before this checkout's imports
    import torch

    torch.set_num_threads(args.threads)
    print(f"machine: {os.uname().machine}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f} at start")
    if not args.skip_speed:
        bench_speed(args, baseline)
    if not args.skip_profile:
        bench_profile(args)
    if args.lm:
        bench_lm(args)
    if args.mt:
        bench_mt(args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
