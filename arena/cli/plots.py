"""Loss curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from arena.core.result import RunResult


def plot_curves(runs: Sequence[RunResult], path: str | Path, title: str = "") -> Path:
    """Train (thin) and val (thick) loss against step, one colour per run label; writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for i, r in enumerate(runs):
        color = f"C{i % 10}"
        label = f"{r.variant} s{r.seed}"
        if r.train_curve:
            xs, ys = zip(*r.train_curve, strict=True)
            ax.plot(xs, ys, color=color, alpha=0.35, linewidth=0.8)
        if r.val_curve:
            xs, ys = zip(*r.val_curve, strict=True)
            ax.plot(xs, ys, color=color, linewidth=2.0, marker="o", markersize=3, label=f"{label} (val)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
