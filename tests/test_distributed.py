"""DDP on CPU (gloo): two processes launched by torchrun train the same global batches as one process
and end with the same weights (up to float reduction order); only rank 0 writes the workspace. Under
faults: torchrun forwarding SIGUSR1 as docs/operations.md says, a 2-process resume that is bit-identical,
no rank exiting before rank 0 has saved, and an sbatch script that forgot srun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toytask import make_trainer

from seqtool.errors import InputError
from seqtool.training import runtime
from seqtool.workspace import Workspace, load_tensors

TESTS = Path(__file__).parent
TRAIN = ["--cell", "gru", "--n-layers", "1", "--hidden", "16", "--embedding", "16", "--batch-size", "4",
         "--set", "data.bptt=16", "--eval-every", "4", "--set", "run.checkpoint_every=4",
         "--set", "run.log_every=1", "--device", "cpu", "--seed", "1", "--kind", "char"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS",
                "SLURM_PROCID", "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_JOB_ID"):
        env.pop(key, None)
    return {**env, **extra}


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    """`python -m torch.distributed.run --standalone` (a free rendezvous port) on this machine's CPUs."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def torchrun(nproc: int, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_cmd(nproc, *args), env=clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def srun(ntasks: int, *args: str, logs: Path, **env: str) -> list[subprocess.CompletedProcess]:
    """`srun --ntasks N python ARGS` on this machine: the variables srun gives each task, a free port, and
    each task's stderr in a file under `logs` (a full pipe would block a task)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    step = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": str(ntasks), "SLURM_STEP_ID": "0",
            "SLURM_JOB_NODELIST": "localhost", "MASTER_PORT": str(port), **env}
    logs.mkdir(parents=True, exist_ok=True)
    tasks = []
    for rank in range(ntasks):
        task_env = clean_env(**step, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank))
        with open(logs / f"task{rank}.log", "w") as log:
            tasks.append(subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=log,
                                          env=task_env))
    codes = [task.wait(timeout=60) for task in tasks]
    return [subprocess.CompletedProcess(task.args, code, "", (logs / f"task{rank}.log").read_text())
            for rank, (task, code) in enumerate(zip(tasks, codes, strict=True))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    import random

    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "red", "hat"]
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text("".join(" ".join(rng.choice(words) for _ in range(8)) + "\n" for _ in range(100)))
    return path


def train_rnn(corpus: Path, ws: Path, steps: int) -> list[str]:
    return [str(TESTS / "faulty_seqtool.py"), "--log-format", "json", "train-rnn", str(corpus), "-w", str(ws),
            *TRAIN, "--max-steps", str(steps)]


def weights(ws: Path) -> dict[str, torch.Tensor]:
    return load_tensors(Workspace.open(ws).latest_checkpoint() / "model.safetensors")


def test_two_processes_match_one(tmp_path):
    # about 15 s on 2 cores; the torchrun subprocess is killed after 50 s
    steps = 8
    single = Workspace.create(tmp_path / "one", "rnn-lm", {})
    make_trainer(single, steps=steps, dropout=0.0, batch_size=8).fit()

    result = torchrun(2, str(TESTS / "toytask.py"), str(tmp_path / "two"), str(steps))
    assert result.returncode == 0, result.stderr[-3000:]

    one = single.load_checkpoint(single.latest_checkpoint())[0]
    two_ws = Workspace.open(tmp_path / "two")
    two = two_ws.load_checkpoint(two_ws.latest_checkpoint())[0]
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5, rtol=1e-4), name
    published = load_tensors(two_ws.path / "model.safetensors")
    assert published.keys() == one.keys()

    # rank 0 alone wrote: one line per event, no lock left, nothing but the workspace's own files
    events = two_ws.read_metrics()
    train_steps = [e["step"] for e in events if e["event"] == "train"]
    assert train_steps == list(range(1, steps + 1))
    # the gradient norm logged is the global one (after DDP's all-reduce), as one process computes it
    one_norms = [e["grad_norm"] for e in single.read_metrics() if e["event"] == "train"]
    assert [e["grad_norm"] for e in events if e["event"] == "train"] == pytest.approx(one_norms, rel=1e-4)
    assert sum(e["event"] == "summary" for e in events) == 1
    assert not (two_ws.path / ".lock").exists()
    assert sorted(p.name for p in two_ws.path.iterdir()) == sorted(
        ["seqtool.yaml", "metrics.jsonl", "model.safetensors", "model.json", "checkpoints", "plots"])


def test_dist_from_env_torchrun_and_slurm(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                "SLURM_STEP_ID", "SLURM_STEPID"):
        monkeypatch.delenv(key, raising=False)
    assert runtime.dist_from_env() == runtime.Dist()
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_STEP_ID", "0")  # srun's tasks belong to a job step
    assert runtime.dist_from_env() == runtime.Dist(5, 8, 1)
    # torchrun inside an srun step (one task per node) wins over SLURM's task numbering
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("RANK", "9")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert runtime.dist_from_env() == runtime.Dist(9, 16, 1)


@pytest.mark.parametrize(("nodelist", "first"), [
    ("gpu[03-05,07],cpu1", "gpu03"), ("node1,node2", "node1"), ("a-b[001]", "a-b001"), ("solo", "solo")])
def test_master_addr_from_slurm_nodelist(nodelist, first):
    assert runtime._first_slurm_host(nodelist) == first


def test_shards_weight_their_loss_by_their_share_of_the_tokens():
    """Padded translation rows and masked-LM rows score different numbers of tokens per rank: the
    shards' weighted losses average to the one-process loss of the whole batch."""
    from seqtool.data.masking import MaskedBatches
    from seqtool.data.parallel import make_batch
    from seqtool.models.transformer import Transformer, TransformerConfig
    from seqtool.training.distributed import shard

    torch.manual_seed(0)
    tgt = [[5, 6], [7, 8, 9, 10, 11, 12, 13], [5], [6, 7, 8, 9]]
    mt = make_batch([[5, 6, 7]] * 4, tgt, pad_id=0, bos_id=2, eos_id=3)
    model = Transformer(TransformerConfig(arch="encoder-decoder", vocab_size=16, src_vocab_size=16,
                                          n_layers=1, n_heads=2, d_model=8, d_ff=16, dropout=0.0)).eval()

    class Stream:
        steps_per_epoch = 1

        def batches(self, epoch, start):
            yield {"inputs": torch.randint(5, 16, (4, 12)), "ntokens": 48}

    mlm = next(MaskedBatches(Stream(), mask_id=4, pad_id=0, vocab_size=16, special_ids=(0, 1, 2, 3, 4),
                             seed=1).batches(0, 0))
    encoder = Transformer(TransformerConfig(arch="encoder", vocab_size=16, n_layers=1, n_heads=2, d_model=8,
                                            d_ff=16, dropout=0.0)).eval()
    with torch.no_grad():
        for net, batch in ((model, mt), (encoder, mlm)):
            whole = float(net(batch)[1])
            parts = [shard(batch, r, 2) for r in range(2)]
            assert parts[0]["loss_weight"] != pytest.approx(1.0)  # the ranks' shares differ here
            averaged = sum(p["loss_weight"] * float(net(p)[1]) for p in parts) / 2
            assert averaged == pytest.approx(whole, rel=1e-5)
            assert sum(p["ntokens"] for p in parts) == batch["ntokens"]


