"""Figures of a run: the confusion matrix with class names."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

CONFUSION_FILE = "confusion_matrix.png"


def confusion_matrix_png(matrix: Sequence[Sequence[int]], names: Sequence[str], path: Path, title: str) -> Path:
    """Counts and each true class's share (row-normalized colour), true classes down, predictions across.

    Written to a hidden file beside `path` and renamed, so a failure leaves no half-written image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    if counts.shape != (len(names), len(names)):
        raise ValueError(f"a {len(names)}-class confusion matrix must be {len(names)}x{len(names)}, "
                         f"got {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    side = 2.2 + 0.9 * len(names)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(counts[i, j])}\n{100 * shares[i, j]:.0f}%", ha="center", va="center",
                    fontsize=8, color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(names)), labels=list(names), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), labels=list(names), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    path = Path(path)
    tmp = path.parent / f".{path.name}.partial.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
