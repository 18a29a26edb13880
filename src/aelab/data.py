"""Data: the Fashion-MNIST IDX files, and what every command loads from ``--data``.

:func:`load_dataset` returns a :class:`Dataset` in memory (float32 images in NCHW layout
scaled to [0, 1], int64 labels, class names) from Fashion-MNIST, a folder of images or an
``.npz``; :func:`training_set` gives what training reads: Fashion-MNIST in memory, a folder
or an uncompressed .npz streamed (:mod:`aelab.streaming`), with ``--crop`` windows.

IDX format (LeCun's MNIST page): a big-endian header ``0x00 0x00 <type> <ndim>`` followed
by ``ndim`` uint32 sizes and the data; images are type 0x08 (ubyte) with 3 dimensions
(magic 2051), labels type 0x08 with 1 dimension (magic 2049).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from . import download, streaming
from .arrays import (_MAX_GZIP_RATIO, Dataset, _scale_hint, available_memory, check_images, check_limit,  # noqa: F401
                     check_memory)
from .errors import ConfigError, DataError, DataNotFoundError
from .images import check_size, image_shape, load_image  # noqa: F401 (re-exported: aelab.data.load_image)
from .npzfiles import MAX_UNNAMED_CLASSES, label_range, load_npz, load_npz_labels, max_classes  # noqa: F401

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = streaming.IMAGE_SUFFIXES
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


# --------------------------------------------------------------------------- IDX files

def _idx_stream(raw: bytes):
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        return gzip.GzipFile(fileobj=io.BytesIO(raw), mode="rb"), _MAX_GZIP_RATIO * len(raw) + 1024
    return io.BytesIO(raw), len(raw)


def read_file_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of ``path``; a missing or unreadable file is a one-line :class:`DataError`
    (:class:`DataNotFoundError` when missing) saying ``what`` was expected there."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataNotFoundError(f"expected {what} at {path}, found nothing; check the path") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}; check that it is a readable file") from None


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a uint8 array, checking magic and sizes.

    The header is read first and only the promised number of bytes is then decompressed, so a
    corrupt header or a gzip bomb cannot make aelab allocate more than the file can hold.
    Every failure is a :class:`DataError` naming the file.
    """
    path = Path(path)
    raw = read_file_bytes(path, "an IDX file")
    stream, capacity = _idx_stream(raw)
    try:
        head = stream.read(4)
        if len(head) < 4:
            raise DataError(f"{path}: expected an IDX header of at least 4 bytes, found {len(head)} bytes; "
                            "the file is truncated, download it again")
        zero, dtype_code, ndim = struct.unpack(">HBB", head)
        if zero != 0 or dtype_code != 0x08 or ndim == 0:
            magic = struct.unpack(">I", head)[0]
            raise DataError(f"{path}: expected an IDX file of unsigned bytes (magic 0x00000801 or "
                            f"0x00000803), found magic 0x{magic:08x}; is this really an IDX file?")
        if expected_ndim is not None and ndim != expected_ndim:
            raise DataError(f"{path}: expected an IDX file with {expected_ndim} dimension(s) "
                            f"(magic 0x{0x800 + expected_ndim:08x}), found {ndim}; images and labels swapped?")
        sizes = stream.read(4 * ndim)
        if len(sizes) < 4 * ndim:
            raise DataError(f"{path}: expected a {4 + 4 * ndim}-byte header, found {4 + len(sizes)} bytes; "
                            "the file is truncated, download it again")
        shape = struct.unpack(f">{ndim}I", sizes)
        count = math.prod(shape)  # Python ints: no overflow, whatever the header says
        if count > capacity:
            raise DataError(f"{path}: the header promises {count} bytes of data for shape {shape}, more than "
                            "the file can hold; the file is truncated or corrupt, download it again")
        check_memory(count, f"{path} (shape {shape})", "free some memory, or use a machine with more")
        data = stream.read(count + 1)  # one byte more, to see trailing data
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path} is a truncated or corrupt gzip file ({exc}); download it again "
                        "or reinstall the package dataset-fashion-mnist") from None
    if len(data) != count:
        found = f"{len(data)}" if len(data) <= count else "more"
        raise DataError(f"{path}: the header promises {count} bytes of data for shape {shape}, "
                        f"found {found}; the file is truncated or corrupt, download it again")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    # the Fashion-MNIST project's own naming is the same; also accept the dotted form
    for name in (stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/aelab/fashion-mnist`` (``~/.cache/aelab/fashion-mnist`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aelab" / "fashion-mnist"


def candidate_dirs(path: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Where the Fashion-MNIST files are looked for, in order, with the reason for each."""
    found = []
    if path is not None:
        found.append(("--data", Path(path)))
    if os.environ.get("AELAB_DATA"):
        found.append(("$AELAB_DATA", Path(os.environ["AELAB_DATA"])))
    found.append(("user cache", user_cache_dir()))
    found.append(("Debian package", SYSTEM_DIR))
    return found


def locate_fashion_mnist(path: str | os.PathLike | None = None) -> Path:
    """The first folder holding the four Fashion-MNIST files.

    Looks in: ``path`` (when given), ``$AELAB_DATA``, :func:`user_cache_dir`, and
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). An explicit
    ``path`` that lacks the files is an error at once: a user who names a folder means it.
    """
    stems = [s for pair in FASHION_FILES.values() for s in pair]
    looked = []
    for why, folder in candidate_dirs(path):
        if why == "--data" and not os.path.lexists(folder):
            raise DataNotFoundError(f"expected a folder, an .npz or Fashion-MNIST files at {folder}, found nothing "
                                    "there; check the path, or leave --data out to use Fashion-MNIST from "
                                    "$AELAB_DATA, the user cache or dataset-fashion-mnist")
        missing = [s for s in stems if _find_file(folder, s) is None]
        if not missing:
            return folder
        looked.append(f"{folder} ({why})")
        if why == "--data":
            raise DataNotFoundError(
                f"expected the four Fashion-MNIST IDX files in {folder}, missing {', '.join(missing)}; "
                "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
                "and t10k-labels-idx1-ubyte.gz there")
    raise DataNotFoundError(
        "Fashion-MNIST not found; looked in " + ", ".join(looked) +
        "; install it with `apt-get install dataset-fashion-mnist`, or put the four IDX files "
        "from github.com/zalandoresearch/fashion-mnist in a folder and pass --data FOLDER "
        "(or set AELAB_DATA)")


def fashion_mnist_folder(path: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """:func:`locate_fashion_mnist`; when the default search (no ``path``) finds nothing, the four
    files downloaded into :func:`user_cache_dir` (:mod:`aelab.download`: pinned SHA-256, atomic),
    unless ``$AELAB_OFFLINE`` is set (``--no-download``): then the "not found" error. An explicit
    ``path`` never downloads."""
    try:
        return locate_fashion_mnist(path)
    except DataNotFoundError:
        if path is not None or download.offline():
            raise
    return download.fetch_fashion_mnist(user_cache_dir(), progress=progress)


def load_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike,
                  num_classes: int | None = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file and its labels file, checking that they agree."""
    images = read_idx(images_path, expected_ndim=3)
    labels = read_idx(labels_path, expected_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
                        f"{labels.shape[0]} labels; expected the same count, the files do not belong together")
    if num_classes is not None and labels.size and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(f"{labels_path}: expected labels {label_range(num_classes)}, found {int(labels[bad])} "
                        f"at index {bad}; the labels file is corrupt, download it again")
    return images, labels


def load_fashion_mnist(split: str = "train", path: str | os.PathLike | None = None,
                       limit: int | None = None) -> Dataset:
    """Fashion-MNIST ``split`` ("train": 60,000 images, "test": 10,000) as a :class:`Dataset`
    (from ``path``, else where :func:`fashion_mnist_folder` finds or downloads it)."""
    if split not in FASHION_FILES:
        raise DataError(f"expected split 'train' or 'test', found {split!r}")
    check_limit(limit)
    folder = fashion_mnist_folder(path)
    img_stem, lbl_stem = FASHION_FILES[split]
    images, labels = load_idx_pair(_find_file(folder, img_stem), _find_file(folder, lbl_stem))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    check_memory(images.size * 4, f"{len(images)} images as float32", "pass a smaller --limit")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(x, y, list(FASHION_CLASSES))


# --------------------------------------------------------------------------- image folders

def load_image_folder(folder: str | os.PathLike, size: tuple[int, int] | int | None = None,
                      limit: int | None = None, crop=None) -> Dataset:
    """A folder of PNG/JPEG images (one subfolder per class, or images directly inside), read
    whole into memory: the images of :func:`aelab.streaming.image_folder` (what is accepted,
    sizes, colour, skipped files), at their size, ``size`` (resized) or their centre ``crop``.
    ``limit``: read only the first that many images. What cannot fit in memory is refused
    before it is read."""
    folder = Path(folder)
    check_limit(limit)
    if not folder.is_dir():
        raise DataNotFoundError(f"expected a folder of images at {folder}, found nothing; check the path")
    ds = streaming.image_folder(folder, size=size, crop=crop, limit=limit)
    c, h, w = ds.input_shape
    check_memory(len(ds) * c * h * w * 4, f"{len(ds)} images of {c}x{h}x{w} as float32",
                 "pass a smaller --size H,W or --limit N")
    return Dataset(ds.items(range(len(ds))), torch.tensor(ds.labels, dtype=torch.int64), ds.class_names)


def load_dataset(source: str | os.PathLike | None = None, split: str = "train",
                 limit: int | None = None, size: tuple[int, int] | int | None = None, crop=None) -> Dataset:
    """Load whatever ``source`` names into memory: an ``.npz`` file, a folder of images (its
    ``split`` folder when it has ``train/`` and ``test/``; ``crop``: each image's centre window),
    a folder of Fashion-MNIST IDX files, or (None) Fashion-MNIST from the usual places."""
    check_limit(limit)
    if source is not None:
        p = Path(source)
        if p.is_file() and p.suffix != ".npz":
            raise DataError(f"expected --data to be a folder (Fashion-MNIST IDX files or images) or an .npz "
                            f"file, found the file {p}; pass its folder instead")
        if p.suffix == ".npz":
            ds = load_npz(p).subset(limit)
            return ds if crop is None else _centre(ds, crop, p)
        if p.is_dir() and _find_file(p, FASHION_FILES[split][0]) is None:
            return load_image_folder(p / split if streaming.has_splits(p) else p, size=size, limit=limit, crop=crop)
    ds = load_fashion_mnist(split, path=source, limit=limit)
    return ds if crop is None else _centre(ds, crop, source or "Fashion-MNIST")


def _centre(ds: Dataset, crop, where) -> Dataset:
    images = streaming.TensorImages(ds.x, ds.y.tolist(), ds.class_names, crop=check_size(crop), where=where)
    return Dataset(images.items(range(len(images))), ds.y, ds.class_names)


def is_fashion(source: str | os.PathLike | None) -> bool:
    """True when ``source`` is Fashion-MNIST (None, or a folder of its IDX files)."""
    return source is None or (Path(source).is_dir() and _find_file(Path(source), FASHION_FILES["train"][0]) is not None)


def has_test_split(source: str | os.PathLike | None) -> bool:
    """True when ``source`` is Fashion-MNIST (None, or a folder of its IDX files) or a folder of
    images with ``train/`` and ``test/`` folders."""
    if source is None:
        return True
    p = Path(source)
    return p.is_dir() and (_find_file(p, FASHION_FILES["test"][0]) is not None or streaming.has_splits(p))


def training_set(source=None, split: str = "train", limit: int | None = None, size=None, crop=None,
                 seed: int = 0, crops_per_image: int = 1):
    """What training reads from ``source``: a folder of images streamed (its ``split`` folder when
    it has ``train/`` and ``test/``), an .npz of 8-bit images stored uncompressed memory-mapped
    (both :class:`aelab.streaming.Streamed`, read batch by batch); Fashion-MNIST and any other
    .npz in memory (a :class:`Dataset`, or with ``crop`` a :class:`aelab.streaming.TensorImages`).
    ``crop`` (H, W): a random window of each image per epoch (validation: the centre);
    ``crops_per_image``: that many windows of each image an epoch (a few large photos)."""
    check_limit(limit)
    crop = check_size(crop)
    if not isinstance(crops_per_image, int) or isinstance(crops_per_image, bool) or crops_per_image < 1 or \
            (crops_per_image > 1 and crop is None):
        raise ConfigError(f"expected --crops-per-image a whole number >= 1, with --crop, found {crops_per_image!r}"
                          f"{'' if crop is not None else ' without --crop'}; e.g. --crop 64,64 --crops-per-image 100")
    p = Path(source) if source is not None else None
    if p is not None and p.is_dir() and _find_file(p, FASHION_FILES[split][0]) is None:
        folder = p / split if streaming.has_splits(p) else p
        if not folder.is_dir():
            raise DataNotFoundError(f"expected a folder of images at {folder}, found nothing; check the path")
        return streaming.image_folder(folder, size=size, crop=crop, limit=limit, seed=seed, repeats=crops_per_image)
    key = streaming.stored_uint8(p) if p is not None and p.suffix == ".npz" else None
    if key is not None:  # 8-bit images stored uncompressed: memory-mapped
        labels, names = load_npz_labels(p)
        ds = streaming.NpzImages(p, key, labels, names, crop=crop, seed=seed, limit=limit)
        ds.repeats = crops_per_image
        return ds
    ds = load_dataset(source, split, limit=limit, size=size)
    if crop is None:
        return ds
    images = streaming.TensorImages(ds.x, ds.y.tolist(), ds.class_names, crop=crop, seed=seed,
                                    where=source or "Fashion-MNIST")
    images.repeats = crops_per_image
    return images
