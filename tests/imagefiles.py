"""Image files of every kind the loaders meet, written byte by byte where Pillow cannot
(16-bit colour PNGs), for tests/test_errors.py and tests/test_fuzz.py."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

# PNG colour types (PNG specification, section 11.2.2)
GREY, RGB, GREY_ALPHA, RGBA = 0, 2, 4, 6
_CHANNELS = {GREY: 1, RGB: 3, GREY_ALPHA: 2, RGBA: 4}


def png_bytes(pixels: np.ndarray, colour_type: int) -> bytes:
    """A PNG of ``pixels`` (H, W) or (H, W, C), uint8 or uint16 (bit depth 8 or 16)."""
    pixels = np.asarray(pixels)
    depth = 16 if pixels.dtype == np.uint16 else 8
    h, w = pixels.shape[:2]
    flat = pixels.reshape(h, w * _CHANNELS[colour_type]).astype(">u2" if depth == 16 else np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in flat)  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def write_png(path: Path, pixels: np.ndarray, colour_type: int | None = None) -> Path:
    pixels = np.asarray(pixels)
    if colour_type is None:
        colour_type = GREY if pixels.ndim == 2 else {3: RGB, 2: GREY_ALPHA, 4: RGBA}[pixels.shape[2]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(pixels, colour_type))
    return path


def write_palette_png(path: Path, indices: np.ndarray, palette: list[tuple[int, int, int]]) -> Path:
    from PIL import Image

    im = Image.fromarray(np.asarray(indices, np.uint8), mode="P")
    im.putpalette([v for rgb in palette for v in rgb])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path
