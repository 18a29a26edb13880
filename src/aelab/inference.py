"""Applying a trained model: batched forward passes, codes, and cleaning image files."""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import numpy as np
import torch

from . import ownership, plots, runs, tiling
from .data import check_images, load_image, load_npz
from .errors import DataError
from .images import png_bytes, to_chw


def apply_model(model, x: torch.Tensor, batch_size: int = 256, device=None) -> torch.Tensor:
    """``model(x)`` in batches, on the model's device, returned on the CPU.

    Convolutional models run on a channels-last copy (measured about 2x faster on the CPU;
    the caller's model is left as it was, even mid-training); batches of 256 kept the CPU
    caches warm.
    """
    x = check_images(x, "images")
    run = runner(model, device)
    return torch.cat([run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).contiguous()


def runner(model, device=None):
    """batch -> ``model(batch)`` in eval and inference mode, on the model's device, returned as
    float32 on the CPU; a convolutional model runs on a channels-last copy made once here."""
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    convolutional = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    fmt = torch.channels_last if convolutional else torch.contiguous_format
    net = copy.deepcopy(model).eval().to(memory_format=fmt) if convolutional else model

    def run(batch: torch.Tensor) -> torch.Tensor:
        was_training = net.training
        net.eval()
        try:
            with torch.inference_mode():
                return net(batch.to(device).contiguous(memory_format=fmt)).float().cpu()
        finally:
            net.train(was_training)
    return run


@torch.no_grad()
def model_codes(model, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """``model.codes(x)`` in batches on the CPU: (N, D) float32 (a VAE gives its posterior mean)."""
    model = model.cpu().eval()
    return torch.cat([model.codes(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)]).numpy()


def clean(model, x: torch.Tensor, batch_size: int = 256, budget_bytes: int = tiling.BUDGET_BYTES) -> torch.Tensor:
    """``model`` applied to (N, C, H, W) images of any size and grey or RGB, returned in their shape.

    A fully convolutional model (``model.any_size``: the conv net without ``latent_dim``, the
    U-Net) takes any H x W; an image whose activations would pass ``budget_bytes`` is cleaned
    in overlapping tiles (:mod:`aelab.tiling`: the same output as whole, within float
    rounding). A grey model cleans each colour channel of RGB images on its own, an RGB model
    cleans grey images as three equal channels and gives back their mean. A model whose
    layers are fixed to its size (a dense net, or a dense code) refuses other sizes with a
    :class:`DataError`.
    """
    x = check_images(x, "images")
    n, channels, height, width = x.shape
    c, h, w = model.input_shape
    if channels != c:
        if c == 1 and channels == 3:  # each colour channel as a grey image
            return clean(model, x.reshape(n * 3, 1, height, width), batch_size, budget_bytes).reshape(
                n, 3, height, width)
        if c == 3 and channels == 1:
            return clean(model, x.expand(n, 3, height, width).contiguous(), batch_size, budget_bytes).mean(
                1, keepdim=True)
        raise DataError(f"expected grey or RGB images for this {c}-channel model, found {channels} channels; "
                        "convert them to grey or RGB first")
    if (height, width) != (h, w) and not model.any_size:
        fix = "a convolutional model" if model.net == "dense" else "a convolutional model without latent_dim"
        raise DataError(f"expected {h}x{w} images for this {model.net} model, found {height}x{width}; resize them "
                        f"first (e.g. with PIL) or use {fix}")
    per_image = tiling.bytes_per_pixel(model) * height * width
    if not model.any_size or per_image <= budget_bytes:
        return apply_model(model, x, max(1, min(batch_size, int(budget_bytes // per_image))))
    core, pad, run = tiling.core_size(model, budget_bytes), tiling.margin(model), runner(model)
    return torch.cat([tiling.tiled(run, x[i:i + 1], core, pad) for i in range(n)])


def denoise(run: str | os.PathLike, inputs, out: str | os.PathLike | None = None,
            device: str = "cpu", overwrite: bool = False) -> Path:
    """Clean ``inputs`` (image files, or one ``.npz``) with the model of ``run``.

    Writes ``<out>/<name>.denoised.png`` per image (or ``<out>/denoised.npz`` for an .npz
    input) and ``<out>/side_by_side.png`` (input above, cleaned below, first 10). ``out``
    defaults to ``<run>/denoised``. Each image is cleaned at its own size and comes back in
    its own colour mode (see :func:`clean`): nothing is resized; a model that cannot take
    the images' size refuses them. No output is ever one of the inputs (or the run's files);
    existing files are replaced only with ``overwrite``: every output name is checked before
    anything is written.
    """
    model = runs.load_model(run, device=device)
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    if not inputs:
        raise DataError("expected at least one image file or .npz to denoise, found none")
    npz = len(inputs) == 1 and inputs[0].suffix == ".npz"
    stems = [p.stem for p in inputs]
    twice = next((s for s in stems if stems.count(s) > 1), None)
    if twice is not None:  # both would be written to the same output file
        same = [str(p) for p in inputs if p.stem == twice]
        raise DataError(f"expected input images with distinct names, found {twice!r} twice ({', '.join(same[:2])}); "
                        "rename one or denoise them in two calls with different --out")
    out = Path(out) if out is not None else runs.output_dir(run) / "denoised"
    names = ["denoised.npz"] if npz else [f"{name}.denoised.png" for name in stems]
    located = runs.locate(run)
    ownership.check_output_files([out / name for name in names] + [out / "side_by_side.png"],
                                 [*inputs, located / runs.CONFIG, located / runs.WEIGHTS], overwrite)
    if npz:
        x = load_npz(inputs[0]).x
        x_hat = clean(model, x)
        buf = io.BytesIO()
        np.savez_compressed(buf, x=x_hat.numpy())
        runs.atomic_write_bytes(out / "denoised.npz", buf.getvalue())
        plots.rows([("input", x[:10]), ("cleaned", x_hat[:10])], out / "side_by_side.png")
        return out
    images = [torch.from_numpy(np.ascontiguousarray(to_chw(a, 1 if a.ndim == 2 else 3)))
              for a in (load_image(p) for p in inputs)]
    cleaned: list[torch.Tensor] = [None] * len(images)  # each at its own size; refuses before writing
    by_shape: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):  # images of one shape are cleaned in one batch, one size probe
        by_shape.setdefault(tuple(img.shape), []).append(i)
    for indices in by_shape.values():
        for i, img in zip(indices, clean(model, torch.stack([images[i] for i in indices]))):
            cleaned[i] = img
    for name, img in zip(names, cleaned):
        runs.atomic_write_bytes(out / name, png_bytes(img))
    plots.rows([("input", [_preview(i) for i in images[:10]]), ("cleaned", [_preview(c) for c in cleaned[:10]])],
               out / "side_by_side.png", titles=stems[:10])
    return out


PREVIEW_SIDE = 1024  # the side_by_side figure shows a large photo at most this many pixels a side


def _preview(image: torch.Tensor) -> torch.Tensor:
    """A (C, H, W) image for a figure: as it is, or shrunk (area average) to PREVIEW_SIDE pixels on its long side
    (the cleaned file itself keeps every pixel)."""
    h, w = image.shape[-2:]
    if max(h, w) <= PREVIEW_SIDE:
        return image
    scale = PREVIEW_SIDE / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.nn.functional.interpolate(image[None], size=size, mode="area")[0]


__all__ = ["apply_model", "runner", "model_codes", "clean", "denoise"]
