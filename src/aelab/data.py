"""Data: the Fashion-MNIST IDX files, folders of images, ``.npz`` arrays.

Every loader returns a :class:`Dataset`: float32 images in NCHW layout scaled to [0, 1]
(``x / 255`` for 8-bit sources), int64 labels and the class names.

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
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, DataError, DataNotFoundError, DataWarning
from .images import check_size, image_shape, load_image

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


@dataclass
class Dataset:
    """Images ``x`` (N, C, H, W) float32 in [0, 1], labels ``y`` (N,) int64, class names."""

    x: torch.Tensor
    y: torch.Tensor
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x.shape[1:])  # (C, H, W)

    def subset(self, limit: int | None) -> "Dataset":
        """The first ``limit`` items (all of them when ``limit`` is None)."""
        if limit is None:
            return self
        check_limit(limit)
        return Dataset(self.x[:limit], self.y[:limit], self.class_names)


def check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"expected a limit of at least 1 image, found {limit!r}; e.g. --limit 1000, "
                          "or leave it out for the whole split")


def available_memory() -> int:
    """Bytes of memory available now: ``MemAvailable`` from /proc/meminfo, else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: let the allocation decide
        return 1 << 62


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """Refuse, before allocating them, ``nbytes`` for ``what`` that cannot fit in the memory available."""
    free = available_memory()
    if nbytes > free:
        def size(n):
            return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
        raise DataError(f"expected data that fits in memory ({size(free)} available), found {what} that would "
                        f"need {size(nbytes)}; {fix}")


# --------------------------------------------------------------------------- IDX files

# deflate cannot compress better than about 1032:1, so a gzip file of B bytes holds at most
# ~1032 * B bytes: a header promising more is refused before anything is decompressed.
_MAX_GZIP_RATIO = 1032


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
    """Fashion-MNIST ``split`` ("train": 60,000 images, "test": 10,000) as a :class:`Dataset`."""
    if split not in FASHION_FILES:
        raise DataError(f"expected split 'train' or 'test', found {split!r}")
    check_limit(limit)
    folder = locate_fashion_mnist(path)
    img_stem, lbl_stem = FASHION_FILES[split]
    images, labels = load_idx_pair(_find_file(folder, img_stem), _find_file(folder, lbl_stem))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    check_memory(images.size * 4, f"{len(images)} images as float32", "pass a smaller --limit")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(x, y, list(FASHION_CLASSES))


# --------------------------------------------------------------------------- arrays

