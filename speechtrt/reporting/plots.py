"""PNG plots for reports (matplotlib, Agg backend): one figure per call, saved and closed.

Each helper takes plain lists and labels; what a plot means is the caller's (the report modules).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def figure(path: str | Path, size: tuple[float, float] = (6.4, 4.2), dpi: int = 110):
    """``with figure(path) as ax: ...`` — one axes, tight layout, saved to ``path`` and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    try:
        yield ax
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)


def line_plot(path: str | Path, series: dict[str, tuple[list, list]], xlabel: str, ylabel: str, title: str,
              logx: bool = True, hlines: dict[str, float] | None = None) -> Path:
    """A line per series (name → (xs, ys)); ``hlines`` draws labelled horizontal reference lines."""
    with figure(path) as ax:
        for name, (xs, ys) in series.items():
            if len(xs):
                ax.plot(xs, ys, marker="o", label=name)
        for name, y in (hlines or {}).items():
            ax.axhline(y, color="red", linestyle="--", label=name)
        if logx:
            ax.set_xscale("log", base=2)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return Path(path)


def cdf_plot(path: str | Path, samples: dict[str, list[float]], xlabel: str, title: str,
             target: float | None = None, target_label: str = "target") -> Path:
    """Empirical CDFs (name → samples), with a vertical target line and the p95 level marked."""
    with figure(path, size=(6, 4)) as ax:
        for name, xs in samples.items():
            x = np.sort(np.asarray(xs, dtype=float))
            if x.size:
                ax.plot(x, np.arange(1, x.size + 1) / x.size, label=name)
        if target is not None:
            ax.axvline(target, color="red", linestyle="--", label=f"{target_label} {target:g}")
        ax.axhline(0.95, color="gray", linestyle=":", label="p95")
        ax.set(xlabel=xlabel, ylabel="fraction", title=title)
        ax.legend(fontsize=8)
    return Path(path)


def step_plot(path: str | Path, xs: list[float], ys: list[float], xlabel: str, ylabel: str, title: str) -> Path:
    with figure(path, size=(6, 3)) as ax:
        ax.step(xs, ys, where="post")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return Path(path)


def grouped_bars(path: str | Path, groups: list[str], series: dict[str, tuple[list, list, list]], ylabel: str,
                 title: str) -> Path:
    """Bars per group, one colour per series (name → (values, err_low, err_high)); error bars may be empty."""
    with figure(path, size=(max(6, 1.4 * len(groups) + 2), 4)) as ax:
        width = 0.8 / max(1, len(series))
        for k, (name, (vals, lo, hi)) in enumerate(series.items()):
            yerr = [lo, hi] if len(lo) else None
            ax.bar(np.arange(len(groups)) + k * width, vals, width, yerr=yerr, capsize=2, label=name)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=20)
        ax.set(ylabel=ylabel, title=title)
        ax.legend(fontsize=7)
    return Path(path)
