"""Figures as PNG files (matplotlib with the Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def save_figure(figure, out: str | Path, dpi: int = 110) -> Path:
    """Lay out, write (creating the directory) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=dpi)
    plt.close(figure)
    return out
