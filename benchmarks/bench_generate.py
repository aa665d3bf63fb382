"""Generation speed and int8 quality (issue 18).

1. speed: a GPT-2-shaped random model (6 layers, 384 wide, vocabulary 50,257, 30M parameters), batch 1,
   greedy: seqtool fp32, seqtool `--quantize int8` and transformers' `generate` (cache on, same weights),
   interleaved rounds; each against the memory-bandwidth floor (bytes of weights read per token / the
   measured copy bandwidth, read + write).
2. profile: where one decoding step's time goes (torch.profiler): linear layers, other ops, and the rest
   (Python and dispatch: wall time minus the ops' own time).
3. with a language-model workspace (--lm WS --lm-text FILE): perplexity fp32 vs int8, and prompts decoded
   one at a time (--batch-size 1) vs batched (16 rows), tokens/s.
4. with a translation workspace (--mt WS --src FILE --ref FILE): BLEU and sentences/s, fp32 vs int8.

    python benchmarks/bench_generate.py --threads 1 --rounds 3
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


def bench_speed(args: argparse.Namespace) -> None:
    import torch
    from bench_transformer import _hf_twin

    from seqtool.decoding import DecodeConfig, sample
    from seqtool.models.quantize import quantize_int8
    from seqtool.models.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    shape = dict(n_layers=6, n_heads=6, d_model=384, d_ff=1536, vocab_size=50257, max_len=1024)
    ours = Transformer(TransformerConfig(arch="decoder", positions="learned", norm_first=True, tie=True,
                                         activation="gelu-tanh", bias=True, dropout=0.0, **shape)).eval()
    int8 = quantize_int8(ours)
    hf = _hf_twin(ours, shape)
    prompt, n = torch.tensor([[464]]), args.tokens
    cfg = DecodeConfig(max_tokens=n, greedy=True)
    runs = {"seqtool fp32": lambda: sample(ours, ours.start(), prompt, cfg)[0].ids,
            "seqtool int8": lambda: sample(int8, int8.start(), prompt, cfg)[0].ids}
    if hf is not None:
        def run_hf() -> list[int]:
            with torch.no_grad():
                out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                                  pad_token_id=0, eos_token_id=None)
            return out[0, 1:].tolist()
        runs["transformers fp32"] = run_hf
    tokens = {name: fn() for name, fn in runs.items()}  # warm-up, and the tokens compared
    agree = {name: sum(a == b for a, b in zip(ids, tokens["seqtool fp32"], strict=True)) / n
             for name, ids in tokens.items()}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    bandwidth = []
    for _ in range(args.rounds):
        bandwidth.append(copy_bandwidth())
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            rates[name].append(n / (time.perf_counter() - start))
    gbps = statistics.median(bandwidth)
    sizes = {"seqtool fp32": weight_bytes(ours), "seqtool int8": weight_bytes(int8),
             "transformers fp32": weight_bytes(ours)}
    print(f"\n## speed: GPT-2 shape ({ours.num_params() / 1e6:.1f}M parameters), batch 1, greedy, {n} new "
          f"tokens, {args.rounds} interleaved rounds, {torch.get_num_threads()} thread(s)\n")
    print(f"copy bandwidth (read + write): {spread(bandwidth)} GB/s\n")
    print("| run | tokens/s median (min–max) | vs seqtool fp32 | MB read/token | floor tokens/s | "
          "share of floor | greedy tokens = fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = statistics.median(rates["seqtool fp32"])
    for name, values in rates.items():
        floor = gbps * 1e9 / sizes[name]
        med = statistics.median(values)
        print(f"| {name} | {spread(values)} | {med / base:.2f} | {sizes[name] / 1e6:.1f} | {floor:.0f} | "
              f"{med / floor:.0%} | {agree[name]:.0%} |")


# ---------------------------------------------------------------------------------------------
# 2. profile


def bench_profile(args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from seqtool.models.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    model = Transformer(TransformerConfig(arch="decoder", positions="learned", norm_first=True, tie=True,
                                          activation="gelu-tanh", dropout=0.0, n_layers=6, n_heads=6,
                                          d_model=384, d_ff=1536, vocab_size=50257, max_len=1024)).eval()
    state, token, steps = model.start(), torch.tensor([[464]]), 48
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
    linear = sum(e.self_cpu_time_total for e in events if e.key in ("aten::addmm", "aten::mm")) / 1e6
    calls = sum(e.count for e in events)
    print(f"\n## profile: one decoding step of the GPT-2 shape ({steps} steps at positions 17–64, "
          f"{torch.get_num_threads()} thread(s), profiler on)\n")
    print("| part | ms/step | share |")
    print("|---|---:|---:|")
    for part, seconds in (("linear layers (aten::addmm, aten::mm)", linear), ("other ops", ops - linear),
                          ("Python, dispatch, profiler (wall − ops)", max(wall - ops, 0.0))):
        print(f"| {part} | {1000 * seconds / steps:.2f} | {seconds / wall:.0%} |")
    print(f"\n{calls / steps:.0f} op calls per step")


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per speed run")
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
    import torch

    torch.set_num_threads(args.threads)
    print(f"machine: {os.uname().machine}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f} at start")
    if not args.skip_speed:
        bench_speed(args)
    if not args.skip_profile:
        bench_profile(args)
    if args.lm:
        bench_lm(args)
    if args.mt:
        bench_mt(args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
