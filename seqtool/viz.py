"""Pictures: loss and gradient-norm curves and attention heatmaps (matplotlib, headless Agg), terminal
heatmaps (rich)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    """Write `fig` atomically in the format its suffix names (png, svg, pdf), then free it."""
    from seqtool.storage import atomic_write_with

    path = Path(path)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path


def plot_loss(events: list[dict[str, Any]], path: str | Path) -> Path:
    """Train and validation loss against step (and validation BLEU/accuracy on a second axis)."""
    plt = _pyplot()
    train = [(e["step"], e["loss"]) for e in events if e.get("event") == "train" and "loss" in e]
    valid = [(e["step"], e["loss"]) for e in events if e.get("event") == "valid" and "loss" in e]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", lw=1.2)
    if valid:
        ax.plot(*zip(*valid, strict=True), "o-", label="validation loss", lw=1.5, ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    valid_events = [e for e in events if e.get("event") == "valid"]
    extra = next((k for k in ("bleu", "accuracy") if any(k in e for e in valid_events)), None)
    if extra:
        ax2 = ax.twinx()
        pts = [(e["step"], e[extra]) for e in valid_events if extra in e]
        ax2.plot(*zip(*pts, strict=True), "s--", color="tab:green", label=f"validation {extra}", ms=3)
        ax2.set_ylabel(extra)
        ax2.legend(loc="upper center")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_grad_norm(events: list[dict[str, Any]], path: str | Path, clip: float = 0.0) -> Path:
    """The gradient norm before clipping against step, on a log scale (vanishing gradients fall
    towards 0, exploding ones spike): the mean over each logging interval and its largest step, the
    clipping threshold `clip` (0: none) and the steps skipped for a non-finite gradient."""
    plt = _pyplot()
    train = [e for e in events if e.get("event") == "train" and e.get("grad_norm") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        steps = [e["step"] for e in train]
        ax.plot(steps, [e["grad_norm"] for e in train], label="gradient norm (interval mean)", lw=1.2)
        if any("grad_norm_max" in e for e in train):
            ax.plot(steps, [e.get("grad_norm_max", e["grad_norm"]) for e in train], lw=0.8, alpha=0.6,
                    label="largest in the interval")
        if all(e["grad_norm"] > 0 for e in train):
            ax.set_yscale("log")
    if clip > 0:
        ax.axhline(clip, color="tab:gray", ls="--", lw=0.8, label=f"clipped above {clip:g}")
    skipped = [e["step"] for e in events if e.get("event") == "skip"]
    for step in skipped:
        ax.axvline(step, color="tab:red", lw=0.8, alpha=0.5)
    if skipped:
        ax.plot([], [], color="tab:red", lw=0.8, label="step skipped (non-finite)")
    ax.set_xlabel("step")
    ax.set_ylabel("total gradient L2 norm, before clipping")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return _save(plt, fig, path)


# ---------------------------------------------------------------------------------------------
# attention heatmaps: target tokens down the side, source tokens along the top


def plot_attention(weights: Any, source: list[str], target: list[str], path: str | Path,
                   title: str = "", axes: tuple[str, str] = ("source", "output")) -> Path:
    """Save a (T, S) attention matrix as a labelled heatmap (png, svg or pdf by the suffix).

    Cells stay readable up to about 40 tokens a side: the figure grows with the matrix, the font
    shrinks past 20 tokens, and source labels are rotated so long words do not collide.
    """
    plt = _pyplot()
    T, S = len(target), len(source)
    cell = 0.32 if max(S, T) <= 40 else 12.8 / max(S, T)
    fig, ax = plt.subplots(figsize=(max(4.0, cell * S + 2.2), max(3.0, cell * T + 1.6)), dpi=120)
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    fontsize = 9 if max(S, T) <= 20 else 7 if max(S, T) <= 40 else 5
    ax.set_xticks(range(S), [_label(s) for s in source], rotation=60, ha="left", rotation_mode="anchor",
                  fontsize=fontsize)
    ax.set_yticks(range(T), [_label(t) for t in target], fontsize=fontsize)
    ax.xaxis.tick_top()
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    if title:
        ax.set_title(title, fontsize=9, pad=12)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="attention weight")
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_attention_grid(weights: Any, source: list[str], target: list[str], path: str | Path,
                        title: str = "", axes: tuple[str, str] = ("source", "output")) -> Path:
    """Save every head of one layer, weights (H, T, S), as a grid of heatmaps with one colour scale."""
    import math

    plt = _pyplot()
    H, T, S = len(weights), len(target), len(source)
    cols = min(H, 4)
    rows = math.ceil(H / cols)
    cell = 0.22 if max(S, T) <= 30 else 6.6 / max(S, T)
    size = (cols * max(2.5, cell * S + 1.2), rows * max(2.2, cell * T + 1.2) + 0.6)
    fig, grid = plt.subplots(rows, cols, figsize=size, dpi=120, squeeze=False, layout="constrained")
    fontsize = 7 if max(S, T) <= 20 else 5 if max(S, T) <= 40 else 3
    for h, ax in enumerate(grid.flat):
        if h >= H:
            ax.axis("off")
            continue
        image = ax.imshow(weights[h], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto",
                          interpolation="nearest")
        ax.set_xlabel(f"head {h}", fontsize=8)  # below: the token labels are on top
        ax.set_xticks(range(S), [_label(s) for s in source] if h % cols == 0 or rows == 1 else [""] * S,
                      rotation=60, ha="left", rotation_mode="anchor", fontsize=fontsize)
        ax.set_yticks(range(T), [_label(t) for t in target] if h % cols == 0 else [""] * T, fontsize=fontsize)
        ax.xaxis.tick_top()
    fig.supxlabel(axes[0], fontsize=8)
    fig.supylabel(axes[1], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.colorbar(image, ax=grid.ravel().tolist(), fraction=0.03, pad=0.02, label="attention weight")
    return _save(plt, fig, path)


def terminal_attention(weights: Any, source: list[str], target: list[str]) -> Any:
    """A rich Table rendering the (T, S) matrix as coloured cells, for terminals over SSH."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False, padding=(0, 1))
    table.add_column("", no_wrap=True, min_width=max((len(_label(t)) for t in target), default=1))
    for s in source:
        label = _label(s)
        table.add_column(Text(label), justify="center", no_wrap=True, min_width=max(3, len(label)))
    for t, row in zip(target, weights, strict=True):
        cells = [Text(_cell(float(w)), style=_shade(float(w))) for w in row]
        table.add_row(Text(_label(t), style="bold"), *cells)
    return table


