"""Does BART-style denoising pretraining help translation on the phrasebook? The same encoder-decoder
Transformer, fine-tuned with the identical `seqtool finetune` command (same steps, data, seed), once
from denoising-pretrained weights and once from random weights; BLEU/chrF of greedy translations of
the phrasebook's test set (`seqtool translate` + `seqtool bleu`).

Pretraining (`seqtool train-transformer --arch encoder-decoder --objective denoise`) reads the
phrasebook's training sentences as monolingual text: the English side, then the French side, each a
stream of sentences; it never sees which sentence translates which. Fine-tuning reads --pairs of the
training pairs. The baseline's random weights have the pretrained model's architecture and tokenizer
(built here; seed = the fine-tuning seed). Reference: fine-tuning from random weights.

    python benchmarks/bench_denoise.py                      # the figures in RESULTS.md
    python benchmarks/bench_denoise.py --pretrain-steps 40 --steps 20 --seeds 1     # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PHRASEBOOK = Path(__file__).resolve().parents[1] / "recipes_data" / "phrasebook"


def seqtool(*args: object, stdin: Path | None = None) -> str:
    cmd = [sys.executable, "-m", "seqtool", *map(str, args)]
    shown = " ".join(map(str, args)) + (f" < {stdin}" if stdin else "")
    print(f"$ seqtool {shown}", file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread each: the machine is shared
    with open(stdin or os.devnull, "rb") as inp:
        done = subprocess.run(cmd, stdin=inp, capture_output=True, env=env)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return done.stdout.decode()


def random_twin(pretrained: Path, out: Path, seed: int) -> None:
    """A workspace holding the pretrained model's architecture and tokenizer with random weights."""
    from seqtool.models.transformer import Transformer
    from seqtool.workspace import Workspace

    pre = Workspace.open(pretrained)
    torch.manual_seed(seed)
    model = Transformer.from_arch(pre.architecture())
    ws = Workspace.create(out, pre.kind, pre.config)
    shutil.copytree(pre.tokenizer_dir, ws.tokenizer_dir, dirs_exist_ok=True)
    ws.publish(model.state_dict(), model.arch())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrain-steps", type=int, default=400)
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps (each arm)")
    p.add_argument("--pairs", type=int, default=1000, help="training pairs for fine-tuning (0: all)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--noise", default="infill,permute")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_denoise_"))
    en = (PHRASEBOOK / "train.en").read_text(encoding="utf-8").splitlines()
    fr = (PHRASEBOOK / "train.fr").read_text(encoding="utf-8").splitlines()
    (tmp / "mono.txt").write_text("\n".join(en + fr) + "\n", encoding="utf-8")
    n = args.pairs or len(en)
    (tmp / "pairs.en").write_text("\n".join(en[:n]) + "\n", encoding="utf-8")
    (tmp / "pairs.fr").write_text("\n".join(fr[:n]) + "\n", encoding="utf-8")
    start = time.time()
    model = ("--n-layers", 2, "--d-model", 64, "--heads", 4, "--d-ff", 256, "--dropout", 0.1)
    seqtool("train-transformer", tmp / "mono.txt", "-w", tmp / "pre", "--arch", "encoder-decoder",
            "--objective", "denoise", "--noise", args.noise, "--kind", "bpe", "--vocab-size", 1000,
            "--block-size", 96, *model, "--batch-tokens", 1024, "--max-steps", args.pretrain_steps,
            "--eval-every", args.pretrain_steps, "--warmup", 100, "--set", "valid.max_sentences=100",
            "--device", "cpu", "--seed", 0)
    rows: dict[str, list[dict]] = {"random init": [], "denoise-pretrained": []}
    for seed in range(args.seeds):
        random_twin(tmp / "pre", tmp / f"random{seed}", seed)
        for arm, source in (("random init", tmp / f"random{seed}"), ("denoise-pretrained", tmp / "pre")):
            ws = tmp / f"mt-{arm.split()[0]}{seed}"
            seqtool("finetune", "--from", source, "--src", tmp / "pairs.en", "--tgt", tmp / "pairs.fr",
                    "--valid-src", PHRASEBOOK / "valid.en", "--valid-tgt", PHRASEBOOK / "valid.fr", "-w", ws,
                    "--max-steps", args.steps, "--eval-every", args.steps, "--lr", 1e-3, "--warmup", 50,
                    "--device", "cpu", "--seed", seed)
            hyp = tmp / f"{ws.name}.hyp"
            hyp.write_text(seqtool("translate", "-w", ws, "--device", "cpu", stdin=PHRASEBOOK / "test.en"),
                           encoding="utf-8")
            rows[arm].append(json.loads(seqtool("bleu", hyp, PHRASEBOOK / "test.fr", "--metrics", "bleu,chrf",
                                                "--json")))
    minutes = (time.time() - start) / 60
    n_test = len((PHRASEBOOK / "test.en").read_text(encoding="utf-8").splitlines())

    def score(result: list[dict], name: str) -> float:  # bleu --json: one object per metric
        return float(next(m["score"] for m in result if m["name"].lower().startswith(name)))

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, load "
          f"average at the end {os.getloadavg()[0]:.1f}; {minutes:.1f} min in all")
    print(f"encoder-decoder 2+2 layers × 64, joint bpe 1000; pretraining {args.pretrain_steps} steps "
          f"({args.noise}) on {len(en) + len(fr):,} monolingual phrasebook lines; fine-tuning {args.steps} "
          f"steps on {n:,} pairs; greedy translation of the {n_test} test sentences, {args.seeds} "
          "fine-tuning seeds\n")
    print("| start of fine-tuning | BLEU, median | spread | chrF, median | BLEU ratio to random init |")
    print("|---|---:|---:|---:|---:|")
    ref = statistics.median(score(r, "bleu") for r in rows["random init"])
    for arm, results in rows.items():
        bleu = [score(r, "bleu") for r in results]
        chrf = statistics.median(score(r, "chrf") for r in results)
        med = statistics.median(bleu)
        ratio = f"{med / ref:.2f}×" if ref else "n/a"
        print(f"| {arm} | {med:.2f} | {min(bleu):.2f}–{max(bleu):.2f} | {chrf:.2f} | {ratio} |")
    print(f"\nsignature: {rows['random init'][0][0]['signature']}")


if __name__ == "__main__":
    main()
