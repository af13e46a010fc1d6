"""Loss-curve plots for the training stages (matplotlib, Agg backend: no display needed).

Design choices:
- One function, ``plot_curves``: any number of panels, each a list of metric names
  read from the logged rows, against ``step``. Rows without a metric are skipped,
  so training rows and evaluation rows can live in the same ``metrics.jsonl``.
- A noisy training curve gets an exponential moving average drawn over it (nanochat
  reports the debiased EMA of the loss for the same reason).
- Plotting never fails a run: a missing matplotlib or an empty log returns ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def ema(values: Sequence[float], beta: float = 0.9) -> list[float]:
    """Debiased exponential moving average."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def plot_curves(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    panels: Sequence[Sequence[str]],
    *,
    title: str = "",
    x: str = "step",
    smooth: Sequence[str] = ("loss",),
    log_y: Sequence[str] = (),
) -> Path | None:
    """Save a PNG with one panel per entry of ``panels`` (each a list of metric names)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = {
        name: [(r[x], r[name]) for r in rows if x in r and isinstance(r.get(name), (int, float))]
        for panel in panels
        for name in panel
    }
    panels = [[n for n in panel if series[n]] for panel in panels]
    panels = [p for p in panels if p]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for name in panel:
            xs, ys = zip(*series[name], strict=True)
            if name in smooth and len(ys) > 5:
                ax.plot(xs, ys, alpha=0.3, label=f"{name} (raw)")
                ax.plot(xs, ema(ys), label=f"{name} (EMA)")
            else:
                ax.plot(xs, ys, marker="o" if len(ys) < 30 else None, label=name)
            if name in log_y:
                ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
