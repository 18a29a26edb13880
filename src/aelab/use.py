"""Using a trained run: clean image files or an ``.npz`` and write the results beside a
side-by-side figure; draw the sample grids of a data set."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from . import plots, runs
from .data import check_images, load_dataset, load_image, load_npz
from .errors import DataError
from .evaluate import apply_model
from .images import to_chw
from .noise import add_evaluation_noise


def denoise(run: str | os.PathLike, inputs, out: str | os.PathLike | None = None,
            device: str = "cpu") -> Path:
    """Clean ``inputs`` (image files, or one ``.npz``) with the model of ``run``.

    Writes ``<out>/<name>.png`` per image (or ``<out>/denoised.npz`` for an .npz input) and
    ``<out>/side_by_side.png`` (input above, cleaned below, first 10). ``out`` defaults to
    ``<run>/denoised``. Images are resized to the model's input size when they differ.
    """
    model = runs.load_model(run, device=device)
    c, h, w = model.input_shape
    out = Path(out) if out is not None else Path(run) / "denoised"
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    if not inputs:
        raise DataError("expected at least one image file or .npz to denoise, found none")
    if len(inputs) == 1 and inputs[0].suffix == ".npz":
        x = load_npz(inputs[0]).x
        names = None
    else:
        stems = [p.stem for p in inputs]
        twice = next((s for s in stems if stems.count(s) > 1), None)
        if twice is not None:  # both would be written to the same output file
            same = [str(p) for p in inputs if p.stem == twice]
            raise DataError(f"expected input images with distinct names, found {twice!r} twice ({', '.join(same[:2])}); "
                            "rename one or denoise them in two calls with different --out")
        arrays = [to_chw(load_image(p, (h, w)), c) for p in inputs]
        x = check_images(np.stack(arrays), "input images")
        names = [p.stem for p in inputs]
    if tuple(x.shape[1:]) != model.input_shape:
        raise DataError(f"expected images of shape {model.input_shape} for this model, found {tuple(x.shape[1:])}; "
                        "resize them or train a model for this shape")
    x_hat = apply_model(model, x)
    if names is None:
        buf = io.BytesIO()
        np.savez_compressed(buf, x=x_hat.numpy())
        runs.atomic_write_bytes(out / "denoised.npz", buf.getvalue())
    else:
        from PIL import Image
        for name, img in zip(names, x_hat):
            arr = (img.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            arr = arr[0] if c == 1 else np.transpose(arr, (1, 2, 0))
            b = io.BytesIO()
            Image.fromarray(arr).save(b, format="PNG")
            runs.atomic_write_bytes(out / f"{name}.denoised.png", b.getvalue())
    plots.rows([("input", x[:10]), ("cleaned", x_hat[:10])], out / "side_by_side.png",
               titles=names[:10] if names else None)
    return out


def show_data(data: str | None = None, out: str | os.PathLike = "runs/data", noise_factor: float = 0.2,
              split: str = "train", count: int = 50) -> list[Path]:
    """Draw the first ``count`` images of a split, titled with class names, clean and noisy."""
    ds = load_dataset(data, split, limit=count)
    titles = [ds.class_names[i] if i < len(ds.class_names) else str(i) for i in ds.y.tolist()]
    out = Path(out)
    a = plots.image_grid(ds.x, out / "samples.png", titles=titles)
    b = plots.image_grid(add_evaluation_noise(ds.x, noise_factor), out / "noisy_samples.png", titles=titles,
                         suptitle=f"noise factor {noise_factor:g}")
    return [a, b]


__all__ = ["denoise", "show_data"]
