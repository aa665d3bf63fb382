"""DDP on CPU (gloo): two processes launched by torchrun train the same global batches as one process
and end with the same weights (up to float reduction order); only rank 0 writes the workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toytask import make_trainer

from seqtool.training import runtime
from seqtool.workspace import Workspace, load_tensors

TESTS = Path(__file__).parent


def torchrun(nproc: int, *args: str, timeout: float = 50) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone` (a free rendezvous port) on this machine's CPUs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS",
                "SLURM_PROCID"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


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
    assert sum(e["event"] == "summary" for e in events) == 1
    assert not (two_ws.path / ".lock").exists()
    assert sorted(p.name for p in two_ws.path.iterdir()) == sorted(
        ["seqtool.yaml", "metrics.jsonl", "model.safetensors", "model.json", "checkpoints", "plots"])


def test_dist_from_env_torchrun_and_slurm(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(key, raising=False)
    assert runtime.dist_from_env() == runtime.Dist()
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
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
    from seqtool.training.trainer import shard

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
