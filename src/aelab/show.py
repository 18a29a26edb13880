"""Drawing a data set: the first images of a split, clean and with the evaluation noise."""

from __future__ import annotations

import os
from pathlib import Path

from . import ownership, plots
from .data import load_dataset
from .noise import add_evaluation_noise


def show_data(data: str | None = None, out: str | os.PathLike = "runs/data", noise_factor: float = 0.2,
              split: str = "train", count: int = 50) -> list[Path]:
    """Draw the first ``count`` images of a split, titled with class names, clean and noisy.

    The two figures have aelab's names and replace earlier ones, never one of the inputs (an
    image of that name in ``data``)."""
    out = Path(out)
    ownership.check_output_files([out / "samples.png", out / "noisy_samples.png"], [data] if data else [],
                                 overwrite=True)
    ds = load_dataset(data, split, limit=count)
    titles = [ds.class_names[i] if i < len(ds.class_names) else str(i) for i in ds.y.tolist()]
    a = plots.image_grid(ds.x, out / "samples.png", titles=titles)
    b = plots.image_grid(add_evaluation_noise(ds.x, noise_factor), out / "noisy_samples.png", titles=titles,
                         suptitle=f"noise factor {noise_factor:g}")
    return [a, b]


__all__ = ["show_data"]
