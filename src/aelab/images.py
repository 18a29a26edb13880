"""Image files: reading, channel layout, writing PNG.

Arrays here are floats in [0, 1]: ``(H, W)`` or ``(H, W, 3)`` as :func:`aelab.data.load_image`
reads them, ``(C, H, W)`` as the models take them.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from .data import load_image


def to_chw(a: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) floats in [0, 1] -> (channels, H, W)."""
    a = a[:, :, None] if a.ndim == 2 else a
    if a.shape[2] != channels:
        a = a.mean(axis=2, keepdims=True) if channels == 1 else np.repeat(a, channels, axis=2)
    return np.transpose(a, (2, 0, 1))


def read_images(paths: list[str | os.PathLike], channels: int, size=None) -> np.ndarray:
    """Image files -> (N, channels, H, W) floats in [0, 1] (``size``: resize, as ``load_image``)."""
    return np.stack([to_chw(load_image(p, size), channels) for p in paths])


def png_bytes(image: torch.Tensor) -> bytes:
    """One (1 or 3, H, W) image in [0, 1] -> an 8-bit PNG file's bytes."""
    from PIL import Image  # heavy: Pillow, only when writing

    arr = (image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    arr = arr[0] if image.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


__all__ = ["to_chw", "read_images", "png_bytes"]
