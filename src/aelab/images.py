"""Image files: reading (what is accepted and refused), channel layout, writing PNG.

Arrays here are floats in [0, 1]: ``(H, W)`` or ``(H, W, 3)`` as :func:`load_image` reads
them, ``(C, H, W)`` as the models take them. Folders of images become a data set in
:mod:`aelab.data`.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, DataError, DataNotFoundError

# What the image loaders accept and refuse (README, "Bad input"):
# - PNG and JPEG only, recognised by content (a PNG named .jpg is fine); anything else in an
#   image folder (notes.txt, .bmp, ...) is skipped with a DataWarning that names it, hidden
#   files and folders (.DS_Store, .ipynb_checkpoints) silently; a file with an image suffix
#   that does not decode is refused (a data set silently shorter than the folder is worse);
# - grey (L, 1-bit) stays grey, colour becomes RGB; palette images are expanded (to grey when
#   the palette is grey);
# - 16-bit grey PNGs are read at full precision (v / 65535); 16-bit colour PNGs are refused,
#   because Pillow would silently drop their low byte;
# - an alpha channel that is fully opaque is dropped; transparent pixels are refused, since
#   no background colour is right for every data set;
# - the EXIF orientation is applied (a phone photo stored sideways is read upright);
# - an image of more pixels than Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS)
#   is refused from its header, before anything is decoded.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)


def _png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, or None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) == 24 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    return None


def _png_depth(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        return head[24], head[25]
    return None


_ORIENTATION = 0x0112  # the EXIF tag; values 5..8 swap width and height


def _open(path):
    """``Image.open`` for PNG and JPEG, without Pillow's DecompressionBombWarning (the caller
    checks the pixel count with :func:`too_many_pixels`)."""
    from PIL import Image  # heavy: Pillow, only when image files are read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path, formats=["PNG", "JPEG"])


def too_many_pixels(path, width: int, height: int) -> DataError | None:
    """The error for an image of more pixels than Pillow's decompression-bomb limit, else None."""
    from PIL import Image  # heavy: Pillow, only when image files are read

    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return DataError(f"{path}: expected an image of at most {limit:,} pixels (Pillow's decompression-bomb "
                         f"limit), found {width}x{height} = {width * height:,} pixels; shrink or crop it first "
                         "(e.g. `convert IN.png -resize 8000x8000 OUT.png`), or from Python raise "
                         "PIL.Image.MAX_IMAGE_PIXELS if you trust the file")
    return None


def _upright(im):
    """``im`` turned as its EXIF orientation says (a phone photo stored sideways); unchanged
    without one, or when the EXIF data cannot be read (the pixels still can)."""
    from PIL import ImageOps  # heavy: Pillow, only when image files are read

    try:
        return ImageOps.exif_transpose(im)
    except (*_PIL_ERRORS, TypeError, KeyError, IndexError):
        return im


def _header_orientation(im) -> int:
    """The EXIF orientation as far as the header tells (1 when unknown), without decoding."""
    if "exif" not in im.info:  # a PNG's eXIf after the pixels: only known once decoded
        return 1
    try:
        return int(im.getexif().get(_ORIENTATION, 1))
    except (*_PIL_ERRORS, TypeError, KeyError, IndexError):
        return 1


MAX_SIDE = 4096  # --size: a side above it is a typo (100000,100000), not an image aelab can train on
_GREY_MODES = {"1", "L", "LA", "P", "I", "I;16", "I;16B", "I;16L", "F"}


def check_size(size) -> tuple[int, int] | None:
    """``size`` (H, W, or one int for both) as two ints in 1..:data:`MAX_SIDE`, or a :class:`ConfigError`."""
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"expected a size H,W of two positive integers, found {size!r}; e.g. --size 28,28") from None
    if h < 1 or w < 1:
        raise ConfigError(f"expected a size H,W of two positive integers, found {h},{w}; e.g. --size 28,28")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ConfigError(f"expected a size H,W of at most {MAX_SIDE} pixels a side, found {h},{w}; "
                          "pass a smaller --size, e.g. --size 28,28")
    return h, w


