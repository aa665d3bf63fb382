"""Training over several processes (DDP): how one global batch is shared out among the ranks, and the
collectives the Trainer calls (all no-ops in a single process). Every rank calls every collective at the
same point of the loop; rank 0 alone writes (the others train with a read-only workspace view).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from seqtool.errors import InputError
from seqtool.training import runtime


def shard(batch: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """Rank `rank`'s rows [r*B//W, (r+1)*B//W) of a global batch (batch-major tensors), so W processes
    see exactly the rows one process would.

    DDP averages the ranks' gradients with equal weights, but a rank's loss is a mean over its own
    tokens. When rows hold different numbers of scored tokens (padded translation batches, masked LM),
    the batch says so in `row_tokens` (B,), and the shard gets `loss_weight` = its share of the tokens ×
    W: the ranks' weighted losses then average to the loss one process computes on the whole batch.
    """
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            rows = value.shape[0]
            if rows < world:
                raise InputError(f"a batch of {rows} rows cannot be shared by {world} processes",
                                 hint="raise --batch-size to at least the number of processes")
            out[key] = value[rank * rows // world:(rank + 1) * rows // world]
        else:
            out[key] = value
    if "row_tokens" in batch:
        share = float(out["row_tokens"].sum()) / max(float(batch["row_tokens"].sum()), 1.0)
        out["loss_weight"] = share * world
    else:
        share = 1.0 / world
    if isinstance(out.get("ntokens"), int):
        out["ntokens"] = round(out["ntokens"] * share)
    return out


class Collectives:
    """The Trainer's collectives over its `dist` (runtime.Dist), on its `device`."""

    dist: runtime.Dist
    device: torch.device
    forward_model: nn.Module

    def _grad_sync(self, last: bool) -> Any:
        """DDP all-reduces gradients on the last micro-batch of an accumulation group only."""
        if self.dist.enabled and not last and hasattr(self.forward_model, "no_sync"):
            return self.forward_model.no_sync()
        return contextlib.nullcontext()

    def _sum_over_ranks(self, values: list[float]) -> list[float]:
        if not self.dist.enabled:
            return values
        import torch.distributed as tdist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        tdist.all_reduce(tensor)
        return tensor.tolist()

    def _mean_over_ranks(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Average numeric metrics over ranks, so every rank takes the same best/plateau decisions."""
        keys = sorted(k for k, v in metrics.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool))
        sums = self._sum_over_ranks([float(metrics[k]) for k in keys])
        return {**metrics, **{k: v / self.dist.world_size for k, v in zip(keys, sums, strict=True)}}

    def _barrier(self) -> None:
        if self.dist.enabled:
            import torch.distributed as tdist

            tdist.barrier()

    def _gather(self, obj: Any) -> list[Any]:
        if not self.dist.enabled:
            return [obj]
        import torch.distributed as tdist

        out: list[Any] = [None] * self.dist.world_size
        tdist.all_gather_object(out, obj)
        return out

    def _shard(self, batch: dict[str, Any]) -> dict[str, Any]:
        return shard(batch, self.dist.rank, self.dist.world_size) if self.dist.enabled else batch
