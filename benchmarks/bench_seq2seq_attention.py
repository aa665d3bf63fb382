"""Attention vs the thought vector at equal training time: test BLEU of `--attention none | additive |
general` on the Tatoeba English→French split in ../shared/data/eng-fra (not committed), and optionally a
small Transformer encoder-decoder (`--models ...,transformer`) on the same data, tokenizer and budget.

Training pairs with at most --max-words words on both sides are sampled (--train-pairs, seeded); the
first --valid-pairs of the valid split validate (loss, and greedy BLEU on 500 of them picks the published
weights). One joint unigram tokenizer is learned once with `seqtool build-vocab` and shared by the runs.
Each model then trains for the same --time-budget (validation included) with `seqtool train-seq2seq`, one
after the other, translates the whole test split greedily with `seqtool translate`, and is scored with
`seqtool bleu`. The `transformer` model runs `seqtool train-transformer --arch encoder-decoder` (pre-LN,
sinusoidal, tied; --tf-layers/--tf-heads/--tf-d-model/--tf-d-ff, dropout 0.1, AdamW 1e-3 with 300 warmup
steps and inverse-sqrt decay, label smoothing 0.1) with the same batch tokens, max length, validation and
seed. Prints a markdown table with the steps each run reached, its test BLEU and the difference
to the thought vector, the sacreBLEU signature, and the load average sampled during the runs.

    nice -n 5 python benchmarks/bench_seq2seq_attention.py [--time-budget 6m] [--out runs/bench-attention]
        [--threads 1] [--hidden 128] [--embedding 128] [--train-pairs 30000]
        [--models none,additive,general,transformer]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "eng-fra"


def seqtool(*args: object, stdout: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m seqtool ARGS`; stdout to a file when given; stderr kept for the report."""
    cmd = [sys.executable, "-m", "seqtool", *map(str, args)]
    if stdout is None:
        result = subprocess.run(cmd, capture_output=True, text=True)
    else:
        with open(stdout, "w", encoding="utf-8") as out:
            result = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return result


def prepare(data: Path, out: Path, train_pairs: int, valid_pairs: int, max_words: int, seed: int) -> None:
    """OUT/data/{train,valid}.{en,fr}: a seeded sample of the short training pairs, the valid head."""
    def read(name: str) -> list[str]:
        return (data / name).read_text(encoding="utf-8").splitlines()

    pairs = [(e, f) for e, f in zip(read("train.en"), read("train.fr"), strict=True)
             if 0 < len(e.split()) <= max_words and 0 < len(f.split()) <= max_words]
    random.Random(seed).shuffle(pairs)
    target = out / "data"
    target.mkdir(parents=True, exist_ok=True)
    valid = list(zip(read("valid.en"), read("valid.fr"), strict=True))[:valid_pairs]
    for split, chosen in (("train", pairs[:train_pairs]), ("valid", valid)):
        for side, index in (("en", 0), ("fr", 1)):
            text = "".join(p[index] + "\n" for p in chosen)
            (target / f"{split}.{side}").write_text(text, encoding="utf-8")


