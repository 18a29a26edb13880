"""Data that streams: images read as they are needed through ``torch.utils.data``.

A folder of images (:class:`ImageFiles`) or an uncompressed ``.npz`` (:class:`NpzImages`,
memory-mapped) is a ``torch.utils.data.Dataset`` whose items stay 8-bit (16-bit for 16-bit
sources) until :func:`collate` makes a float32 batch in [0, 1], so memory does not grow
with the data set. ``crop`` (H, W) takes a random window of each image per epoch (larger
or mixed-size images); the window depends only on the seed, the epoch and the image's
index (:func:`crop_origin`), so a resumed run, any number of workers and every rank of a
DDP run see the same crops. Validation uses one fixed window per image (the centre).

:func:`loader` gives the batches of one epoch from a given step on: each a list of indices
of the epoch's permutation (under ``torchrun``, this rank's share of every global batch).
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .arrays import npy_header
from .errors import DataError, DataWarning
from .images import check_size, image_shape, load_image, too_many_pixels

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}  # what a folder's images are named


def crop_origin(seed: int, epoch: int, index: int, height: int, width: int, crop) -> tuple[int, int]:
    """The top-left corner of image ``index``'s random crop in ``epoch`` (epoch -1: the fixed centre)."""
    ch, cw = crop
    if epoch < 0:
        return (height - ch) // 2, (width - cw) // 2
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])
    return int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))