def image_shape(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(C, H, W) of an image file as :func:`load_image` will read it (C = 1 for grey and palette
    images, 3 otherwise), from its header only: nothing is decoded. None when Pillow cannot tell
    (then :func:`load_image` says what is wrong)."""
    from PIL import Image  # heavy: Pillow, only when image files are read

    try:
        with _open(path) as im:
            h, w = (im.width, im.height) if _header_orientation(im) in (5, 6, 7, 8) else (im.height, im.width)
            return (1 if im.mode in _GREY_MODES else 3, h, w)
    except (*_PIL_ERRORS, Image.DecompressionBombError):
        return None


def load_image(path: str | os.PathLike, size: tuple[int, int] | int | None = None) -> np.ndarray:
    """One PNG or JPEG as float32 in [0, 1], (H, W) for grey or (H, W, 3) for colour, resized
    (bilinear) to ``size`` = (H, W) when given. Raises :class:`DataError` for anything it
    refuses (see the comment above)."""
    from PIL import Image  # heavy: Pillow, only when image files are read

    path, size = Path(path), check_size(size)
    if path.is_dir():
        raise DataError(f"expected an image file, found the folder {path}; pass the image files in it")
    try:
        depth = _png_depth(path)
        with _open(path) as im:
            too_many = too_many_pixels(path, im.width, im.height)
            if too_many is not None:  # from the header, before decoding: a bomb is refused at once
                raise too_many
            if depth is not None and depth[0] == 16 and depth[1] == 4:  # grey + alpha
                raise DataError(f"{path}: expected an 8-bit image or a 16-bit grey one, found a 16-bit grey PNG "
                                "with an alpha channel (Pillow would drop its low byte); remove the alpha channel "
                                "(`convert IN.png -alpha off OUT.png` keeps 16 bits) or convert it to 8 bits "
                                "(`convert IN.png -depth 8 OUT.png`)")
            if depth is not None and depth[0] == 16 and depth[1] != 0:
                raise DataError(f"{path}: expected an 8-bit image or a 16-bit grey one, found a 16-bit colour "
                                "PNG (Pillow would drop its low byte); convert it to 8 bits first, "
                                "e.g. `convert IN.png -depth 8 OUT.png`")
            im.load()
            im = _upright(im)  # the EXIF orientation: a phone photo stored sideways is read upright
            mode, scale = im.mode, 255.0
            if mode in ("I;16", "I;16B", "I;16L", "I"):  # a 16-bit grey PNG
                arr = np.asarray(im).astype(np.int64)
                if arr.size and (arr.min() < 0 or arr.max() > 65535):
                    raise DataError(f"{path}: expected 16-bit grey values in 0..65535, found "
                                    f"{arr.min()}..{arr.max()}; save it as an 8- or 16-bit PNG")
                im, scale = Image.fromarray(arr.astype(np.float32), mode="F"), 65535.0
            elif mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                rgb = np.asarray(im)[..., :3]
                if (rgb == rgb[..., :1]).all():  # a grey palette stays grey
                    im = im.convert("LA" if im.mode == "RGBA" else "L")
            elif mode == "1":
                im = im.convert("L")
            elif mode not in ("L", "RGB", "LA", "RGBA", "F"):
                im = im.convert("RGBA" if "A" in mode.upper() else "RGB")
            if im.mode in ("LA", "RGBA"):
                alpha = np.asarray(im.getchannel("A"))
                if alpha.size and alpha.min() < 255:
                    raise DataError(f"{path}: expected an opaque image, found an alpha channel with "
                                    f"{int((alpha < 255).sum())} transparent pixel(s); flatten it onto a "
                                    "background first (e.g. `convert IN.png -background black -flatten OUT.png`)")
                im = im.convert("L" if im.mode == "LA" else "RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / np.float32(scale)
    except DataError:  # what is refused above says so itself (not "broken")
        raise
    except FileNotFoundError:
        raise DataNotFoundError(f"expected an image at {path}, found nothing; check the path") from None
    except Image.UnidentifiedImageError:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head.startswith(_PNG_SIGNATURE) or head.startswith(b"\xff\xd8"):
            raise DataError(f"{path}: expected a readable PNG or JPEG image, found a broken one (truncated "
                            "or damaged header); remove or replace it") from None
        raise DataError(f"{path}: expected a PNG or JPEG image, found a file that is neither; "
                        "remove it from the folder or convert it") from None
    except Image.DecompressionBombError as exc:  # over twice the limit: Pillow refuses to open it
        size = _png_size(path)
        too_many = too_many_pixels(path, *size) if size is not None else None
        if too_many is not None:
            raise too_many from None
        raise DataError(f"{path}: expected an image of at most {Image.MAX_IMAGE_PIXELS:,} pixels (Pillow's "
                        f"decompression-bomb limit), found more ({exc}); shrink or crop it first (e.g. `convert "
                        "IN.png -resize 8000x8000 OUT.png`), or from Python raise PIL.Image.MAX_IMAGE_PIXELS if "
                        "you trust the file") from None
    except _PIL_ERRORS as exc:
        raise DataError(f"{path}: expected a readable PNG or JPEG image, found a broken or oversized file "
                        f"({type(exc).__name__}: {exc}); remove or replace it") from None
    if (arr.ndim != 2 and not (arr.ndim == 3 and arr.shape[2] == 3)) or min(arr.shape[:2]) < 1:
        raise DataError(f"{path}: expected a grey or RGB image, found an array of shape {arr.shape}; "
                        "re-save it as an 8-bit PNG")
    return np.clip(arr, 0.0, 1.0)


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


__all__ = ["MAX_SIDE", "check_size", "image_shape", "load_image", "to_chw", "read_images", "png_bytes"]
