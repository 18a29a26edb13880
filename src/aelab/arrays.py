"""What data is inside aelab: a :class:`Dataset` of float32 NCHW images in [0, 1] with labels,
the checks every image array passes (:func:`check_images`), and the memory they may take."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

try:  # a dependency; still optional here so that an install without it (--no-deps, a platform
    import psutil  # without a wheel) keeps working, with the /proc/meminfo reading below
except ImportError:  # pragma: no cover (psutil is installed with aelab)
    psutil = None

from .errors import ConfigError, DataError

# deflate cannot compress better than about 1032:1, so a compressed file of B bytes holds at
# most ~1032 * B bytes: a header promising more is refused before anything is decompressed.
_MAX_GZIP_RATIO = 1032


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
    """Bytes of memory available now: psutil's ``virtual_memory().available`` (Linux, macOS,
    Windows); without psutil, ``MemAvailable`` from /proc/meminfo, else the physical memory."""
    if psutil is not None:
        try:
            return int(psutil.virtual_memory().available)
        except (OSError, RuntimeError, AttributeError):  # an unsupported platform: read it below
            pass
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


def npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the header of the .npy file open at ``fh`` (version 1 or 2),
    read without the data: how every .npz member is sized before anything is allocated."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(fh)
