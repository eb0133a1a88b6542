"""One figure style for the whole book.

Chapters call :func:`use_book_style` once and :func:`figure` for each figure, so every plot has the same size,
fonts, colours and grid. Nothing here computes: it only draws.
"""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

#: Colour cycle (colour-blind safe, Okabe–Ito), used in this order by every chapter.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

BOOK_STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=COLORS),
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    "figure.constrained_layout.use": True,
}


def use_book_style() -> None:
    """Apply the book's matplotlib style to every later figure."""
    mpl.rcParams.update(BOOK_STYLE)


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 3.4, height: float = 3.0, **kwargs):
    """A figure of ``nrows × ncols`` panels, each ``width × height`` inches; returns ``(fig, axes)``.

    ``axes`` is a single Axes for one panel and a flat array otherwise.
    """
    use_book_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kwargs)
    axes = axes.ravel()
    return fig, (axes[0] if axes.size == 1 else axes)


def band(ax, x, mean, sem, *, label=None, color=None, k: float = 2.0, **kwargs):
    """Plot a mean curve with a shaded ±k·SEM band; returns the line."""
    x, mean, sem = (np.asarray(a, dtype=float) for a in (x, mean, sem))
    (line,) = ax.plot(x, mean, label=label, color=color, **kwargs)
    ax.fill_between(x, mean - k * sem, mean + k * sem, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def loglog_with_fit(ax, x, y, fit, *, label=None, color=None, marker="o"):
    """Points on log-log axes with a fitted power law ``fit`` (a :class:`ntkcore.stats.PowerLaw`)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    (pts,) = ax.loglog(x, y, marker, color=color, label=label)
    xs = np.geomspace(x.min(), x.max(), 50)
    ax.loglog(xs, fit(xs), "--", color=pts.get_color(), lw=1.2, label=f"slope {fit.slope:.2f} ± {fit.stderr:.2f}")
    return pts