def _quantised(a: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] from an image file -> uint8 when they are k/255 exactly (8-bit files), else uint16."""
    q = np.round(a * 255.0)
    if np.array_equal((q / 255.0).astype(np.float32), a):
        return q.astype(np.uint8)
    return np.round(a * 65535.0).astype(np.uint16)


def to_float(item: np.ndarray) -> torch.Tensor:
    """An item (a uint8, uint16 or float array, C x H x W) as float32 in [0, 1]."""
    if item.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(item)).float() / 255
    if item.dtype == np.uint16:
        return torch.from_numpy(item.astype(np.float32)) / 65535
    return torch.from_numpy(np.asarray(item, dtype=np.float32))


def collate(items) -> torch.Tensor:
    """A batch from items: (N, C, H, W) float32 in [0, 1] (made in the worker, when there are workers)."""
    return torch.stack([to_float(i) for i in items])


class Streamed(torch.utils.data.Dataset):
    """What a streamed source has: its length, the shape of an item, labels and class names,
    and ``__getitem__((index, epoch))`` -> one C x H x W array (epoch -1: validation's fixed crop).
    A subclass reads whole image ``index`` in :meth:`read`. With ``repeats`` K each image is
    served K times an epoch (index i is image i mod N), each time in another random window."""

    crop: tuple[int, int] | None = None
    seed: int = 0
    repeats: int = 1

    def __len__(self) -> int:
        return len(self.labels) * self.repeats

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.shape

    def read(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, -1)
        a = self.read(int(index) % len(self.labels))
        if self.crop is None:
            return a.copy()
        top, left = crop_origin(self.seed, epoch, index, a.shape[1], a.shape[2], self.crop)
        return a[:, top:top + self.crop[0], left:left + self.crop[1]].copy()

    def items(self, indices, epoch: int = -1) -> torch.Tensor:
        """Images ``indices`` as one float32 batch, read here (no workers)."""
        return collate([self[(int(i), epoch)] for i in indices])


class ImageFiles(Streamed):
    """A folder of PNG/JPEG images read one at a time (see :func:`image_folder`); the images last
    decoded are kept (up to ``cache_bytes`` a process), so many windows of a few large photos
    do not decode each photo again for every window."""

    def __init__(self, paths, labels, class_names, channels: int, size=None, crop=None, seed: int = 0,
                 repeats: int = 1, cache_bytes: int = 256 * 2 ** 20):
        self.paths, self.labels, self.class_names = list(paths), list(labels), list(class_names)
        self.channels, self.size, self.crop, self.seed, self.repeats = channels, size, crop, seed, repeats
        self.shape = (channels, *(crop or size))
        self.cache_bytes, self._cache = cache_bytes, OrderedDict()

    def read(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        a = load_image(self.paths[index], self.size)  # float32 (H, W) or (H, W, 3), EXIF upright
        a = a[None] if a.ndim == 2 else np.transpose(a, (2, 0, 1))
        if a.shape[0] != self.channels:  # a grey image in a colour folder
            a = np.repeat(a, self.channels, axis=0)
        a = _quantised(np.ascontiguousarray(a))
        if a.nbytes <= self.cache_bytes:
            self._cache[index] = a
            while sum(v.nbytes for v in self._cache.values()) > self.cache_bytes:
                self._cache.popitem(last=False)
        return a


def _is_hidden(p: Path) -> bool:
    return p.name.startswith(".") or p.name.startswith("__")


def image_folder(folder, size=None, crop=None, limit: int | None = None, seed: int = 0,
                 repeats: int = 1) -> ImageFiles:
    """The images of ``folder`` (one subfolder per class, or directly inside) as a streamed data
    set. Only the headers are read here: each image's size and colour. All must be one size
    unless ``size`` resizes them or ``crop`` (H, W) cuts windows (then each image must be at
    least that large); a folder that mixes grey and colour images is read as colour.
    ``repeats``: each image served that many times an epoch (in other windows)."""
    folder = Path(folder)
    size, crop = check_size(size), check_size(crop)
    groups_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p))
    groups = [(d.name, d) for d in groups_dirs] if groups_dirs else [("all", folder)]
    paths, labels, skipped = [], [], []
    if groups_dirs:
        skipped += [p for p in sorted(folder.iterdir()) if p.is_file() and not _is_hidden(p)]
    for label, (_, d) in enumerate(groups):
        for p in sorted(d.iterdir()):
            if _is_hidden(p):
                continue
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(label)
            else:
                skipped.append(p)
    if skipped:
        names = ", ".join(str(p.relative_to(folder)) for p in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"{folder}: skipped {len(skipped)} item(s) that are not .png/.jpg/.jpeg files in a "
                      f"class folder: {names}{more}", DataWarning, stacklevel=2)
    if not paths:
        raise DataError(f"expected PNG or JPEG images in {folder} (or in one subfolder per class), "
                        "found none; put the images there, or the four Fashion-MNIST IDX files")
    paths, labels = paths[:limit], labels[:limit]
    shapes = []
    for p in paths:
        shape = image_shape(p)
        if shape is None:  # Pillow cannot tell: decoding it says what is wrong
            load_image(p)
            raise DataError(f"{p}: expected a readable PNG or JPEG image, found one whose header Pillow cannot "
                            "read; remove or replace it")
        bomb = too_many_pixels(p, shape[2], shape[1])  # from the header: refused before anything is decoded
        if bomb is not None:
            raise bomb
        shapes.append(shape)
    channels = 3 if any(s[0] == 3 for s in shapes) else 1
    sides = [size or s[1:] for s in shapes]
    if crop is not None:
        small = next((i for i, s in enumerate(sides) if s[0] < crop[0] or s[1] < crop[1]), None)
        if small is not None:
            raise DataError(f"expected images of at least {crop[0]}x{crop[1]} for --crop {crop[0]},{crop[1]}, found "
                            f"{paths[small].relative_to(folder)} of {sides[small][0]}x{sides[small][1]}; pass a "
                            "smaller --crop, or remove the smaller images")
    elif len(set(sides)) > 1:
        odd = next(i for i, s in enumerate(sides) if s != sides[0])
        raise DataError(f"expected images of one size in {folder}, found {len(set(sides))} sizes "
                        f"({paths[0].relative_to(folder)} is {sides[0][0]}x{sides[0][1]}, "
                        f"{paths[odd].relative_to(folder)} is {sides[odd][0]}x{sides[odd][1]}); pass --crop H,W "
                        "to train on windows of them, or --size H,W to resize them all")
    return ImageFiles(paths, labels, [name for name, _ in groups], channels, size=size or tuple(sides[0]),
                      crop=crop, seed=seed, repeats=repeats)


class NpzImages(Streamed):
    """Images of an uncompressed ``.npz`` (what ``np.savez`` writes), memory-mapped: nothing is
    read until an item is asked for. (N, H, W) or (N, C, H, W), uint8 or float in [0, 1]."""

    def __init__(self, path, key: str, labels, class_names, crop=None, seed: int = 0, limit: int | None = None):
        self.path, self.key, self.class_names = Path(path), key, list(class_names)
        self.crop, self.seed = crop, seed
        self._x = None
        x = self.array()
        if len(labels) != len(x):
            raise DataError(f"{path}: expected {len(x)} labels (one per image), found {len(labels)}; the images "
                            "and labels do not belong together")
        self.labels = list(labels)[:limit]
        _check_crop(tuple(x.shape[-2:]), crop, path)
        self.shape = (1 if x.ndim == 3 else int(x.shape[1]), *(crop or x.shape[-2:]))

    def array(self) -> np.ndarray:
        if self._x is None:  # opened in each worker on first use (a memmap does not cross processes)
            self._x = mapped_npz_member(self.path, self.key)
        return self._x

    def __getstate__(self):
        return {**self.__dict__, "_x": None}

    def read(self, index: int) -> np.ndarray:
        a = self.array()[index]  # a view of the map: __getitem__ copies the window
        return a[None] if a.ndim == 2 else a


def mapped_npz_member(path, key: str) -> np.ndarray:
    """The array ``key`` of the .npz ``path`` as a read-only memory map (its member must be stored
    uncompressed, as ``np.savez`` does); a :class:`DataError` otherwise."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise DataError(f"{path}: expected {key!r} stored uncompressed to stream it (np.savez), found it "
                            "compressed (np.savez_compressed); save it again with np.savez, or load it whole")
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
            start = info.header_offset + 30 + name_len + extra_len
            fh.seek(start)
            shape, fortran, dtype = npy_header(fh)
            offset = fh.tell()
    if fortran or dtype.hasobject:
        raise DataError(f"{path}: expected {key!r} as a C-ordered numeric array, found another layout; "
                        "save it with np.savez(path, x=np.ascontiguousarray(x))")
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise DataError(f"{path}: the header of {key!r} promises more bytes than the archive holds; the file is "
                        "truncated or corrupt, save it again with np.savez")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


