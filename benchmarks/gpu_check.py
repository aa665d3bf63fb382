"""GPU readiness (issue 18): every CUDA path of seqtool on tiny models, one line per path.

    python benchmarks/gpu_check.py             # on a CUDA machine: about 3-5 minutes on one GPU
    python benchmarks/gpu_check.py --dry-run   # the same paths on the CPU, tiny and short

Paths: decoder training in bf16 and in fp16 with a GradScaler (through `seqtool train-transformer`, tokens/s
and MFU), the fused SDPA kernels (flash / memory-efficient forced, forward + backward), `--compile`,
cuDNN LSTM training (`train-rnn`) and its cell-kernel decoding (`generate`), seq2seq training + `translate`,
the KV-cache decoder generating batch 1 and batched, pinned-memory non_blocking copies (the trainer's
`runtime.move_batch`), fused AdamW, and DDP over NCCL with 2 processes when 2 GPUs are visible. Each path
runs the real commands or functions; a failure prints its last error line and the script goes on.

Without CUDA (and without --dry-run) it prints one line saying so and exits 0. --dry-run runs every path on
the CPU (fp32 for the GPU-only precisions, gloo for DDP), so the script itself is tested where no GPU is.
Exit codes: 0 every path that applies passed · 1 at least one failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Dense bf16/fp16 tensor-core peaks (no sparsity), TFLOP/s, by device-name fragment: the MFU denominator.
PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
         "V100": 125.0, "4090": 165.0, "3090": 71.0, "T4": 65.0}
WORDS = ("the a of and to in is was he for it with as his on be at by had not are but from or have an they "
         "which one you were her all she there would their we him been has when who will more no if out so "
         "said what up its about into than them can only other new some could time these two may then do "
         "first any my now such like our over man me even most made after also did many before must through "
         "back years where much your way well down should because each just those people how too little")


def make_text(path: Path, lines: int, seed: int = 0) -> Path:
    """Pseudo-English lines of 5-20 common words, deterministic."""
    rng, words = random.Random(seed), WORDS.split()
    path.write_text("".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) + ".\n"
                            for _ in range(lines)))
    return path


class Check:
    """Runs the paths, prints one line each, remembers failures."""

    def __init__(self, args: argparse.Namespace, device: str, work: Path):
        self.args, self.device, self.work, self.failed = args, device, work, 0
        self.cuda = device == "cuda"
        self.peak = args.peak_tflops or self._peak()

    def _peak(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        name = torch.cuda.get_device_name()
        return next((tflops for key, tflops in PEAKS.items() if key in name), None)

    def line(self, path: str, status: str, detail: str = "") -> None:
        print(f"{path:<34} {status:<5} {detail}", flush=True)
        self.failed += status == "FAIL"

    def run(self, path: str, fn) -> None:
        start = time.perf_counter()
        try:
            detail = fn()
        except Exception as err:  # noqa: BLE001 - report the path and go on to the next one
            message = str(err).strip().splitlines()
            self.line(path, "FAIL", f"{type(err).__name__}: {message[-1] if message else ''}"[:200])
            return
        status, detail = detail.split("|", 1) if detail.startswith(("SKIP|", "OK|")) else ("OK", detail)
        self.line(path, status, f"{detail}  ({time.perf_counter() - start:.0f} s)")

    # -- helpers --------------------------------------------------------------------------------
    def seqtool(self, *args: object, timeout: float = 240, launcher: list[str] | None = None) -> str:
        cmd = [*(launcher or [sys.executable]), "-m", "seqtool", "--log-format", "json", *map(str, args)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {_last_error(done.stderr)[:180]}")
        return done.stdout

    def train_rate(self, ws: Path) -> float:
        """Median tokens/s of the logged training intervals after the first (compilation, warm-up)."""
        events = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
        rates = [e["tokens_per_s"] for e in events if e.get("event") == "train" and "tokens_per_s" in e]
        return statistics.median(rates[1:] or rates)

    def mfu(self, ws: Path, tokens_per_s: float) -> str:
        """Model FLOPs utilisation: (6·N + 12·L·d·T) FLOPs per token (PaLM, appendix B) / peak."""
        arch = json.loads((ws / "model.json").read_text())
        d, L, T, V = arch["d_model"], arch["n_layers"], arch["max_len"], arch["vocab_size"]
        n = L * (4 * d * d + 2 * d * arch["d_ff"])  # non-embedding matrices of the blocks
        flops = (6 * n + 12 * L * d * T) * tokens_per_s + 6 * d * V * tokens_per_s  # + the output layer
        if self.peak is None:
            return f"{flops / 1e12:.2f} TFLOP/s, MFU n/a ({'CPU' if not self.cuda else 'unknown GPU peak'})"
        return f"{flops / 1e12:.1f} TFLOP/s, MFU {100 * flops / (self.peak * 1e12):.1f}%"

    # -- the paths ------------------------------------------------------------------------------
    def decoder_args(self, text: Path, ws: Path, precision: str, *extra: str) -> list[object]:
        size = (["--layers", "6", "--heads", "6", "--d-model", "384", "--d-ff", "1536", "--block-size", "256",
                 "--batch-size", "64", "--max-steps", "120"] if not self.args.dry_run else
                ["--layers", "1", "--heads", "2", "--d-model", "32", "--d-ff", "64", "--block-size", "32",
                 "--batch-size", "4", "--max-steps", "6"])
        return ["train-transformer", text, "-w", ws, "--arch", "decoder", "--device", self.device, "--resume",
                "never", "--precision", precision, "--dropout", "0", "--positions", "learned", "--eval-every",
                "100000", "--set", "run.log_every=10" if not self.args.dry_run else "run.log_every=2",
                *size, *extra]

    def train_decoder(self, text: Path, name: str, precision: str, *extra: str) -> str:
        if not self.cuda and precision == "fp16":
            return "SKIP|fp16 + GradScaler needs CUDA (the CPU refuses it with exit 2, as documented)"
        ws = self.work / name
        self.seqtool(*self.decoder_args(text, ws, precision if self.cuda else "fp32", *extra))
        rate = self.train_rate(ws)
        return f"{rate:,.0f} tokens/s, {self.mfu(ws, rate)}"

    def sdpa(self) -> str:
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from seqtool.models.transformer import Transformer, TransformerConfig

        cfg = TransformerConfig(arch="decoder", vocab_size=128, n_layers=2, n_heads=4, d_model=128, d_ff=256,
                                dropout=0.0, max_len=256)
        model = Transformer(cfg).to(self.device)
        ids = torch.randint(1, 128, (8, 257) if self.cuda else (2, 65), device=self.device)
        batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:]}
        dtype = torch.bfloat16 if self.cuda else None
        used = []
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            try:
                amp = torch.autocast(self.device, dtype=dtype, enabled=dtype is not None)
                with sdpa_kernel([backend]), amp:
                    model(batch)[1].backward()
                used.append(backend.name.lower())
            except RuntimeError as err:
                if self.cuda and backend == SDPBackend.FLASH_ATTENTION:
                    raise RuntimeError(f"flash attention refused: {str(err).splitlines()[0]}") from None
        return f"fused kernels usable forward + backward: {', '.join(used) or 'none'}"

    def rnn(self, text: Path) -> str:
        ws = self.work / "rnn"
        size = (["--hidden", "512", "--n-layers", "2", "--bptt", "128", "--batch-size", "64",
                 "--max-steps", "100"] if not self.args.dry_run else
                ["--hidden", "32", "--n-layers", "1", "--bptt", "16", "--batch-size", "4",
                 "--max-steps", "6"])
        self.seqtool("train-rnn", text, "-w", ws, "--device", self.device, "--resume", "never",
                     "--cell", "lstm", "--eval-every", "100000", "--set", "run.log_every=10", *size)
        return f"cuDNN LSTM: {self.train_rate(ws):,.0f} tokens/s" if self.cuda else \
            f"fused LSTM (CPU): {self.train_rate(ws):,.0f} tokens/s"

    def generate(self, name: str) -> str:
        """Tokens/s of the workspace's model decoding on the device, batch 1 and batch 16 (in-process)."""
        import torch

        from seqtool.data.tokenizers import load_tokenizer
        from seqtool.decoding import DecodeConfig, sample
        from seqtool.generation import sample_batch
        from seqtool.models import load_published
        from seqtool.workspace import Workspace

        ws = Workspace.open(self.work / name)
        model, tok = load_published(ws, torch.device(self.device)), load_tokenizer(ws.tokenizer_dir)
        n = 200 if not self.args.dry_run else 20
        cfg = DecodeConfig(max_tokens=n, greedy=True)
        sample(model, model.start(), torch.tensor([[tok.newline_id]], device=self.device), cfg)  # warm-up
        rates = []
        for rows in (1, 16):
            self._sync()
            start = time.perf_counter()
            samples = sample_batch(model, tok, ["the"] * rows, cfg)
            self._sync()
            rates.append(sum(len(s.ids) for s in samples) / (time.perf_counter() - start))
        cli = self.seqtool("generate", "-w", ws.path, "--device", self.device, "--max-tokens", "20",
                           "--seed", "1", "--prompt", "the")
        assert cli.startswith("the"), cli[:80]
        return f"batch 1: {rates[0]:,.0f} tokens/s, batch 16: {rates[1]:,.0f} tokens/s; CLI generate ok"

    def seq2seq(self, text: Path) -> str:
        lines = text.read_text().splitlines()[:4000]
        tsv = self.work / "pairs.tsv"
        tsv.write_text("".join(f"{ln}\t{' '.join(reversed(ln.split()))}\n" for ln in lines))
        ws = self.work / "s2s"
        size = (["--max-steps", "60", "--batch-tokens", "4096"] if not self.args.dry_run else
                ["--max-steps", "4", "--batch-tokens", "512", "--hidden", "16", "--embedding", "16"])
        self.seqtool("train-seq2seq", "--tsv", tsv, "-w", ws, "--device", self.device, "--resume", "never",
                     "--eval-every", "100000", "--set", "run.log_every=10", *size)
        rate = self.train_rate(ws)
        src = self.work / "src.txt"
        src.write_text("\n".join(lines[:200 if not self.args.dry_run else 8]) + "\n")
        start = time.perf_counter()
        out = self.seqtool("translate", "-w", ws, src, "--device", self.device, "--beam", "4")
        seconds = time.perf_counter() - start
        lines = len(out.splitlines())
        return f"train {rate:,.0f} tokens/s; translate --beam 4: {lines} lines in {seconds:.1f} s"

    def pinned(self) -> str:
        import torch

        from seqtool.training.runtime import move_batch

        batch = {"inputs": torch.randint(0, 100, (64, 1024)), "note": "kept"}
        moved = move_batch(batch, torch.device(self.device))
        assert moved["inputs"].device.type == self.device and moved["note"] == "kept"
        assert torch.equal(moved["inputs"].cpu(), batch["inputs"])
        if not self.cuda:
            return "runtime.move_batch on the CPU: no copy (pinning applies to CUDA only)"
        big = torch.empty(64 << 20, dtype=torch.uint8)
        rates = {}
        for name, host in (("pageable", big), ("pinned", big.pin_memory())):
            host.to("cuda", non_blocking=True)
            self._sync()
            start = time.perf_counter()
            for _ in range(10):
                host.to("cuda", non_blocking=True)
            self._sync()
            rates[name] = 10 * host.numel() / (time.perf_counter() - start) / 1e9
        return (f"runtime.move_batch pins and copies non_blocking; host→device GB/s pageable "
                f"{rates['pageable']:.1f}, pinned {rates['pinned']:.1f}")

    def fused_adamw(self) -> str:
        import torch

        from seqtool.config import OptimConfig
        from seqtool.training.optim import make_optimizer

        params = [torch.nn.Parameter(torch.randn(256, 256, device=self.device))]
        optimizer = make_optimizer(params, OptimConfig(optimizer="adamw"))
        params[0].grad = torch.randn_like(params[0])
        optimizer.step()
        fused = optimizer.defaults.get("fused")
        if self.cuda and not fused:
            raise RuntimeError("AdamW on CUDA parameters is not fused")
        return f"AdamW fused={fused} ({'CUDA' if self.cuda else 'CPU keeps the default implementation'})"

    def ddp(self, text: Path) -> str:
        import torch

        if self.cuda and torch.cuda.device_count() < 2:
            return f"SKIP|{torch.cuda.device_count()} GPU visible: NCCL needs 2"
        ws = self.work / "ddp"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        self.seqtool(*self.decoder_args(text, ws, "bf16" if self.cuda else "fp32"), launcher=launcher,
                     timeout=300)
        backend = "NCCL" if self.cuda else "gloo (CPU)"
        return f"2 processes over {backend}: {self.train_rate(ws):,.0f} tokens/s (both ranks)"

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()


