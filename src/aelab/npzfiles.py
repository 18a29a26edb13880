""".npz archives of images: read whole (:func:`load_npz`), after their headers are checked against
what the archive holds, and their labels on their own (:func:`load_npz_labels`, for a
memory-mapped archive that is streamed)."""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .arrays import _MAX_GZIP_RATIO, Dataset, _scale_hint, check_images, check_memory, npy_header
from .errors import DataError, DataNotFoundError


_NPY_MAGIC = b"\x93NUMPY"


def _npz_sizes(path: Path) -> tuple[dict[str, int], int]:
    """The element count of each array in the .npz ``path`` (from the headers) and the bytes that
    loading all of them takes. A header that promises more than its member holds, or a member
    claiming more than deflate can make of its compressed bytes, is refused before numpy
    allocates what it promises."""
    counts, total = {}, 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            holds = info.file_size
            if info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                holds = min(holds, info.compress_size if info.compress_type == zipfile.ZIP_STORED
                            else _MAX_GZIP_RATIO * info.compress_size + 1024)
            total += holds
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                shape, _, dtype = npy_header(fh)
                need = math.prod(shape) * dtype.itemsize + fh.tell()
            if need > holds:
                raise DataError(f"{path}: the header of {info.filename!r} promises {need} bytes for shape {shape}, "
                                f"found {holds} in the archive; the file is truncated or corrupt, save it again "
                                "with np.savez")
            counts[info.filename[:-4]] = math.prod(shape)
    return counts, total


def load_npz(path: str | os.PathLike) -> Dataset:
    """An ``.npz`` with images under ``x`` (or ``images``), optional ``y``/``labels`` and
    ``class_names``. (N, H, W) arrays are taken as grey; uint8 arrays are scaled by 1/255."""

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
        if head.startswith(_NPY_MAGIC):
            raise DataError(f"{path}: expected a NumPy .npz archive, found a single .npy array; "
                            "save with np.savez(path, x=images, y=labels)")
        if zipfile.is_zipfile(path):  # the headers first: no allocation of what a corrupt one promises
            counts, nbytes = _npz_sizes(path)
            images = next((counts[k] for k in ("x", "images", "arr_0") if k in counts), 0)
            check_memory(nbytes + 4 * images, f"{path} ({images} image values)",
                         "keep fewer images in the archive, or use a machine with more memory")
        elif not head.startswith(b"\x80") and not head.startswith(b"PK"):  # neither a pickle nor a (broken) zip
            what = "an empty file" if not head else f"a file that starts with {head!r}"
            raise DataError(f"{path}: expected a NumPy .npz archive (a zip file), found {what}, which is not "
                            "one; save the arrays with np.savez(path, x=images, y=labels)")
        loaded = np.load(path, allow_pickle=False)
        with loaded as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise DataNotFoundError(f"expected an .npz file at {path}, found nothing; check the path") from None
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile, KeyError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: expected a NumPy .npz archive without pickled objects, "
                        f"could not read it ({type(exc).__name__}: {exc}); save it again with np.savez") from None
    key = next((k for k in ("x", "images", "arr_0") if k in arrays), None)
    if key is None:
        raise DataError(f"{path}: expected an array named 'x' or 'images', found {sorted(arrays)}; "
                        "save with np.savez(path, x=images, y=labels)")
    x = arrays[key]
    if x.ndim == 3:
        x = x[:, None]
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype.kind == "f":
        x = x.astype(np.float32)
    elif x.dtype.kind in "biu" and x.ndim == 4:  # 16-bit and other integers: their own scale, in NumPy
        raise DataError(f"expected {path}:{key} as uint8 (0-255) or floats in [0, 1], found dtype {x.dtype}; "
                        f"{_scale_hint(x, 'x.astype(np.float32)')} and save them again with np.savez")
    x = check_images(x, name=f"{path}:{key}")
    y, names = npz_labels(arrays, len(x), path)
    return Dataset(x, y, names)


def load_npz_labels(path) -> tuple[list[int], list[str]]:
    """The labels and class names of the .npz ``path``, without reading its images (a memory-mapped
    archive's): the same checks as :func:`load_npz`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in ("x", "images", "arr_0") if k in data.files), None)
            arrays = {k: data[k] for k in ("y", "labels", "class_names") if k in data.files}
            with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
                count = npy_header(fh)[0][0]
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path}: expected a NumPy .npz archive without pickled objects, "
                        f"could not read it ({type(exc).__name__}: {exc}); save it again with np.savez") from None
    y, names = npz_labels(arrays, count, path)
    return y.tolist(), names


def npz_labels(arrays: dict, images: int, path) -> tuple[torch.Tensor, list[str]]:
    """The labels (``y`` or ``labels``; zeros when absent) of ``images`` images and the class names
    (``class_names``, else the numbers), checked: integers, one per image, within the classes."""
    y_key = next((k for k in ("y", "labels") if k in arrays), None)
    if y_key is None:
        y = torch.zeros(images, dtype=torch.int64)
    else:
        labels = arrays[y_key]
        if labels.dtype.kind not in "biu" and not (labels.dtype.kind == "f" and np.isfinite(labels).all()
                                                    and (labels == np.round(labels)).all()):
            raise DataError(f"{path}: expected integer class labels under {y_key!r}, found dtype {labels.dtype}; "
                            "store them as integers 0..K-1")
        y = torch.from_numpy(labels.astype(np.int64))
    if y.shape != (images,):
        raise DataError(f"{path}: expected {images} labels (one per image), found shape {tuple(y.shape)}; "
                        "the images and labels do not belong together")
    top = int(y.max()) if len(y) else -1
    if "class_names" in arrays:
        names = [str(s) for s in np.atleast_1d(arrays["class_names"])]
        if not names:
            raise DataError(f"{path}: expected one class name per class (labels {label_range(top + 1)}), found an "
                            "empty class_names; list the names in class_names, or leave it out to number the classes")
        count, per = len(names), "one per class name"
    else:  # one class per label value, checked against a bound before the names are built
        bound = max_classes(len(y))
        count = top + 1 if top < bound else bound
        per = (f"at most {bound:,} classes without class_names: one per image, or {MAX_UNNAMED_CLASSES:,}"
               if top >= bound else "numbered from 0 without class_names")
    if len(y) and (int(y.min()) < 0 or top >= count):
        bad = int(torch.nonzero((y < 0) | (y >= count))[0, 0])
        raise DataError(f"{path}: expected labels {label_range(count)} ({per}), found {int(y[bad])} "
                        f"at index {bad}; fix the labels (renumber the classes 0..K-1, e.g. with "
                        "np.unique(y, return_inverse=True)[1]) or class_names")
    if "class_names" not in arrays:
        names = [str(i) for i in range(count)]
    return y, names


MAX_UNNAMED_CLASSES = 100_000  # classes an .npz may number without naming them, when it has fewer images


def max_classes(images: int) -> int:
    """How many classes labels without class names may number: one per image, or
    :data:`MAX_UNNAMED_CLASSES` when that is more (a label of 2**40 must not build 2**40 names)."""
    return max(images, MAX_UNNAMED_CLASSES)


def label_range(count: int) -> str:
    """The labels ``count`` classes allow, for messages: ``0..9``, ``0`` (one class), ``none`` (no class)."""
    return f"0..{count - 1}" if count > 1 else "0" if count == 1 else "none"