def _cell(w: float) -> str:
    text = f"{w:.2f}"
    return "1.0" if text == "1.00" else text[1:]  # ".37": three characters keep the grid narrow


def _shade(w: float) -> str:
    """A 256-colour greyscale-to-yellow ramp: low weights dim, high weights bright."""
    level = 232 + int(round(w * 23))  # xterm greys 232 … 255
    return f"black on color({level})" if w > 0.5 else f"white on color({level})"


def _label(token: str) -> str:
    return {"\n": "\\n", "": "∅"}.get(token, token.replace("\u2581", "▁"))


def plot_confusion(confusion: list[list[int]], labels: list[str], path: str | Path, title: str = "") -> Path:
    """Save a classifier's confusion matrix (rows: gold label, columns: predicted) as an annotated heatmap,
    each row shaded by its share of that label's texts."""
    plt = _pyplot()
    n = len(labels)
    shares = [[c / max(sum(row), 1) for c in row] for row in confusion]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * n + 2.4), max(3.2, 0.5 * n + 1.8)), dpi=120)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    for g in range(n):
        for p in range(n):
            ax.text(p, g, str(confusion[g][p]), ha="center", va="center", fontsize=8,
                    color="white" if shares[g][p] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="share of the gold label's texts")
    fig.tight_layout()
    return _save(plt, fig, path)