class TensorImages(Streamed):
    """Images already in memory (N, C, H, W), served as a streamed set: what ``--crop`` makes of
    Fashion-MNIST or a compressed .npz."""

    def __init__(self, x: torch.Tensor, labels, class_names, crop=None, seed: int = 0, where="the images"):
        self.x, self.labels, self.class_names, self.crop, self.seed = x, labels, list(class_names), crop, seed
        _check_crop(tuple(x.shape[-2:]), crop, where)
        self.shape = (int(x.shape[1]), *(crop or x.shape[-2:]))

    def read(self, index: int) -> np.ndarray:
        return self.x[index].numpy()


def has_splits(source) -> bool:
    """A folder holding ``train/`` and ``test/`` folders of images: two splits (validation on ``test``)."""
    p = Path(source) if source is not None else None
    return p is not None and p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir()


def stored_uint8(path) -> str | None:
    """The name of the images in the .npz ``path`` (x, images or arr_0) when they are 8-bit and
    stored uncompressed, i.e. can be memory-mapped; else None (the in-memory loader reads it)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            key = next((k for k in ("x", "images", "arr_0") if f"{k}.npy" in names), None)
            if key is None or zf.getinfo(f"{key}.npy").compress_type != zipfile.ZIP_STORED:
                return None
            with zf.open(f"{key}.npy") as fh:
                shape, fortran, dtype = npy_header(fh)
        return key if dtype == np.uint8 and not fortran and len(shape) in (3, 4) else None
    except (OSError, ValueError, zipfile.BadZipFile, KeyError):
        return None  # the in-memory loader says what is wrong


def _check_crop(full, crop, where) -> None:
    """Refuse a crop larger than the images (H, W) = ``full`` of ``where``."""
    if crop is not None and (full[0] < crop[0] or full[1] < crop[1]):
        raise DataError(f"expected images of at least {crop[0]}x{crop[1]} for --crop {crop[0]},{crop[1]}, found "
                        f"{full[0]}x{full[1]} in {where}; pass a smaller --crop")


# --------------------------------------------------------------------------- batches

class _Batches(torch.utils.data.Sampler):
    """The batches of one epoch from ``start`` on: lists of (index, epoch) for this rank."""

    def __init__(self, perm: torch.Tensor, global_batch: int, start: int, epoch: int, world: int, rank: int):
        self.perm, self.global_batch, self.start, self.epoch = perm, global_batch, start, epoch
        self.world, self.rank = world, rank

    def __len__(self) -> int:
        return max(0, math.ceil(len(self.perm) / self.global_batch) - self.start)

    def __iter__(self):
        for step in range(self.start, math.ceil(len(self.perm) / self.global_batch)):
            idx = self.perm[step * self.global_batch:(step + 1) * self.global_batch].tolist()
            lo, hi = share(len(idx), self.world, self.rank)
            yield [(i, self.epoch) for i in idx[lo:hi]]


def share(batch: int, world: int, rank: int) -> tuple[int, int]:
    """The slice [lo, hi) of a global batch of ``batch`` images that rank ``rank`` of ``world`` takes
    (the last batch may be short)."""
    per = math.ceil(batch / world)
    return min(rank * per, batch), min((rank + 1) * per, batch)


def loader(dataset, perm: torch.Tensor, global_batch: int, start: int, epoch: int, workers: int = 0,
           world: int = 1, rank: int = 0):
    """An iterator over this rank's share of each global batch of the epoch, from step ``start``."""
    sampler = _Batches(perm, global_batch, start, epoch, world, rank)
    return iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                            collate_fn=collate, persistent_workers=False,
                                            prefetch_factor=4 if workers else None,
                                            multiprocessing_context="fork" if workers and os.name == "posix"
                                            else None))


__all__ = ["crop_origin", "collate", "to_float", "Streamed", "ImageFiles", "image_folder", "NpzImages", "mapped_npz_member",
           "TensorImages", "has_splits", "stored_uint8", "share", "loader"]
