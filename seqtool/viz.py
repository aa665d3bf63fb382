"""Pictures: loss curves and attention heatmaps (matplotlib, headless Agg), terminal heatmaps (rich)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(events: list[dict[str, Any]], path: str | Path) -> Path:
    """Train and validation loss against step (and validation BLEU/accuracy on a second axis)."""
    from seqtool.workspace import atomic_write_with

    plt = _pyplot()
    train = [(e["step"], e["loss"]) for e in events if e.get("event") == "train" and "loss" in e]
    valid = [(e["step"], e["loss"]) for e in events if e.get("event") == "valid" and "loss" in e]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if valid:
        ax.plot(*zip(*valid), "o-", label="validation loss", lw=1.5, ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    extra = next((k for k in ("bleu", "accuracy") if any(k in e for e in events if e.get("event") == "valid")),
                 None)
    if extra:
        ax2 = ax.twinx()
        pts = [(e["step"], e[extra]) for e in events if e.get("event") == "valid" and extra in e]
        ax2.plot(*zip(*pts), "s--", color="tab:green", label=f"validation {extra}", ms=3)
        ax2.set_ylabel(extra)
        ax2.legend(loc="upper center")
    ax.legend(loc="upper right")
    fig.tight_layout()
    path = Path(path)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path
