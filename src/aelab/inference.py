"""Applying a trained model: batched forward passes, codes, and cleaning image files."""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import plots, runs
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
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    convolutional = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    fmt = torch.channels_last if convolutional else torch.contiguous_format
    runner = copy.deepcopy(model).eval().to(memory_format=fmt) if convolutional else model
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            outs = [runner(x[i:i + batch_size].to(device).contiguous(memory_format=fmt)).float().cpu()
                    for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs).contiguous()


@torch.no_grad()
def model_codes(model, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """``model.codes(x)`` in batches on the CPU: (N, D) float32 (a VAE gives its posterior mean)."""
    model = model.cpu().eval()
    return torch.cat([model.codes(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)]).numpy()


def at_size(model, height: int, width: int):
    """A view of ``model`` that takes (C, height, width) images: a shallow copy sharing its
    weights, whose input check expects that size (a convolutional net is size-agnostic)."""
    view = copy.copy(model)
    view.input_shape = (model.input_shape[0], int(height), int(width))
    return view


PAD_MULTIPLES = (1, 2, 4, 8, 16, 32, 64)  # the strides of aelab's networks (2 per halving)


def fitting_size(model, height: int, width: int) -> tuple[int, int] | None:
    """The smallest (H, W) >= (height, width), a multiple of 1, 2, 4, ... 64, at which ``model``
    gives back an image of its input's shape; None when there is none (a dense layer)."""
    if (height, width) == tuple(model.input_shape[1:]):
        return height, width
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    try:
        for m in PAD_MULTIPLES:
            h, w = -(-height // m) * m, -(-width // m) * m
            probe = torch.zeros(1, model.input_shape[0], h, w, device=device)
            try:
                with torch.inference_mode():
                    out = at_size(model, h, w).eval()(probe)
            except (RuntimeError, ValueError):  # the layers are fixed to another size
                continue
            if tuple(out.shape) == tuple(probe.shape):
                return h, w
    finally:
        model.train(was_training)
    return None


def clean(model, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model`` applied to (N, C, H, W) images of any size and grey or RGB, returned in their shape.

    Images of another size than the model's are padded (reflect) to a size the network
    takes (:func:`fitting_size`) and cropped back; a grey model cleans each channel of RGB
    images on its own, an RGB model cleans grey images as three equal channels and gives back
    their mean. A model whose layers are fixed to its size (a dense net, or a dense code)
    refuses other sizes with a :class:`DataError`.
    """
    x = check_images(x, "images")
    n, channels, height, width = x.shape
    c, h, w = model.input_shape
    if channels != c:
        if c == 1 and channels == 3:  # each colour channel as a grey image
            return clean(model, x.reshape(n * 3, 1, height, width), batch_size).reshape(n, 3, height, width)
        if c == 3 and channels == 1:
            return clean(model, x.expand(n, 3, height, width).contiguous(), batch_size).mean(1, keepdim=True)
        raise DataError(f"expected grey or RGB images for this {c}-channel model, found {channels} channels; "
                        "convert them to grey or RGB first")
    if (height, width) == (h, w):
        return apply_model(model, x, batch_size)
    size = fitting_size(model, height, width)
    if size is None:
        fix = "a convolutional model" if model.net == "dense" else "a convolutional model without latent_dim"
        raise DataError(f"expected {h}x{w} images for this {model.net} model, found {height}x{width}; resize them "
                        f"first (e.g. with PIL) or use {fix}")
    pad_h, pad_w = size[0] - height, size[1] - width
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"  # reflect needs a pad below the size
    padded = F.pad(x, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else x
    return apply_model(at_size(model, *size), padded, batch_size)[:, :, :height, :width].contiguous()


def denoise(run: str | os.PathLike, inputs, out: str | os.PathLike | None = None,
            device: str = "cpu") -> Path:
    """Clean ``inputs`` (image files, or one ``.npz``) with the model of ``run``.

    Writes ``<out>/<name>.denoised.png`` per image (or ``<out>/denoised.npz`` for an .npz
    input) and ``<out>/side_by_side.png`` (input above, cleaned below, first 10). ``out``
    defaults to ``<run>/denoised``. Each image is cleaned at its own size and comes back in
    its own colour mode (see :func:`clean`): nothing is resized; a model that cannot take
    the images' size refuses them.
    """
    model = runs.load_model(run, device=device)
    out = Path(out) if out is not None else runs.output_dir(run) / "denoised"
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    if not inputs:
        raise DataError("expected at least one image file or .npz to denoise, found none")
    if len(inputs) == 1 and inputs[0].suffix == ".npz":
        x = load_npz(inputs[0]).x
        x_hat = clean(model, x)
        buf = io.BytesIO()
        np.savez_compressed(buf, x=x_hat.numpy())
        runs.atomic_write_bytes(out / "denoised.npz", buf.getvalue())
        plots.rows([("input", x[:10]), ("cleaned", x_hat[:10])], out / "side_by_side.png")
        return out
    stems = [p.stem for p in inputs]
    twice = next((s for s in stems if stems.count(s) > 1), None)
    if twice is not None:  # both would be written to the same output file
        same = [str(p) for p in inputs if p.stem == twice]
        raise DataError(f"expected input images with distinct names, found {twice!r} twice ({', '.join(same[:2])}); "
                        "rename one or denoise them in two calls with different --out")
    images = [torch.from_numpy(np.ascontiguousarray(to_chw(a, 1 if a.ndim == 2 else 3)))
              for a in (load_image(p) for p in inputs)]
    cleaned: list[torch.Tensor] = [None] * len(images)  # each at its own size; refuses before writing
    by_shape: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):  # images of one shape are cleaned in one batch, one size probe
        by_shape.setdefault(tuple(img.shape), []).append(i)
    for indices in by_shape.values():
        for i, img in zip(indices, clean(model, torch.stack([images[i] for i in indices]))):
            cleaned[i] = img
    for name, img in zip(stems, cleaned):
        runs.atomic_write_bytes(out / f"{name}.denoised.png", png_bytes(img))
    plots.rows([("input", images[:10]), ("cleaned", cleaned[:10])], out / "side_by_side.png", titles=stems[:10])
    return out


__all__ = ["apply_model", "model_codes", "at_size", "fitting_size", "clean", "denoise"]