def _last_error(stderr: str) -> str:
    """The message of a failed command: its JSON log's last "message", else its last "error" line."""
    found = "no output"
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and event.get("message"):
            found = event["message"]
        elif line.lower().startswith("error") or (found == "no output" and line.strip()):
            found = line.strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="run every path on the CPU, tiny and short")
    parser.add_argument("--peak-tflops", type=float,
                        help="the GPU's dense bf16 peak, for MFU (default: by name)")
    parser.add_argument("--only", help="comma-separated subset: decoder,fp16,compile,sdpa,rnn,seq2seq,pinned,"
                        "adamw,ddp (default: all)")
    parser.add_argument("--keep", help="write the workspaces here instead of a temporary directory")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.dry_run:
        print(f"no CUDA device visible to torch {torch.__version__}: nothing to check "
              "(--dry-run runs the same paths on the CPU)")
        sys.exit(0)
    device = "cpu" if args.dry_run else "cuda"
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores), dry run"
    print(f"gpu_check: {name}, torch {torch.__version__}, {torch.cuda.device_count()} CUDA device(s)")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        check = Check(args, device, work)
        text = make_text(work / "text.txt", 20000 if not args.dry_run else 400)
        start = time.perf_counter()
        paths = [  # (key for --only, line name, the check)
            ("decoder", "train decoder bf16 autocast", lambda: check.train_decoder(text, "bf16", "bf16")),
            ("fp16", "train decoder fp16 + GradScaler", lambda: check.train_decoder(text, "fp16", "fp16")),
            ("compile", "train decoder bf16 --compile",
             lambda: check.train_decoder(text, "compiled", "bf16", "--compile")),
            ("sdpa", "fused SDPA (flash, mem-efficient)", check.sdpa),
            ("decoder", "generate decoder (KV cache)", lambda: check.generate("bf16")),
            ("rnn", "train-rnn LSTM", lambda: check.rnn(text)),
            ("rnn", "generate rnn-lm (cell kernels)", lambda: check.generate("rnn")),
            ("seq2seq", "train-seq2seq + translate", lambda: check.seq2seq(text)),
            ("pinned", "pinned memory, non_blocking", check.pinned),
            ("adamw", "fused AdamW", check.fused_adamw),
            ("ddp", "DDP 2 processes", lambda: check.ddp(text)),
        ]
        only = set(args.only.split(",")) if args.only else {key for key, _, _ in paths}
        if unknown := only - {key for key, _, _ in paths}:
            parser.error(f"--only: unknown path(s) {', '.join(sorted(unknown))}")
        for key, title, fn in paths:
            if key in only:
                check.run(title, fn)
        print(f"gpu_check: {check.failed} failed, {time.perf_counter() - start:.0f} s in all")
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    main()