# ---------------------------------------------------------------------------------------------
# under faults


def test_sbatch_script_without_srun_fails_at_once_with_a_hint(corpus, tmp_path, monkeypatch):
    """`sbatch --ntasks 2` runs the script once, with SLURM_NTASKS=2 and SLURM_PROCID=0 but no step id
    (only srun's tasks have one): rank 0 would wait for a rank 1 that never starts."""
    batch_script = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                    "SLURM_JOB_NODELIST": "localhost"}
    argv = ["train-rnn", str(corpus), "-w", str(tmp_path / "ws"), *TRAIN, "--max-steps", "2"]
    result = subprocess.run([sys.executable, "-m", "seqtool", *argv], env=clean_env(**batch_script),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    error = result.stderr.splitlines()[0]
    assert error.startswith("error: SLURM_NTASKS=2") and "srun seqtool" in error, result.stderr
    assert "Traceback" not in result.stderr
    for key, value in batch_script.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(InputError, match="batch script"):
        runtime.dist_from_env()
    monkeypatch.setenv("SLURM_STEP_ID", "0")  # the same variables in a task that srun started
    assert runtime.dist_from_env() == runtime.Dist(0, 2, 0)


def documented_torchrun() -> tuple[list[str], dict[str, str]]:
    """The signal flags and the exported variables of the sbatch script that runs torchrun in
    docs/operations.md."""
    text = (TESTS.parent / "docs" / "operations.md").read_text()
    blocks = [block.split("```")[0] for block in text.split("```bash")]
    script = next(b for b in blocks if "#SBATCH" in b and "torchrun" in b)
    exports = dict(re.findall(r"^export (\w+)=(\S+)", script, re.M))
    flags = re.findall(r"(--signals-to-handle)[ =](\S+)", script)
    return [f"{flag}={value}" for flag, value in flags], exports


def kill_leftovers(marker: str) -> None:
    """End the workers torchrun left running (they name `marker`, this test's workspace, in their argv)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass


def test_torchrun_as_documented_passes_sigusr1_on_and_the_workspace_says_preempted(corpus, tmp_path):
    """SLURM's --signal=USR1@T reaches torchrun; the documented flags make it forward the signal, the
    workers checkpoint and stop, and the documented check (`seqtool info --json`) reads `preempted`."""
    from typer.testing import CliRunner

    from seqtool.cli import app

    flags, exports = documented_torchrun()
    ws = tmp_path / "ws"
    proc = subprocess.Popen(torchrun_cmd(2, *flags, *train_rnn(corpus, ws, 100000)), env=clean_env(**exports),
                            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for line in proc.stderr:
            if line.startswith("{") and json.loads(line).get("event") == "train":
                break
        proc.send_signal(signal.SIGUSR1)
        log = proc.communicate(timeout=60)[1]  # orphaned workers would keep stderr open
        assert proc.returncode == 1, log[-2000:]  # torchrun reports its workers' 75 as 1
    finally:
        proc.kill()
        kill_leftovers(str(ws))
    assert "stopped by SIGUSR1" in log
    assert not (ws / ".lock").exists()  # both workers are gone and rank 0 let go of the workspace
    result = CliRunner().invoke(app, ["info", "-w", str(ws), "--json"])
    info = json.loads(result.stdout)
    assert info["status"] == "preempted" and info["checkpoints"], result.output
    resumed = subprocess.run([sys.executable, *train_rnn(corpus, ws, info["last_step"] + 2)],
                             env=clean_env(), capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert Workspace.open(ws).status["state"] == "finished"


def test_two_process_resume_is_bit_identical(corpus, tmp_path):
    """Each rank carries its own BPTT state (its rows of the batch): the checkpoint must hold every
    rank's, or rank 1 resumes with rank 0's."""
    steps = 9
    reference = srun(2, *train_rnn(corpus, tmp_path / "ref", steps), logs=tmp_path / "ref-logs")
    assert [task.returncode for task in reference] == [0, 0], reference[0].stderr[-2000:]
    # every task gets SIGTERM at step 6, as from srun --signal
    stopped = srun(2, *train_rnn(corpus, tmp_path / "ws", steps), logs=tmp_path / "stop-logs",
                   FAULT_SIGTERM_AT_STEP="6")
    assert [task.returncode for task in stopped] == [75, 75], stopped[0].stderr[-2000:]
    resumed = srun(2, *train_rnn(corpus, tmp_path / "ws", steps), logs=tmp_path / "resume-logs")
    assert [task.returncode for task in resumed] == [0, 0], resumed[0].stderr[-2000:]
    assert "resumed from step-0000006" in resumed[0].stderr
    one, two = weights(tmp_path / "ref"), weights(tmp_path / "ws")
    assert one.keys() == two.keys()
    for name in one:
        assert torch.equal(one[name], two[name]), name


def test_no_rank_exits_before_rank_0_has_saved_and_unlocked(corpus, tmp_path):
    """Under `srun --kill-on-bad-exit` (and torchrun) the first rank to exit gets the others killed, so
    after a signal every rank waits for rank 0's checkpoint, status and lock release. Rank 0 is slowed
    down while it writes the status; every rank reports what it saw as it exited."""
    result = torchrun(2, *train_rnn(corpus, tmp_path / "ws", 100000), FAULT_SIGTERM_AT_STEP="3",
                      FAULT_SLOW_STATUS="1.5", FAULT_REPORT=str(tmp_path))
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0] == {"code": 75, "status": "preempted", "lock": False}, result.stderr[-2000:]
    assert reports[1] == {"code": 75, "status": "preempted", "lock": False}


def test_rank_0_builds_the_token_store_and_rank_1_maps_it(corpus, tmp_path):
    """Both ranks ask for the store; rank 0 alone encodes (rank 1 waits at a barrier, then maps the same
    entry), so the shared store holds one complete entry and no temporary build."""
    shared = tmp_path / "shared"
    result = torchrun(2, *train_rnn(corpus, tmp_path / "ws", 3), "--data-store", str(shared), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    entries = list(shared.iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith("."), entries
    assert "token store: built" in result.stderr


def test_rank_0_builds_both_sides_of_parallel_text_and_rank_1_maps_them(tmp_path):
    """train-seq2seq under torchrun: rank 0 alone encodes the source and target sides into the shared
    store (rank 1 waits, then maps them), which then holds two complete entries and no temporary build."""
    words = {"the": "le", "cat": "chat", "sat": "assis", "on": "sur", "red": "rouge", "hat": "chapeau"}
    src = [" ".join(list(words)[(i + j) % 6] for j in range(1 + i % 5)) for i in range(80)]
    (tmp_path / "a.en").write_text("\n".join(src) + "\n")
    (tmp_path / "a.fr").write_text("\n".join(" ".join(words[w] for w in s.split()) for s in src) + "\n")
    shared = tmp_path / "shared"
    result = torchrun(2, str(TESTS / "faulty_seqtool.py"), "--log-format", "json", "train-seq2seq", "--src",
                      str(tmp_path / "a.en"), "--tgt", str(tmp_path / "a.fr"), "-w", str(tmp_path / "ws"),
                      "--kind", "word", "--hidden", "16", "--embedding", "16", "--n-layers", "1", "--device",
                      "cpu", "--max-steps", "2", "--set", "valid.max_sentences=2", "--data-store",
                      str(shared), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    entries = sorted(shared.iterdir())
    assert len(entries) == 2 and not any(e.name.startswith(".") for e in entries), entries
    assert result.stderr.count("token store: built") == 2