class LoadSampler:
    """The 1-minute load average, sampled every 10 s in a background thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(10)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def train_and_score(attention: str, args: argparse.Namespace, tok: Path) -> dict:
    """Train model ATTENTION (none | additive | general: train-seq2seq; transformer: train-transformer)."""
    d, ws = args.out / "data", args.out / f"ws-{attention}"
    common = ("-w", ws, "-t", tok, "--src", d / "train.en", "--tgt", d / "train.fr", "--valid-src",
              d / "valid.en", "--valid-tgt", d / "valid.fr", "--batch-tokens", args.batch_tokens,
              "--max-len", 40, "--label-smoothing", "0.1", "--time-budget", args.time_budget,
              "--eval-every", args.eval_every, "--seed", args.seed, "--resume", "never",
              "--set", "valid.max_sentences=500")
    if attention == "transformer":
        model = ("train-transformer", *common, "--arch", "encoder-decoder", "--layers", args.tf_layers,
                 "--heads", args.tf_heads, "--d-model", args.tf_d_model, "--d-ff", args.tf_d_ff,
                 "--dropout", "0.1", "--positions", "sinusoidal", "--norm-first", "--tie",
                 "--optimizer", "adamw", "--lr", "0.001", "--schedule", "inverse-sqrt", "--warmup", 300,
                 "--clip", "1.0", "--set", f"run.checkpoint_every={args.eval_every}")
    else:
        model = ("train-seq2seq", *common, "--attention", attention, "--embedding", args.embedding,
                 "--hidden", args.hidden, "--bidirectional", "--dropout", "0.2", "--lr", "0.002",
                 "--checkpoint-every", args.eval_every)
    start = time.time()
    with LoadSampler() as load:
        seqtool("--log-format", "json", *model)
    wall = time.time() - start
    events = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    summary = next(e for e in reversed(events) if e["event"] == "summary")
    hyp = args.out / f"test.{attention}.fr"
    seqtool("translate", "-w", ws, args.data / "test.en", stdout=hyp)
    score = json.loads(seqtool("bleu", hyp, args.data / "test.fr", "--json").stdout)[0]
    return {"attention": attention, "steps": summary["steps"], "train_s": summary["elapsed"],
            "wall_s": wall, "valid_bleu": summary["best_value"], "best_step": summary["best_step"],
            "test_bleu": score["score"], "signature": score.get("signature", ""), "load": load.samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-attention")
    parser.add_argument("--time-budget", default="6m")
    parser.add_argument("--models", "--attentions", dest="models", default="none,additive,general",
                        help="comma-separated: none | additive | general (train-seq2seq), transformer")
    parser.add_argument("--train-pairs", type=int, default=30000)
    parser.add_argument("--valid-pairs", type=int, default=1000)
    parser.add_argument("--max-words", type=int, default=15)
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--embedding", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--tf-layers", type=int, default=2, help="transformer: blocks per stack")
    parser.add_argument("--tf-heads", type=int, default=4)
    parser.add_argument("--tf-d-model", type=int, default=128)
    parser.add_argument("--tf-d-ff", type=int, default=512)
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (on a busy 2-core machine 2 run ~3x slower than 1)")
    args = parser.parse_args()
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if not (args.data / "train.en").is_file():
        raise SystemExit(f"no eng-fra split in {args.data} (pass --data DIR with train/valid/test.en/.fr)")

    prepare(args.data, args.out, args.train_pairs, args.valid_pairs, args.max_words, args.seed)
    tok = args.out / "tokenizer"
    seqtool("build-vocab", "--src", args.out / "data" / "train.en", "--tgt", args.out / "data" / "train.fr",
            "--joint", "--kind", "unigram", "--vocab-size", args.vocab_size, "--seed", args.seed, "-o", tok)
    models = args.models.split(",")
    unknown = set(models) - {"none", "additive", "general", "transformer"}
    if unknown:
        raise SystemExit(f"unknown --models: {', '.join(sorted(unknown))}")
    rows = []
    for attention in models:
        rows.append(train_and_score(attention, args, tok))
        row = rows[-1]
        print(f"{attention}: {row['steps']} steps, test BLEU {row['test_bleu']:.2f}", file=sys.stderr,
              flush=True)

    reference = next((r["test_bleu"] for r in rows if r["attention"] == "none"), None)
    load = [x for r in rows for x in r["load"]]
    print(f"eng-fra: {args.train_pairs:,} training pairs of ≤ {args.max_words} words, joint unigram "
          f"{args.vocab_size}, bi-LSTM {args.hidden} / emb {args.embedding}, Transformer {args.tf_layers}+"
          f"{args.tf_layers} d {args.tf_d_model} / {args.tf_heads} heads / ff {args.tf_d_ff}, "
          f"{args.time_budget} each, "
          f"{args.threads} thread(s); {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {min(load):.1f}–{max(load):.1f} "
          f"(median {statistics.median(load):.1f})")
    print("| model | steps | train s | best valid BLEU (step) | test BLEU | vs none |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        diff = "" if reference is None or r["attention"] == "none" else f"{r['test_bleu'] - reference:+.2f}"
        print(f"| {r['attention']} | {r['steps']} | {r['train_s']:.0f} | {r['valid_bleu']:.2f} "
              f"({r['best_step']}) | {r['test_bleu']:.2f} | {diff} |")
    print(f"sacreBLEU: {rows[0]['signature']}")


if __name__ == "__main__":
    main()
