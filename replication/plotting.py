"""Figure helpers shared by the three papers: one style, galleries, curves, bars, atomic saving.

Figures are drawn from the tables the experiment stages wrote, never from live computation.
Every figure is saved as PNG and PDF with fixed metadata, so an unchanged figure is
byte-identical across runs and git shows only real changes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from replication.fileio import atomic_write_bytes  # noqa: E402

# The Sanity Checks paper's colour maps: grayscale for absolute maps, blue-white-red for signed.
ABS_CMAP, DIVERGING_CMAP, HEAT_CMAP = "gray", "bwr", "Reds"

STYLE = {"figure.dpi": 100, "savefig.dpi": 150, "font.size": 8, "axes.titlesize": 8,
         "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "svg.hashsalt": "saliency-replication", "pdf.fonttype": 42}


def use_style() -> None:
    sns.set_theme(style="whitegrid", rc=STYLE)


def save_figure(fig: plt.Figure, stem: str | os.PathLike) -> list[Path]:
    """``stem``.png and ``stem``.pdf, written atomically with fixed metadata; closes the figure."""
    stem = Path(stem)
    written = []
    for suffix, metadata in ((".png", {"Software": None}),
                             (".pdf", {"CreationDate": None, "ModDate": None, "Producer": None,
                                       "Creator": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix[1:], bbox_inches="tight", metadata=metadata)
        path = stem.with_suffix(suffix)
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    plt.close(fig)
    return written


def gallery(images: Sequence[Sequence[np.ndarray | None]], *, row_labels: Sequence[str],
            col_labels: Sequence[str], cmaps: str | Sequence[str] = ABS_CMAP,
            vranges: Sequence[tuple[float, float]] | tuple[float, float] | None = None,
            title: str = "", cell: float = 0.9) -> plt.Figure:
    """A grid of images (rows × columns); ``None`` leaves a cell blank. Arrays are (H, W) or
    (H, W, 3). ``cmaps`` and ``vranges`` may be given per row."""
    rows, cols = len(images), max(len(r) for r in images)
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + 0.8, cell * rows + 0.4),
                             squeeze=False)
    for r, row in enumerate(images):
        cmap = cmaps if isinstance(cmaps, str) else cmaps[r]
        vrange = vranges if vranges is None or isinstance(vranges[0], (int, float)) else vranges[r]
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            image = row[c] if c < len(row) else None
            if image is not None:
                low, high = vrange if vrange is not None else (None, None)
                ax.imshow(image, cmap=None if np.ndim(image) == 3 else cmap, vmin=low, vmax=high,
                          interpolation="nearest")
            if r == 0:
                ax.set_title(col_labels[c], fontsize=6, rotation=45 if cols > 8 else 0,
                             ha="left" if cols > 8 else "center")
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=6, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=8, y=1.0)
    fig.subplots_adjust(wspace=0.03, hspace=0.05)
    return fig


def curves(data: pd.DataFrame, *, x: str, y: str, hue: str, sd: str | None = None,
           order: Sequence[str] | None = None, ax: plt.Axes | None = None, ylim=None,
           title: str = "", ylabel: str | None = None) -> plt.Axes:
    """Mean curves with ±1 SD bands (the Sanity Checks style: bands, not confidence intervals)."""
    ax = ax or plt.subplots(figsize=(4, 2.6))[1]
    order = list(order) if order is not None else list(dict.fromkeys(data[x]))
    palette = sns.color_palette("tab10", n_colors=data[hue].nunique())
    for colour, (name, group) in zip(palette, data.groupby(hue, sort=False)):
        group = group.set_index(x).reindex(order)
        positions = np.arange(len(order))
        ax.plot(positions, group[y].to_numpy(), marker="o", markersize=2.5, lw=1.2, color=colour,
                label=name)
        if sd is not None:
            ax.fill_between(positions, group[y] - group[sd], group[y] + group[sd], color=colour,
                            alpha=0.12, lw=0)
    ax.set_xticks(np.arange(len(order)))
    ax.set_xticklabels(order, rotation=60, ha="right")
    ax.axhline(0, color="tab:red", ls="--", lw=0.8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    return ax
