"""Knowledge distillation on real text: an LSTM student trained on a Transformer teacher's soft targets
(`seqtool finetune --distill-from`) vs the same student trained alone, same steps, same data.

tiny Shakespeare (char tokens): the teacher, a decoder Transformer, is trained first with
`seqtool train-transformer`; each student starts from the same random weights (one per seed, built
here with the teacher's tokenizer) and is trained with the identical `seqtool finetune` command, with
and without `--distill-from`. Quality: validation loss (nats per char) and perplexity of the published
student on the held-out text, as `seqtool evaluate` reports it. Reference: the student trained alone.

    python benchmarks/bench_distill.py                 # the figures in RESULTS.md
    python benchmarks/bench_distill.py --teacher-steps 60 --steps 40 --seeds 1     # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare/input.txt")


def seqtool(*args: object) -> str:
    cmd = [sys.executable, "-m", "seqtool", *map(str, args)]
    print("$ seqtool " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread each: the machine is shared
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def student(path: Path, teacher: Path, args, seed: int) -> None:
    """A randomly initialised LSTM LM workspace with the teacher's tokenizer."""
    from seqtool.data.tokenizers import load_tokenizer
    from seqtool.models.rnn_lm import RNNLM, RNNLMConfig
    from seqtool.workspace import Workspace

    tok = load_tokenizer(teacher / "tokenizer")
    torch.manual_seed(seed)
    cfg = RNNLMConfig(cell="lstm", n_layers=1, hidden=args.student_hidden, dropout=0.0)
    model = RNNLM(cfg, tok.vocab_size)
    ws = Workspace.create(path, "rnn-lm", {"data": {"bptt": args.context}})
    tok.save(ws.tokenizer_dir)
    ws.publish(model.state_dict(), model.arch())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher-steps", type=int, default=400)
    p.add_argument("--steps", type=int, default=200, help="student steps (each arm)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--student-hidden", type=int, default=64)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--chars", type=int, default=100_000, help="characters of tiny Shakespeare used")
    args = p.parse_args()
    torch.set_num_threads(1)

    text = SHAKESPEARE.read_text(encoding="utf-8")[: args.chars]
    cut = int(len(text) * 0.9)
    tmp = Path(tempfile.mkdtemp(prefix="bench_distill_"))
    (tmp / "train.txt").write_text(text[:cut], encoding="utf-8")
    (tmp / "valid.txt").write_text(text[cut:], encoding="utf-8")
    train, valid = tmp / "train.txt", tmp / "valid.txt"
    start = time.time()
    seqtool("train-transformer", train, "-w", tmp / "teacher", "--arch", "decoder", "--kind", "char",
            "--valid", valid, "--block-size", args.context, "--n-layers", 2, "--d-model", 96, "--heads", 4,
            "--d-ff", 384, "--dropout", 0.0, "--batch-size", 16, "--max-steps", args.teacher_steps,
            "--eval-every", args.teacher_steps, "--lr", 3e-3, "--warmup", 50, "--device", "cpu", "--seed", 0)
    teacher_scores = json.loads(seqtool("evaluate", "-w", tmp / "teacher", "--data", valid, "--json",
                                        "--device", "cpu"))["model"]
    rows = {"alone": [], "distilled": []}
    for seed in range(args.seeds):
        student(tmp / f"init{seed}", tmp / "teacher", args, seed)
        common = ("--from", tmp / f"init{seed}", "--data", train, "--valid", valid, "--context", args.context,
                  "--batch-size", 16, "--max-steps", args.steps, "--eval-every", args.steps, "--lr", 3e-3,
                  "--device", "cpu", "--seed", seed)
        for arm in rows:
            ws = tmp / f"{arm}{seed}"
            extra = ("--distill-from", tmp / "teacher", "--distill-temperature", args.temperature,
                     "--distill-alpha", args.alpha) if arm == "distilled" else ()
            seqtool("finetune", *common, *extra, "-w", ws)
            rows[arm].append(json.loads(seqtool("evaluate", "-w", ws, "--data", valid, "--json", "--device",
                                                "cpu"))["model"])
    minutes = (time.time() - start) / 60

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"load average at the end {os.getloadavg()[0]:.1f}; {minutes:.1f} min in all")
    print(f"data: tiny Shakespeare, first {args.chars:,} chars, 90% train / 10% valid; char tokens")
    print(f"teacher: decoder Transformer 2×96, {args.teacher_steps} steps: valid loss "
          f"{teacher_scores['loss']:.3f} (ppl {teacher_scores['ppl']:.2f})")
    print(f"student: LSTM 1×{args.student_hidden}, {args.steps} steps per arm, {args.seeds} seeds; "
          f"distillation T={args.temperature}, alpha={args.alpha}\n")
    print("| student | valid loss (nats/char), median | spread (min–max) | ppl, median | next-char accuracy, "
          "median | loss ratio to alone |")
    print("|---|---:|---:|---:|---:|---:|")
    alone = statistics.median(r["loss"] for r in rows["alone"])
    for arm, scores in rows.items():
        losses = [r["loss"] for r in scores]
        med = statistics.median(losses)
        ppl = statistics.median(r["ppl"] for r in scores)
        acc = statistics.median(r.get("accuracy", float("nan")) for r in scores)
        print(f"| {arm} | {med:.4f} | {min(losses):.4f}–{max(losses):.4f} | {ppl:.3f} | {acc:.4f} | "
              f"{med / alone:.4f}× |")
    print("\nper seed (alone → distilled): " + ", ".join(
        f"{a['loss']:.4f} → {d['loss']:.4f}" for a, d in zip(rows["alone"], rows["distilled"], strict=True)))


if __name__ == "__main__":
    main()