def check_images(x, name: str = "images") -> torch.Tensor:
    """Return ``x`` as a float32 NCHW tensor in [0, 1], or raise a :class:`DataError` saying why not."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise DataError(f"expected {name} as a numeric array, found dtype {x.dtype}; "
                            "store images as uint8 (0-255) or floats in [0, 1]")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DataError(f"expected {name} as a torch.Tensor or numpy array, found {type(x).__name__}")
    if x.ndim != 4:
        raise DataError(f"expected {name} of rank 4 (N, C, H, W), found shape {tuple(x.shape)}; "
                        "add the missing axes, e.g. x[:, None] for (N, H, W) grey images")
    if x.shape[0] == 0:
        raise DataError(f"expected at least one image in {name}, found an empty array of shape {tuple(x.shape)}")
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        raise DataError(f"expected {name} channels first (N, C, H, W), found shape {tuple(x.shape)} which "
                        "looks channels last; use x.permute(0, 3, 1, 2)")
    if not torch.is_floating_point(x):
        raise DataError(f"expected {name} as floats in [0, 1], found dtype {str(x.dtype).replace('torch.', '')}"
                        f"; {_scale_hint(x, 'x.float()')}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise DataError(f"expected finite values in {name}, found {bad} NaN or infinite value(s); "
                        "clean or drop those images")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = "; scale 8-bit images with x / 255" if hi > 1.0 and hi <= 255.0 else ""
        raise DataError(f"expected {name} in [0, 1], found values in [{lo:.4g}, {hi:.4g}]{hint}")
    return x.float().contiguous()


def _scale_hint(x, as_float: str) -> str:
    """How to turn the integer images ``x`` (tensor or array) into floats in [0, 1]: divide by the
    maximum of their type (255 for 8 bits, 65535 for 16-bit unsigned, ...), ``as_float`` being the
    expression that makes them floats (``x.float()``, ``x.astype(np.float32)``)."""
    dtype = str(x.dtype).replace("torch.", "")
    if dtype == "bool":
        return f"store them as {as_float} (0 or 1)"
    top = {"uint8": 255, "int8": 127, "uint16": 65535, "int16": 32767}.get(dtype)
    if top is None:  # a wide integer type: the range its values use (8 or 16 bits), else the type's own
        size = x.numel() if isinstance(x, torch.Tensor) else x.size
        found = int(x.max()) if size else 0
        top = 255 if found <= 255 else 65535 if found <= 65535 else int(np.iinfo(dtype).max)
    bits = {255: "8-bit", 65535: "16-bit"}.get(top, dtype)
    return f"scale {bits} images with {as_float} / {top}"


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
                version = np.lib.format.read_magic(fh)
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = header(fh)
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
    y_key = next((k for k in ("y", "labels") if k in arrays), None)
    if y_key is None:
        y = torch.zeros(len(x), dtype=torch.int64)
    else:
        labels = arrays[y_key]
        if labels.dtype.kind not in "biu" and not (labels.dtype.kind == "f" and np.isfinite(labels).all()
                                                    and (labels == np.round(labels)).all()):
            raise DataError(f"{path}: expected integer class labels under {y_key!r}, found dtype {labels.dtype}; "
                            "store them as integers 0..K-1")
        y = torch.from_numpy(labels.astype(np.int64))
    if y.shape != (len(x),):
        raise DataError(f"{path}: expected {len(x)} labels (one per image), found shape {tuple(y.shape)}; "
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
    return Dataset(x, y, names)


MAX_UNNAMED_CLASSES = 100_000  # classes an .npz may number without naming them, when it has fewer images


def max_classes(images: int) -> int:
    """How many classes labels without class names may number: one per image, or
    :data:`MAX_UNNAMED_CLASSES` when that is more (a label of 2**40 must not build 2**40 names)."""
    return max(images, MAX_UNNAMED_CLASSES)


def label_range(count: int) -> str:
    """The labels ``count`` classes allow, for messages: ``0..9``, ``0`` (one class), ``none`` (no class)."""
    return f"0..{count - 1}" if count > 1 else "0" if count == 1 else "none"


# --------------------------------------------------------------------------- image folders

def _is_hidden(p: Path) -> bool:
    return p.name.startswith(".") or p.name.startswith("__")


def load_image_folder(folder: str | os.PathLike, size: tuple[int, int] | int | None = None,
                      limit: int | None = None) -> Dataset:
    """A folder of PNG/JPEG images, one subfolder per class (or images directly inside).

    All images must be one size unless ``size`` (H, W) is given. Grey images stay grey
    unless the folder mixes grey and colour, in which case all become RGB. Files that are
    not images (by suffix) are skipped with a :class:`DataWarning` naming them (hidden
    files and folders silently); a file with an image suffix that cannot be read is an
    error naming it. See :func:`load_image` for 16-bit, palette and alpha images. ``limit``: read
    only the first that many images. What cannot fit in memory is refused before it is read.
    """
    folder = Path(folder)
    size = check_size(size)
    check_limit(limit)
    if not folder.is_dir():
        raise DataNotFoundError(f"expected a folder of images at {folder}, found nothing; check the path")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p))
    groups = [(d.name, d) for d in subdirs] if subdirs else [("all", folder)]
    paths, labels, skipped = [], [], []
    if subdirs:  # loose files beside class folders belong to no class
        skipped += [p for p in sorted(folder.iterdir()) if p.is_file() and not _is_hidden(p)]
    for label, (_, d) in enumerate(groups):
        for p in sorted(d.iterdir()):
            if _is_hidden(p):
                continue
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(label)
            else:  # another kind of file, or a folder inside a class folder
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
    c, h, w = image_shape(paths[0]) or (1, 1, 1)  # from the first image's header: nothing decoded yet
    h, w = size or (h, w)
    check_memory(len(paths) * c * h * w * 4, f"{len(paths)} images of {c}x{h}x{w} as float32",
                 "pass a smaller --size H,W or --limit N")
    arrays = [load_image(p, size) for p in paths]
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape[:2]
        odd = next((p, a) for p, a in zip(paths, arrays) if a.shape[:2] != first)
        raise DataError(f"expected images of one size in {folder}, found {len(shapes)} sizes "
                        f"({paths[0].relative_to(folder)} is {first[0]}x{first[1]}, {odd[0].relative_to(folder)} "
                        f"is {odd[1].shape[0]}x{odd[1].shape[1]}); pass --size H,W to resize them all")
    colour = any(a.ndim == 3 for a in arrays)
    stack = []
    for a in arrays:
        if colour and a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        stack.append(a if a.ndim == 3 else a[:, :, None])
    x = torch.from_numpy(np.stack(stack)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    return Dataset(x, torch.tensor(labels, dtype=torch.int64), [name for name, _ in groups])


def load_dataset(source: str | os.PathLike | None = None, split: str = "train",
                 limit: int | None = None, size: tuple[int, int] | int | None = None) -> Dataset:
    """Load whatever ``source`` names: an ``.npz`` file, a folder of images, a folder of
    Fashion-MNIST IDX files, or (None) Fashion-MNIST from the usual places."""
    check_limit(limit)
    if source is not None:
        p = Path(source)
        if p.is_file() and p.suffix != ".npz":
            raise DataError(f"expected --data to be a folder (Fashion-MNIST IDX files or images) or an .npz "
                            f"file, found the file {p}; pass its folder instead")
        if p.suffix == ".npz":
            return load_npz(p).subset(limit)
        if p.is_dir() and _find_file(p, FASHION_FILES[split][0]) is None:
            return load_image_folder(p, size=size, limit=limit)
    return load_fashion_mnist(split, path=source, limit=limit)


def has_test_split(source: str | os.PathLike | None) -> bool:
    """True when ``source`` is Fashion-MNIST (None, or a folder of its IDX files)."""
    if source is None:
        return True
    p = Path(source)
    return p.is_dir() and _find_file(p, FASHION_FILES["test"][0]) is not None
