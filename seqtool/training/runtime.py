"""Where and how a run executes: device choice, seeding, precision, distributed set-up, signals."""

from __future__ import annotations

import contextlib
import os
import random
import signal
from dataclasses import dataclass, field
from typing import Any

import torch

from seqtool.errors import InputError


def pick_device(spec: str | None) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an unavailable explicit choice is a clear error."""
    spec = (spec or "auto").strip().lower()
    if spec in ("auto", "cuda") and torch.cuda.is_available():
        # one process per GPU under torchrun / srun: the local rank picks the card
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
        return torch.device("cuda", local % torch.cuda.device_count())
    if spec == "auto":
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {spec}: CUDA is not available on this machine",
                             hint="use --device cpu or auto")
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise InputError(f"--device {spec} is not a device", hint="write cuda or cuda:N") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)",
                             hint="pick an index below that")
        return device
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("--device mps: MPS is not available", hint="use --device cpu or auto")
        return torch.device("mps")
    raise InputError(f"--device {spec!r} is not one of auto, cpu, cuda, cuda:N, mps")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _py_state(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state(state: tuple) -> list:
    # weights_only torch.load accepts lists/ints/None, so keep Python's RNG state in those.
    version, internal, gauss = state
    return [version, list(internal), gauss]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. `auto`: bf16 on CUDA where supported, else fp32
    (on CPUs without native bf16, bf16 matmuls are many times slower than fp32)."""
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "auto":
            return None
        if precision == "fp16":
            raise InputError("--precision fp16 needs a CUDA device", hint="use fp32 or bf16 on CPU")
        return torch.bfloat16
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if precision in ("fp16", "auto"):
        return torch.float16
    raise InputError(f"unknown precision {precision!r}", hint="auto, fp32, bf16 or fp16")


def configure_cuda() -> None:
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# distributed (torchrun / srun)


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    """RANK/WORLD_SIZE/LOCAL_RANK (torchrun) or SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID (srun)."""
    env = os.environ
    if "WORLD_SIZE" in env:
        return Dist(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        # The batch script of an `sbatch --ntasks N` job sees SLURM_NTASKS=N and SLURM_PROCID=0 too, but
        # it is one process: only the tasks that srun starts carry a step id. Without this check rank 0
        # would wait for ranks that never come.
        if "SLURM_STEP_ID" not in env and "SLURM_STEPID" not in env:
            raise InputError(
                f"SLURM_NTASKS={env['SLURM_NTASKS']} but this process is the job's batch script, not one of "
                "srun's tasks: the other processes it would wait for never start",
                hint="start it with `srun seqtool ...` (or torchrun), or submit the job with --ntasks 1")
        return Dist(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return Dist()


def init_distributed(dist: Dist, device: torch.device) -> None:
    """Join the process group: nccl on CUDA, gloo on CPU. Under plain `srun` (no torchrun) the rendezvous
    is the job's first node, on port MASTER_PORT or 20000 + job id % 20000 (two jobs sharing a node
    must not meet on the same port)."""
    if not dist.enabled:
        return
    import torch.distributed as tdist

    if tdist.is_initialized():
        return
    env = os.environ
    env.setdefault("RANK", str(dist.rank))
    env.setdefault("WORLD_SIZE", str(dist.world_size))
    env.setdefault("LOCAL_RANK", str(dist.local_rank))
    if "MASTER_ADDR" not in env and "SLURM_JOB_NODELIST" in env:
        env["MASTER_ADDR"] = _first_slurm_host(env["SLURM_JOB_NODELIST"])
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in env and env.get("SLURM_JOB_ID", "").isdigit():
        env["MASTER_PORT"] = str(20000 + int(env["SLURM_JOB_ID"]) % 20000)
    env.setdefault("MASTER_PORT", "29500")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group(backend=backend, rank=dist.rank, world_size=dist.world_size)


def barrier(dist: Dist) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()


def shutdown_distributed(wait: bool = False) -> None:
    """Leave the process group (if any), so the process exits without a warning.

    `wait`: meet every rank first. After a stop signal the callers pass it once rank 0 has written its
    checkpoint and status and released the lock, so no rank exits 75 earlier: under
    `srun --kill-on-bad-exit` (and under torchrun) the first rank to exit gets the others killed.
    """
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        if wait:
            tdist.barrier()
        tdist.destroy_process_group()


def _first_slurm_host(nodelist: str) -> str:
    """'gpu[03-05,07],cpu1' → 'gpu03' (what `scontrol show hostnames | head -1` gives)."""
    first = nodelist.split(",")[0] if "[" not in nodelist.split(",")[0] else nodelist
    if "[" not in first:
        return first
    prefix, rest = first.split("[", 1)
    return prefix + rest.split(",")[0].split("-")[0].rstrip("]")


# ---------------------------------------------------------------------------------------------
# signals: SLURM sends SIGTERM / SIGUSR1 before a time limit; Ctrl-C sends SIGINT


@dataclass
class StopFlags:
    """Set by signal handlers; the training loop checks it after every step."""

    signal_name: str | None = None
    previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> StopFlags:
        # Windows has no SIGUSR1: there only SIGTERM and Ctrl-C stop a run cleanly.
        for sig in _stop_signals():
            with contextlib.suppress(ValueError, OSError):  # not in the main thread
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.signal_name == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal_name = name

    def restore(self) -> None:
        """Put the previous handlers back. After SIGTERM/SIGUSR1 those two stay caught: the process is on
        its way out with 75, and a second signal (SLURM's, or the launcher's when another rank exits)
        must not turn that into 143 while it shuts down."""
        stopping = self.signal_name in ("SIGTERM", "SIGUSR1")
        for sig, handler in self.previous.items():
            if stopping and sig != signal.SIGINT:
                continue
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        self.previous.clear()


def _stop_signals() -> list[signal.Signals]:
    """The signals that stop a run at the next step: those of SIGTERM, SIGUSR1, SIGINT this platform has."""
    return [sig for name in ("SIGTERM", "SIGUSR1", "SIGINT") if (sig := getattr(signal, name, None))]


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on `device`. To CUDA through pinned memory: the copy then queues behind the
    GPU's work instead of making the CPU wait for it (a pageable copy blocks until the stream is idle)."""
    cuda = device.type == "cuda"
    return {k: pinned(v).to(device, non_blocking=True) if cuda and isinstance(v, torch.Tensor)
            else v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def pinned(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.pin_memory() if tensor.device.type == "cpu" and not tensor.is_pinned() else tensor
