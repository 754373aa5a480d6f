"""Figure helpers shared by the three papers: one style, galleries, curves, bars, atomic saving.

Figures are drawn from the tables the experiment stages wrote, never from live computation.
Every figure is saved as PNG and PDF with fixed metadata, so an unchanged figure is
byte-identical across runs and git shows only real changes.
"""

from __future__ import annotations

import io
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from replication.fileio import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
    import pandas as pd


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend, imported when a figure is drawn: the
    compute stages that use this module's tables need not pay for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot

# The Sanity Checks paper's colour maps: grayscale for absolute maps, blue-white-red for signed.
ABS_CMAP, DIVERGING_CMAP, HEAT_CMAP = "gray", "bwr", "Reds"

STYLE = {"figure.dpi": 100, "savefig.dpi": 150, "font.size": 8, "axes.titlesize": 8,
         "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "svg.hashsalt": "saliency-replication", "pdf.fonttype": 42}


def use_style() -> None:
    import seaborn

    seaborn.set_theme(style="whitegrid", rc=STYLE)


_STAMP: str | None = None  # a warning printed above every figure (stand-in weights)


def stamp_figures(text: str | None) -> None:
    """Print ``text`` above every figure saved from now on (None: nothing)."""
    global _STAMP
    _STAMP = text


def save_figure(fig: plt.Figure, stem: str | os.PathLike) -> list[Path]:
    """``stem``.png and ``stem``.pdf, written atomically with fixed metadata; closes the figure."""
    stem = Path(stem)
    written = []
    if _STAMP:
        fig.text(0.5, 1.0, _STAMP, color="red", weight="bold", ha="center", va="bottom",
                 fontsize=9, wrap=True)
    for suffix, metadata in ((".png", {"Software": None}),
                             (".pdf", {"CreationDate": None, "ModDate": None, "Producer": None,
                                       "Creator": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix[1:], bbox_inches="tight", metadata=metadata)
        path = stem.with_suffix(suffix)
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    _pyplot().close(fig)
    return written


def gallery(images: Sequence[Sequence[np.ndarray | None]], *, row_labels: Sequence[str],
            col_labels: Sequence[str], cmaps: str | Sequence[str] = ABS_CMAP,
            vranges: Sequence[tuple[float, float]] | tuple[float, float] | None = None,
            title: str = "", cell: float = 0.9) -> plt.Figure:
    """A grid of images (rows × columns); ``None`` leaves a cell blank. Arrays are (H, W) or
    (H, W, 3). ``cmaps`` and ``vranges`` may be given per row."""
    rows, cols = len(images), max(len(r) for r in images)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(cell * cols + 0.8, cell * rows + 0.4),
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
    if title:  # wrapped to the grid's width, so a long title does not widen the figure
        width = fig.get_figwidth()
        fig.suptitle(textwrap.fill(title, max(40, int(width * 15)),
                                   break_on_hyphens=False), fontsize=8, y=1.0,
                     va="bottom")
    fig.subplots_adjust(wspace=0.03, hspace=0.05)
    return fig


def curves(data: pd.DataFrame, *, x: str, y: str, hue: str, sd: str | None = None,
           order: Sequence[str] | None = None, ax: plt.Axes | None = None, ylim=None,
           title: str = "", ylabel: str | None = None) -> plt.Axes:
    """Mean curves with ±1 SD bands (the Sanity Checks style: bands, not confidence intervals)."""
    import seaborn

    ax = ax or _pyplot().subplots(figsize=(4, 2.6))[1]
    order = list(order) if order is not None else list(dict.fromkeys(data[x]))
    palette = seaborn.color_palette("tab10", n_colors=data[hue].nunique())
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


def table_cell(value: object) -> str:
    """One Markdown cell: 4 significant digits, — for missing, yes/no, pipes escaped."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``frame`` (no extra dependency)."""
    if frame.empty:
        return "(no rows)\n"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(table_cell(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_table(frame: pd.DataFrame, stem: str | os.PathLike, title: str,
                note: str = "") -> list[Path]:
    """``stem``.csv and ``stem``.md (a title, the table, a note), written atomically."""
    from replication import fileio

    stem = Path(stem)
    fileio.write_table(frame, stem.with_suffix(".csv"))
    text = f"# {title}\n\n{markdown_table(frame)}" + (f"\n{note.strip()}\n" if note else "")
    atomic_write_text(stem.with_suffix(".md"), text)
    return [stem.with_suffix(".csv"), stem.with_suffix(".md")]
