"""Loss curves as a PNG (matplotlib, headless): one run's curves, or several variants compared on one basis."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from arena.cli.compare import Comparison, Series
from arena.core.errors import ArenaError
from arena.core.result import RunResult

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not when the CLI starts
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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


# -- several variants on one basis (arena show A B C --plot FILE --plot-kind KIND) ----------------------------------
KINDS = ("curves", "means", "paired")
BAND = "band: min–max over seeds"


def caption(comp: Comparison) -> str:
    """Which runs a comparison holds, and why the last curve point is not the final val loss."""
    spec = comp.spec
    seeds = ",".join(map(str, spec.seeds))
    final = ("the whole val split (final_eval_batches=0: every window)" if spec.final_eval_batches == 0 else
             f"the first {spec.final_eval_batches}×{spec.batch_size} val windows "
             f"(final_eval_batches={spec.final_eval_batches})")
    return (f"Runs on {comp.basis}, tournament seeds {seeds} only (ok runs). Intermediate val points cover a fixed "
            f"part of the val split: the first {spec.eval_batches}×{spec.batch_size} windows "
            f"(eval_batches={spec.eval_batches}); the final val loss (◆, and every mean and CI) covers {final}, "
            "so the last curve point and the reported final loss differ.")


def comparison_figure(comp: Comparison, kind: str) -> Figure:
    """One figure of ``comp``: ``curves`` (val loss against step: the mean over seeds, a min–max band, the final
    loss as ◆), ``means`` (final val loss: mean and 95% CI per entry, seeds as dots) or ``paired`` (entry −
    reference per seed, mean and 95% CI). Titled with the spec and the basis, captioned with ``caption``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5), dpi=120)
    ax = fig.subplots()
    what = {"curves": _curves, "means": _means, "paired": _paired}[kind](ax, comp)
    ax.set_title(f"{comp.spec.label} · {comp.basis}\n{what}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.01, caption(comp), fontsize=7, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    fig.savefig(out)
    return out


def _seeds_label(s: Series) -> str:
    n = len(s.runs)
    return f"{n} seeds" if n == s.n_seeds else f"{n}/{s.n_seeds} seeds"


def _curves(ax: Axes, comp: Comparison) -> str:
    for i, s in enumerate(comp.series):
        color = f"C{i % 10}"
        steps, mean, lo, hi = s.val_band()
        ax.plot(steps, mean, color=color, linewidth=2.0, marker="o", markersize=3,
                label=f"{s.name} val (mean of {_seeds_label(s)})")
        ax.fill_between(steps, lo, hi, color=color, alpha=0.18, linewidth=0)
        final_step = max(r.steps_done for r in s.runs)
        ax.plot([final_step], [s.mean_ci()[0]], color=color, marker="D", markersize=7, linestyle="none",
                label=f"{s.name} final val loss (mean)")
    ax.set_xlabel("step")
    ax.set_ylabel("val loss (nats/token)")
    ax.legend(fontsize=7, ncol=2, title=BAND, title_fontsize=7)
    return f"val loss: mean over seeds, {BAND}"


def _means(ax: Axes, comp: Comparison) -> str:
    for i, s in enumerate(comp.series):
        color = f"C{i % 10}"
        mean, ci = s.mean_ci()
        yerr = None if ci is None else [[mean - ci[0]], [ci[1] - mean]]
        ax.errorbar([i], [mean], yerr=yerr, fmt="o", color=color, capsize=5, markersize=7,
                    label=f"{s.name}: {mean:.4f}" + ("" if ci is None else f" [{ci[0]:.4f}, {ci[1]:.4f}]"))
        ax.scatter([i + 0.12] * len(s.losses), list(s.losses.values()), color=color, alpha=0.5, s=12)
    ax.set_xticks(range(len(comp.series)), [f"{s.name}\n({_seeds_label(s)})" for s in comp.series], fontsize=8)
    ax.set_xlim(-0.5, len(comp.series) - 0.5)
    ax.set_ylabel("final val loss (nats/token)")
    ax.legend(fontsize=7)
    return "final val loss: mean and 95% CI over seeds (Student t; dots: the seeds)"


def _paired(ax: Axes, comp: Comparison) -> str:
    ref = comp.reference
    pairs = comp.paired()
    if not pairs:
        raise ArenaError(f"--plot-kind paired: name a variant besides the reference {ref.name} ({comp.reference_role})")
    ax.axhline(0.0, color="0.4", linewidth=1.0)
    for i, p in enumerate(pairs):
        color = f"C{i % 10}"
        yerr = None if p.ci is None else [[p.mean - p.ci[0]], [p.ci[1] - p.mean]]
        ax.errorbar([i], [p.mean], yerr=yerr, fmt="o", color=color, capsize=5, markersize=7,
                    label=f"{p.name}: {p.mean:+.4f}" + ("" if p.ci is None else f" [{p.ci[0]:+.4f}, {p.ci[1]:+.4f}]"))
        ax.scatter([i + 0.12] * len(p.diffs), p.diffs, color=color, alpha=0.5, s=12)
    ax.set_xticks(range(len(pairs)), [f"{p.name}\n({len(p.seeds)} paired seeds)" for p in pairs], fontsize=8)
    ax.set_xlim(-0.5, len(pairs) - 0.5)
    ax.set_ylabel(f"Δ final val loss vs {ref.name} (nats; < 0: better)")
    ax.legend(fontsize=7)
    return f"paired Δ per seed vs {ref.name} ({comp.reference_role}): mean and 95% CI (Student t; dots: the seeds)"
