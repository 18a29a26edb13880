"""Rate-distortion: how many bytes per image each codec needs for a given quality (issue 8).

Every codec turns the 8-bit originals (test images are k/255 exactly, so ``round(x * 255)``
recovers them) into real bytes and back; the rate is the mean number of bytes per image,
the distortion PSNR and SSIM per image then averaged (PROTOCOLS.md, ``aelab.metrics``).
Baselines are tiny classes sharing one runner (CompressAI's ``class JPEG(PillowCodec):
fmt = "jpeg"``), registered in :data:`CODECS`:

- ``jpeg``: JPEG files from Pillow (libjpeg, baseline, ``optimize=True``: Huffman tables
  fitted to each image, the smallest files), quality sweep;
- ``jpeg-scan``: JPEG's entropy-coded segment alone (the bytes after the SOS marker
  segment up to EOI, found by walking the markers), standard Huffman tables so that the
  ~330 bytes of headers are the same for every image of a quality and the decoder adds
  them back: a real stream with the container stripped;
- ``webp``: lossy WebP files (libwebp, ``method=6``), quality sweep;
- ``avif``: AVIF files (libavif, 4:0:0 for grey images, speed 6, one thread), quality
  sweep; ``avif-payload``: the same files counting only the AV1 payload (the ``mdat``
  box's content, found by walking the ISOBMFF boxes; decoded from the whole file);
- ``pca``: principal components of the clean training images, every coefficient
  quantised with one step (``q = round(c / step)``), range coded with ``constriction``
  under a per-component categorical model (the histogram of the training codes at that
  step): one stream for all images plus a 15-byte header; ``pca-laplace`` uses a
  per-component quantised Laplace instead. The basis, the mean and the probability tables
  are fixed at training time, like a learned codec's weights, and are not counted;
- ``png``: lossless PNG files (``optimize=True``), the lossless reference; ``xz``: the whole
  test set's raw bytes in one xz stream (preset 9e), per image.

Bytes per image is the mean of the per-image file lengths (for the one-stream codecs, the
stream's length divided by the number of images). None of the rows count a per-image
framing (a length or end marker) needed to store many such files back to back.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .errors import ConfigError, DataError
from .optional import NeedsOptional
from .registry import registrar

CODECS: dict[str, type["Codec"]] = {}
DEFAULT_METHODS = ("jpeg", "jpeg-scan", "webp", "avif", "avif-payload", "pca", "png", "xz")
TARGETS = (50, 100, 200)           # bytes per image of the headline table
LEARNED = "aelab"                  # the key of the learned codec's rows


register_codec = registrar(CODECS, "name")  # @register_codec(name): for :func:`rate_distortion`


class Codec(NeedsOptional, BaseEstimator):
    """Images (uint8, (N, C, H, W)) -> a list of byte strings -> images, at one parameter.

    ``compress`` returns one byte string per image (or one for the whole batch); the rate
    is ``sum(counted_bytes(b)) / N``. ``encoding`` names what ``compress`` produces, so that
    two rows that count the same files differently (AVIF file and payload) encode once.
    """

    name: ClassVar[str] = "codec"
    label: ClassVar[str] = "codec"
    param_name: ClassVar[str] = "quality"
    default_params: ClassVar[tuple] = ()
    lossless: ClassVar[bool] = False
    counts: ClassVar[str] = "the whole file"
    needs_training: ClassVar[bool] = False

    def __init__(self, params=None):
        self.params = params

    def sweep(self) -> tuple:
        return tuple(self.default_params if self.params is None else self.params)

    def fit(self, x_train: np.ndarray | None = None) -> "Codec":
        return self

    def encoding(self, param) -> tuple:
        return (type(self).__name__, param)

    def compress(self, images: np.ndarray, param) -> list[bytes]:
        raise NotImplementedError

    def decompress(self, blobs: list[bytes], param, shape: tuple) -> np.ndarray:
        raise NotImplementedError

    def counted_bytes(self, blob: bytes) -> int:
        return len(blob)

    def describe(self) -> dict:
        return {"label": self.label, "param_name": self.param_name, "lossless": self.lossless, "counts": self.counts}

    def details(self, shape: tuple) -> dict:
        """Anything else worth recording about this codec on images of ``shape``."""
        return {}


def _mode(channels: int) -> str:
    if channels not in (1, 3):
        raise DataError(f"expected grey (1 channel) or RGB (3 channels) images, found {channels} channels")
    return "L" if channels == 1 else "RGB"


class PillowCodec(Codec):
    """One file per image with Pillow: ``Image.save(format=fmt, **options(param))``."""

    fmt: ClassVar[str] = ""

    def options(self, param) -> dict:
        return {"quality": int(param)}

    def compress(self, images: np.ndarray, param) -> list[bytes]:
        from PIL import Image

        mode = _mode(images.shape[1])
        out = []
        for img in images:
            buf = io.BytesIO()
            a = img[0] if mode == "L" else np.moveaxis(img, 0, -1)
            Image.fromarray(np.ascontiguousarray(a), mode=mode).save(buf, format=self.fmt, **self.options(param))
            out.append(buf.getvalue())
        return out

    def decompress(self, blobs: list[bytes], param, shape: tuple) -> np.ndarray:
        from PIL import Image

        n, c, h, w = shape
        mode = _mode(c)
        out = np.empty(shape, np.uint8)
        for i, b in enumerate(blobs):
            a = np.asarray(Image.open(io.BytesIO(b)).convert(mode))
            out[i] = a[None] if mode == "L" else np.moveaxis(a, -1, 0)
        return out


@register_codec("jpeg")
class JPEG(PillowCodec):
    fmt = "JPEG"
    label = "JPEG file"
    default_params = (1, 3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 75, 90)

    def options(self, param) -> dict:
        return {"quality": int(param), "optimize": True}


# -- JPEG markers (ITU-T T.81, B.1.1): FF xx, then a 2-byte big-endian length that counts
# itself, except the stand-alone markers SOI, EOI, TEM and RST0-7.
SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
_STANDALONE = {SOI, EOI, 0x01, *range(0xD0, 0xD8)}


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of each marker segment from SOI up to and including the
    first SOS (``start`` at its FF byte, ``end`` just past its length field's span)."""
    if data[:2] != b"\xff\xd8":
        raise DataError(f"expected a JPEG file (starting FF D8), found {data[:2].hex(' ') or 'nothing'}")
    out, i = [(SOI, 0, 2)], 2
    while True:
        if i + 2 > len(data) or data[i] != 0xFF:
            raise DataError(f"expected a JPEG marker at byte {i}, found "
                            f"{data[i:i + 2].hex(' ') or 'the end of the file'}; the file is damaged")
        while i + 1 < len(data) and data[i + 1] == 0xFF:  # fill bytes before a marker
            i += 1
        marker = data[i + 1]
        if marker in _STANDALONE:
            out.append((marker, i, i + 2))
            if marker == EOI:
                raise DataError("expected a scan (SOS marker) in the JPEG file, found EOI first")
            i += 2
            continue
        if i + 4 > len(data):
            raise DataError(f"expected a segment length at byte {i + 2}, found the end of the JPEG file")
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if end > len(data):
            raise DataError(f"JPEG segment FF {marker:02X} at byte {i} runs past the end of the file")
        out.append((marker, i, end))
        if marker == SOS:
            return out
        i = end


def jpeg_scan_span(data: bytes) -> tuple[int, int]:
    """``(start, end)`` of the entropy-coded segment of a baseline (one-scan) JPEG: from the
    end of the SOS segment to the first marker that is neither a stuffed FF 00 nor a
    restart marker, which must be EOI."""
    start = jpeg_segments(data)[-1][2]
    i = start
    while True:
        j = data.find(b"\xff", i)
        if j < 0 or j + 1 >= len(data):
            raise DataError("expected the JPEG scan to end with an EOI marker, found the end of the file")
        nxt = data[j + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffing or restart: still scan data
            i = j + 2
        elif nxt == 0xFF:                       # a fill byte before the next marker
            i = j + 1
        elif nxt == EOI:
            return start, j
        else:
            raise DataError(f"expected one scan then EOI (a baseline JPEG), found marker FF {nxt:02X} at byte {j}; "
                            "progressive JPEGs have several scans")


def jpeg_scan_data(data: bytes) -> bytes:
    """The entropy-coded segment of a baseline JPEG (without its headers and EOI)."""
    start, end = jpeg_scan_span(data)
    return data[start:end]


@register_codec("jpeg-scan")
class JPEGScan(JPEG):
    label = "JPEG scan data only"
    counts = "the entropy-coded segment (headers and EOI added back by the decoder)"

    def options(self, param) -> dict:
        return {"quality": int(param)}  # standard Huffman tables: the same headers for every image

    def header(self, param, shape: tuple) -> bytes:
        """The bytes before the scan, identical for every image of this shape and quality."""
        blank = np.zeros((1, *shape[1:]), np.uint8)
        data = PillowCodec.compress(self, blank, param)[0]
        return data[:jpeg_scan_span(data)[0]]

    def details(self, shape: tuple) -> dict:
        """The bytes left out per image at each quality: headers plus the 2-byte EOI."""
        return {"header_bytes": {str(q): len(self.header(q, shape)) + 2 for q in self.sweep()}}

    def compress(self, images: np.ndarray, param) -> list[bytes]:
        files = super().compress(images, param)
        head = self.header(param, images.shape)
        out = []
        for f in files:
            start, end = jpeg_scan_span(f)
            if f[:start] != head:
                raise DataError("expected the same JPEG headers for every image of one quality, found different "
                                "ones; this libjpeg adapts its tables, use the jpeg row instead")
            out.append(f[start:end])
        return out

    def decompress(self, blobs: list[bytes], param, shape: tuple) -> np.ndarray:
        head = self.header(param, shape)
        return super().decompress([head + b + b"\xff\xd9" for b in blobs], param, shape)


@register_codec("webp")
class WebP(PillowCodec):
    fmt = "WEBP"
    label = "WebP file"
    default_params = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90)

    def options(self, param) -> dict:
        return {"quality": int(param), "method": 6, "lossless": False}


def isobmff_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """``(type, payload_start, box_end)`` of each box in ``data[start:end]`` (ISO/IEC 14496-12
    4.2: a 32-bit size counting the header, the 4-character type, a 64-bit size when the
    first is 1, to the end of the file when it is 0)."""
    end = len(data) if end is None else end
    out, i = [], start
    while i < end:
        if i + 8 > end:
            raise DataError(f"expected an ISOBMFF box header at byte {i}, found {end - i} byte(s); the file is damaged")
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        head = 8
        if size == 1:
            if i + 16 > end:
                raise DataError(f"expected a 64-bit box size at byte {i + 8}, found the end of the file")
            size, head = struct.unpack(">Q", data[i + 8:i + 16])[0], 16
        elif size == 0:
            size = end - i
        if size < head or i + size > end:
            raise DataError(f"ISOBMFF box {kind!r} at byte {i} has size {size}, outside the file; the file is damaged")
        out.append((kind.decode("latin-1"), i + head, i + size))
        i += size
    return out


def avif_payload(data: bytes) -> bytes:
    """The AV1 payload of an AVIF file: the content of its ``mdat`` box(es)."""
    boxes = isobmff_boxes(data)
    if not boxes or boxes[0][0] != "ftyp":
        raise DataError("expected an AVIF file (starting with an ftyp box), found "
                        f"{boxes[0][0] if boxes else 'nothing'}")
    mdat = [data[s:e] for kind, s, e in boxes if kind == "mdat"]
    if not mdat:
        raise DataError("expected an mdat box in the AVIF file, found none; the file is damaged")
    return b"".join(mdat)


@register_codec("avif")
class AVIF(PillowCodec):
    fmt = "AVIF"
    label = "AVIF file"
    default_params = (0, 10, 20, 30, 40, 50, 60, 75)
    requires = ("PIL.AvifImagePlugin", "Pillow >= 11.3 built with libavif")

    @classmethod
    def available(cls) -> bool:
        from PIL import features
        return bool(features.check("avif"))

    def options(self, param) -> dict:
        return {"quality": int(param), "speed": 6, "max_threads": 1}

    def encoding(self, param) -> tuple:
        return ("AVIF", param)  # the payload row counts the same files


@register_codec("avif-payload")
class AVIFPayload(AVIF):
    label = "AVIF AV1 payload only"
    counts = "the mdat box's content (decoded from the whole file)"

    def counted_bytes(self, blob: bytes) -> int:
        return len(avif_payload(blob))


@register_codec("png")
class PNG(PillowCodec):
    fmt = "PNG"
    label = "PNG file (lossless)"
    param_name = ""
    default_params = (None,)
    lossless = True

    def options(self, param) -> dict:
        return {"optimize": True}


@register_codec("xz")
class XZ(Codec):
    label = "xz of the whole set (lossless)"
    param_name = ""
    default_params = (None,)
    lossless = True
    counts = "one xz stream (preset 9e) of the raw bytes, divided by the number of images"

    def compress(self, images: np.ndarray, param) -> list[bytes]:
        import lzma
        return [lzma.compress(np.ascontiguousarray(images).tobytes(), preset=9 | lzma.PRESET_EXTREME)]

    def decompress(self, blobs: list[bytes], param, shape: tuple) -> np.ndarray:
        import lzma
        return np.frombuffer(lzma.decompress(blobs[0]), np.uint8).reshape(shape).copy()


# -- PCA with quantised, range-coded coefficients -----------------------------------------

PCA_MAGIC, PCA_VERSION = b"AEPC", 1
_PCA_HEADER = struct.Struct("<4sBIHf")  # magic, version, images, components, step: 15 bytes


@register_codec("pca")
class PCACodec(Codec):
    """Transform coding with the Karhunen-Loeve transform: ``c = W (x - mu)`` (every principal
    component of the clean training images, orthonormal ``W``), ``q = round(c / step)``,
    ``x_hat = mu + W^T (q step)``; the integers ``q`` are range coded (``constriction``)
    component by component for the whole batch, under a categorical model per component
    fitted on the training codes at that step (``entropy_model="empirical"``) or a quantised
    Laplace with the training codes' mean absolute value as scale (``"laplace"``).

    Every symbol is in ``[-B, B]`` with ``B = ceil(sqrt(D) / step) + 1`` (pixels in [0, 1]
    put ``|c| <= ||x - mu|| <= sqrt(D)``), so any image can be coded; a symbol unseen in
    training costs at most ~24 bits. Stream: a 15-byte header (``AEPC``, version, image
    count, components, step) then the range coder's 32-bit words.
    """

    label = "PCA + range coder"
    param_name = "step"
    default_params = (1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.08, 0.06, 0.045)
    requires = ("constriction", "pip install 'aelab[codec]' (constriction)")
    needs_training = True
    entropy_model: ClassVar[str] = "empirical"
    counts = "one range-coded stream with a 15-byte header, divided by the number of images; model not counted"

    def fit(self, x_train: np.ndarray | None = None) -> "PCACodec":
        from sklearn.decomposition import PCA

        if x_train is None or len(x_train) < 2:
            raise ConfigError(f"{self.label}: expected training images to fit the basis and the entropy model, "
                              "found none; pass train_images")
        self.shape_ = tuple(x_train.shape[1:])
        xt = x_train.reshape(len(x_train), -1).astype(np.float64) / 255.0
        pca = PCA(svd_solver="covariance_eigh" if len(xt) > xt.shape[1] else "full").fit(xt)
        self.mean_ = pca.mean_                       # (D,)
        self.components_ = pca.components_           # (K, D), orthonormal rows
        codes = (xt - self.mean_) @ self.components_.T  # (N_train, K)
        self.tables_ = {float(s): self._table(codes, float(s)) for s in self.sweep()}
        return self

    def _bound(self, step: float) -> int:
        return int(math.ceil(math.sqrt(len(self.mean_)) / step)) + 1

    def _table(self, codes: np.ndarray, step: float):
        q = np.rint(codes / step).astype(np.int64)
        b = self._bound(step)
        if self.entropy_model == "laplace":
            return np.maximum(np.abs(codes / step).mean(0), 1e-3)  # (K,) Laplace scales in units of step
        counts = np.stack([np.bincount(col + b, minlength=2 * b + 1) for col in q.T]).astype(np.float64)
        return counts + 0.5 / (2 * b + 1)  # (K, 2B+1): half a count spread over the whole alphabet

    def _models(self, step: float):
        import constriction

        check_is_fitted(self, "tables_")
        if float(step) not in self.tables_:
            raise ConfigError(f"{self.label}: no entropy model for step {step:g}; fitted steps are "
                              f"{sorted(self.tables_)}; pass it in params before fit")
        table, b = self.tables_[float(step)], self._bound(float(step))
        family = constriction.stream.model
        if self.entropy_model == "laplace":
            return [family.QuantizedLaplace(-b, b, 0.0, float(s)) for s in table], b
        return [family.Categorical(p, perfect=False) for p in table], b

    def quantise(self, images: np.ndarray, step: float) -> np.ndarray:
        """The integer coefficients ``round(W (x - mu) / step)`` of uint8 images, (N, K) int32."""
        check_is_fitted(self, "components_")
        if tuple(images.shape[1:]) != self.shape_:
            raise DataError(f"expected images of shape {self.shape_}, found {tuple(images.shape[1:])}; "
                            "fit the PCA codec on images of the test images' shape")
        x = images.reshape(len(images), -1).astype(np.float64) / 255.0
        return np.rint((x - self.mean_) @ self.components_.T / step).astype(np.int32)

    def dequantise(self, q: np.ndarray, step: float) -> np.ndarray:
        x = self.mean_ + (q.astype(np.float64) * step) @ self.components_
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8).reshape(len(q), *self.shape_)

    def encode_symbols(self, q: np.ndarray, step: float) -> bytes:
        import constriction

        models, b = self._models(step)
        enc = constriction.stream.queue.RangeEncoder()
        for j, model in enumerate(models):  # component-major: all images' component j, then j + 1
            col = q[:, j].astype(np.int32)
            enc.encode(col + b if self.entropy_model == "empirical" else col, model)
        words = enc.get_compressed().astype("<u4")
        return _PCA_HEADER.pack(PCA_MAGIC, PCA_VERSION, len(q), len(models), step) + words.tobytes()

    def decode_symbols(self, data: bytes) -> tuple[np.ndarray, float]:
        import constriction

        if len(data) < _PCA_HEADER.size:
            raise DataError(f"expected a PCA stream of at least {_PCA_HEADER.size} bytes, found {len(data)}")
        magic, version, n, k, step = _PCA_HEADER.unpack_from(data)
        if magic != PCA_MAGIC or version != PCA_VERSION:
            raise DataError(f"expected a PCA stream ({PCA_MAGIC!r} version {PCA_VERSION}), found {magic!r} "
                            f"version {version}")
        step = float(np.float32(step))
        key = min(self.tables_, key=lambda s: abs(s - step))  # the header holds the step as float32
        if abs(key - step) > 1e-6 * max(1.0, key) or k != len(self.tables_[key]):
            raise DataError(f"expected a stream of this PCA codec, found step {step:g} and {k} components; "
                            "decode with the codec that wrote it")
        models, b = self._models(key)
        words = np.frombuffer(data[_PCA_HEADER.size:], "<u4").astype(np.uint32)
        dec = constriction.stream.queue.RangeDecoder(words)
        q = np.empty((n, k), np.int32)
        for j, model in enumerate(models):
            col = dec.decode(model, n)
            q[:, j] = col - b if self.entropy_model == "empirical" else col
        return q, key

    def compress(self, images: np.ndarray, param) -> list[bytes]:
        return [self.encode_symbols(self.quantise(images, float(param)), float(param))]

    def decompress(self, blobs: list[bytes], param, shape: tuple) -> np.ndarray:
        q, step = self.decode_symbols(blobs[0])
        return self.dequantise(q, step)


@register_codec("pca-laplace")
class PCALaplace(PCACodec):
    label = "PCA + range coder (Laplace model)"
    entropy_model = "laplace"


# -- the runner ---------------------------------------------------------------------------

def to_uint8(images, name: str = "images") -> np.ndarray:
    """Float images k/255 in [0, 1] (N, C, H, W) -> the uint8 originals; refuse anything else."""
    from .data import check_images

    x = check_images(images, name).numpy()
    u = np.rint(x.astype(np.float64) * 255.0)
    worst = float(np.abs(u / 255.0 - x).max())
    if worst > 1e-6:
        raise DataError(f"expected 8-bit {name} (every value k/255), found values up to {worst:.3g} away from that; "
                        "rate-distortion compares codecs of 8-bit images, quantise with round(x * 255) / 255")
    return u.astype(np.uint8)


def _quality(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from .metrics import psnr_per_image, ssim_per_image

    p = torch.cat([psnr_per_image(x[i:i + 2000], x_hat[i:i + 2000]) for i in range(0, len(x), 2000)])
    s = torch.cat([ssim_per_image(x[i:i + 2000], x_hat[i:i + 2000]) for i in range(0, len(x), 2000)])
    return p.numpy(), s.numpy()


def measure(codec: Codec, images_u8: np.ndarray, param, _cache: dict | None = None) -> dict:
    """One point: compress, decompress, count the bytes, score the decoded images."""
    key = codec.encoding(param)
    if _cache is not None and key in _cache:
        blobs, lossless, p, s, secs = _cache[key]
    else:
        t = time.perf_counter()
        blobs = codec.compress(images_u8, param)
        decoded = codec.decompress(blobs, param, images_u8.shape)
        secs = time.perf_counter() - t
        if decoded.shape != images_u8.shape or decoded.dtype != np.uint8:
            raise DataError(f"{codec.label}: expected decoded uint8 images of shape {images_u8.shape}, found "
                            f"{decoded.dtype} {decoded.shape}")
        lossless = bool(np.array_equal(decoded, images_u8))
        x = torch.from_numpy(images_u8).double() / 255.0
        p, s = _quality(x, torch.from_numpy(decoded).double() / 255.0)
        if _cache is not None:
            _cache[key] = (blobs, lossless, p, s, secs)
    n = len(images_u8)
    point = {"param": param, "bytes_per_image": round(sum(codec.counted_bytes(b) for b in blobs) / n, 3),
             "psnr": None if lossless else round(float(p.mean()), 4), "ssim": round(float(s.mean()), 5),
             "lossless": lossless, "files": len(blobs), "seconds": round(secs, 2)}
    if len(blobs) == n:
        sizes = [codec.counted_bytes(b) for b in blobs]
        point["min_bytes"], point["max_bytes"] = min(sizes), max(sizes)
    return point


def _find_lambda(config: dict):
    """A learned codec's rate-distortion weight from its config (whatever the key's spelling)."""
    stack = [config]
    while stack:
        d = stack.pop()
        for k, v in d.items():
            if k in ("lmbda", "lambda", "lambda_", "rd_lambda") and isinstance(v, (int, float)):
                return v
            if isinstance(v, dict):
                stack.append(v)
    return None


def learned_points(runs, images, progress: bool = True) -> list[dict]:
    """One point per codec run directory (aelab's learned codec, :mod:`aelab.codec`)."""
    from . import runs as runs_mod
    from .codec import load_codec, rd_point

    points = []
    for run in runs:
        t = time.perf_counter()
        model = load_codec(run)
        r = rd_point(model, images)
        config = Path(run) / runs_mod.CONFIG
        lam = _find_lambda(runs_mod.read_json(config)) if config.is_file() else None
        points.append({"param": lam if lam is not None else Path(run).name, "run": str(run),
                       "bytes_per_image": round(float(r["bytes_per_image"]), 3), "psnr": round(float(r["psnr"]), 4),
                       "ssim": round(float(r["ssim"]), 5), "lossless": False, "files": 1,
                       "stream_bytes": int(r["stream_bytes"]), "seconds": round(time.perf_counter() - t, 2)})
        if progress:
            print(f"aelab rd: {run}: {points[-1]['bytes_per_image']:.1f} B/image, {points[-1]['psnr']:.2f} dB",
                  file=sys.stderr, flush=True)
    return sorted(points, key=lambda p: p["bytes_per_image"])


def rate_distortion(images, methods=DEFAULT_METHODS, runs=(), train_images=None, params: dict | None = None,
                    progress: bool = True) -> dict:
    """The rate-distortion points of each method on ``images`` (float NCHW, k/255 in [0, 1]).

    ``methods``: codec names of :data:`CODECS` (those not installed are skipped and listed);
    ``runs``: run directories of aelab's learned codec, one point each (the ``"aelab"``
    row); ``train_images``: clean training images for the codecs that learn (PCA);
    ``params``: ``{method: [parameter, ...]}`` to replace a default sweep. Returns
    ``{"test_images", "methods": {name: {label, param_name, lossless, counts, points:
    [{param, bytes_per_image, psnr, ssim, ...}]}}, "skipped"}``; a lossless point has
    ``psnr`` None (infinite).
    """
    params = dict(params or {})
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in CODECS]
    if unknown:
        import difflib
        close = difflib.get_close_matches(unknown[0], list(CODECS), n=1)
        raise ConfigError(f"unknown rate-distortion method {unknown[0]!r}; "
                          + (f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(CODECS)}"))
    u = to_uint8(images, "test images")
    train_u8 = None
    result = {"test_images": len(u), "image_shape": list(u.shape[1:]), "methods": {}, "skipped": {}}
    todo = []
    for m in methods:
        cls = CODECS[m]
        if not cls.available():
            result["skipped"][m] = f"needs {cls.requires[1] if cls.requires else 'a missing library'}"
            continue
        codec = cls(params.get(m))
        if cls.needs_training:
            if train_images is None:
                raise ConfigError(f"{cls.label}: expected training images to fit on, found none; "
                                  "pass train_images (the CLI loads the training split)")
            if train_u8 is None:
                train_u8 = to_uint8(train_images, "training images")
            codec.fit(train_u8)
            result["train_images"] = len(train_u8)
        todo += [(m, codec, p) for p in codec.sweep()]
    from tqdm.auto import tqdm

    cache: dict = {}
    bar = tqdm(todo, desc="rate-distortion", unit="point", file=sys.stderr, dynamic_ncols=True, disable=not progress)
    for m, codec, p in bar:
        bar.set_postfix_str(f"{m} {codec.param_name} {p}" if codec.param_name else m)
        entry = result["methods"].setdefault(m, {**codec.describe(), **codec.details(u.shape), "points": []})
        entry["points"].append(measure(codec, u, p, cache))
    bar.close()
    runs = list(runs or [])
    if runs:
        x = torch.from_numpy(u).float() / 255.0
        result["methods"][LEARNED] = {"label": "aelab codec (learned)", "param_name": "lambda", "lossless": False,
                                      "counts": "the whole stream, header included", "points":
                                      learned_points(runs, x, progress)}
    return result


# -- reading the curves -------------------------------------------------------------------

def pareto_front(points: list[dict], key: str = "psnr") -> list[dict]:
    """The points no other point beats with as few bytes or fewer, by bytes per image."""
    front: list[dict] = []
    for p in sorted(points, key=lambda p: (p["bytes_per_image"], -p[key])):
        if not front or p[key] > front[-1][key]:  # at equal bytes the best comes first
            front.append(p)
    return front


def at_bytes(points: list[dict], target: float, key: str = "psnr") -> dict:
    """``key`` at ``target`` bytes per image, interpolated linearly in log(bytes) between the
    two nearest points of the curve's Pareto frontier: ``{"value": v}``, ``{"impossible":
    smallest}`` when the smallest point is bigger than the target, ``{"beyond": largest}``
    past the sweep. A point that another point beats with fewer bytes (e.g. a less trained
    codec run) is dropped, as on an operational rate-distortion curve: at that budget the
    smaller, better point is what one would use, so between the frontier's last point and
    the largest measured one the value is that last point's."""
    pts = sorted((p for p in points if p.get(key) is not None), key=lambda p: p["bytes_per_image"])
    if not pts:
        return {"none": True}
    smallest, largest = pts[0]["bytes_per_image"], pts[-1]["bytes_per_image"]
    if target < smallest - 1e-9:
        return {"impossible": float(smallest)}
    if target > largest + 1e-9:
        return {"beyond": float(largest)}
    front = pareto_front(pts, key)  # equal byte counts keep the best value
    ub = np.array([p["bytes_per_image"] for p in front], dtype=np.float64)
    best = np.array([p[key] for p in front], dtype=np.float64)
    if target > ub[-1]:  # past the frontier but inside the sweep: the frontier's best needs fewer bytes
        return {"value": float(best[-1])}
    return {"value": float(np.interp(math.log(target), np.log(ub), best))}


def _cell(r: dict, digits: int = 1, unit: str = "") -> str:
    if "value" in r:
        return f"{r['value']:.{digits}f}{unit}"
    if "impossible" in r:
        return f"impossible (smallest {r['impossible']:.0f} B)"
    if "beyond" in r:
        return f"- (largest {r['beyond']:.0f} B)"
    return "-"


def summary_rows(result: dict, targets=TARGETS, key: str = "psnr") -> list[list[str]]:
    """The headline table: one row per method, ``key`` at each target (PSNR in dB); a
    lossless method shows its bytes per image instead."""
    rows = []
    for m, e in result["methods"].items():
        if e.get("lossless") or all(p.get("lossless") for p in e["points"]):
            cells = [f"lossless at {e['points'][0]['bytes_per_image']:.0f} B"] + [""] * (len(targets) - 1)
        else:
            digits, unit = (1, " dB") if key == "psnr" else (3, "")
            cells = [_cell(at_bytes(e["points"], t, key), digits, unit) for t in targets]
        rows.append([e["label"]] + cells)
    return rows


def points_rows(result: dict) -> list[list[str]]:
    rows = []
    for m, e in result["methods"].items():
        for p in e["points"]:
            param = "" if p["param"] is None else f"{e['param_name']} {p['param']}"
            if p.get("run"):  # learned codecs: several runs may share a lambda
                param = f"{Path(p['run']).name} ({param})" if param else Path(p["run"]).name
            rows.append([e["label"], param, f"{p['bytes_per_image']:.1f}",
                         "inf (lossless)" if p["psnr"] is None else f"{p['psnr']:.2f}", f"{p['ssim']:.4f}"])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def rd_tables(result: dict, targets=TARGETS) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(caption, header, rows)`` for Markdown and the report."""
    n = result["test_images"]
    head = ["bytes per image"] + [f"~{t}" for t in targets]
    return [
        (f"PSNR (dB) at equal bytes per image, {n:,} test images (interpolated in log bytes between measured points)",
         ["method (PSNR)"] + head[1:], summary_rows(result, targets, "psnr")),
        ("SSIM at equal bytes per image", ["method (SSIM)"] + head[1:], summary_rows(result, targets, "ssim")),
        ("Every measured point", ["method", "parameter", "bytes per image", "PSNR (dB)", "SSIM"], points_rows(result)),
    ]


def headline_markdown(result: dict) -> str:
    """The PSNR-at-equal-bytes table with its caption, as Markdown (what the CLI prints)."""
    caption, header, rows = rd_tables(result)[0]
    return caption + "\n\n" + markdown_table(header, rows)


def rd_markdown(result: dict) -> str:
    out = ["# Rate-distortion", "",
           f"{result['test_images']:,} test images; bytes per image = mean file length (one-stream codecs: stream "
           "length / images); PSNR and SSIM per image then averaged (PROTOCOLS.md)."]
    for caption, header, rows in rd_tables(result):
        out += ["", f"## {caption}", "", markdown_table(header, rows)]
    notes = [f"- {e['label']}: counts {e['counts']}." for e in result["methods"].values()]
    out += ["", "## What is counted", ""] + notes
    if result.get("skipped"):
        out += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items())]
    if result.get("command"):
        out += ["", "Command: `" + result["command"] + "`"]
    return "\n".join(out) + "\n"


def rd_figures(result: dict, figures_dir) -> list[Path]:
    """``rd_psnr.png`` and ``rd_ssim.png``: bytes per image (log) against quality, one line per
    method; lossless methods as dotted vertical lines at their size."""
    from .plots import _plt, _save

    plt = _plt()
    paths = []
    for key, unit in (("psnr", "PSNR (dB)"), ("ssim", "SSIM")):
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        markers = "osD^v<>ph*"
        for i, (m, e) in enumerate(result["methods"].items()):
            pts = sorted(e["points"], key=lambda p: p["bytes_per_image"])
            if all(p.get("lossless") for p in pts):
                ax.axvline(pts[0]["bytes_per_image"], ls=":", color=f"C{i % 10}",
                           label=f"{e['label']}: {pts[0]['bytes_per_image']:.0f} B")
                continue
            pts = [p for p in pts if p.get(key) is not None]
            front = pareto_front(pts, key)  # the line; points another beats with fewer bytes: faint marks
            ax.plot([p["bytes_per_image"] for p in front], [p[key] for p in front], marker=markers[i % len(markers)],
                    ms=4, lw=2.2 if m == LEARNED else 1.4, color=f"C{i % 10}", label=e["label"])
            rest = [p for p in pts if not any(p is q for q in front)]
            if rest:
                ax.plot([p["bytes_per_image"] for p in rest], [p[key] for p in rest], ls="none",
                        marker=markers[i % len(markers)], ms=4, mfc="none", alpha=0.6, color=f"C{i % 10}")
        for t in TARGETS:
            ax.axvline(t, color="0.85", lw=0.8, zorder=0)
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ticks = [t for t in (5, 10, 20, 50, 100, 200, 500, 1000, 2000) if lo <= t <= hi]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # no "3 x 10^2" labels between the round numbers
        ax.set_xlabel("bytes per image (log scale)")
        ax.set_ylabel(unit)
        ax.set_title(f"Rate-distortion on {result['test_images']:,} test images")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        paths.append(_save(fig, Path(figures_dir) / f"rd_{key}.png"))
    return paths


def _same_images(old: dict, new: dict) -> bool:
    return all(old.get(k) == new.get(k) for k in ("test_images", "image_shape", "data", "limit"))


def rd(out, runs=(), methods=DEFAULT_METHODS, limit: int | None = None, data=None, train_limit: int | None = None,
       params: dict | None = None, update: bool = False, threads: int | None = 1, progress: bool = True,
       command: str | None = None) -> dict:
    """Measure the methods (and the learned codec runs) on the test images; write
    ``out/rd.json``, ``out/rd.md``, ``out/figures/rd_psnr.png``, ``rd_ssim.png`` and, when
    ``out`` is a run directory, its report. ``update`` keeps the other methods of an
    existing ``rd.json`` measured on the same images (to add a row without redoing all)."""
    from . import runs as runs_mod
    from .data import load_dataset

    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods and not runs:
        raise ConfigError("expected at least one method or codec run to measure, found none; "
                          "pass --methods jpeg,webp,... or --runs DIR")
    test = load_dataset(data, "test", limit=limit)
    train = None
    if any(m in CODECS and CODECS[m].needs_training for m in methods):
        train = load_dataset(data, "train", limit=train_limit).x
    t = time.perf_counter()
    result = rate_distortion(test.x, methods=methods, runs=runs, train_images=train, params=params, progress=progress)
    result.update({"data": None if data is None else str(data), "limit": limit,
                   "seconds": round(time.perf_counter() - t, 1), "command": command})
    path = out / "rd.json"
    if update and path.exists():
        old = runs_mod.read_json(path)
        if not _same_images(old, result):
            raise ConfigError(f"{path}: measured on other images ({old.get('test_images')} images, limit "
                              f"{old.get('limit')}, data {old.get('data')}); drop --update or match --limit/--data")
        merged = {k: v for k, v in old.get("methods", {}).items() if k not in result["methods"]}
        merged.update(result["methods"])
        order = [*DEFAULT_METHODS, *CODECS, LEARNED]  # the usual row order, whatever order they were measured in
        result["methods"] = dict(sorted(merged.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
        result["commands"] = [c for c in [*old.get("commands", [old.get("command")]), command] if c]
        result["skipped"] = {**old.get("skipped", {}), **result["skipped"]}
        for k in result["methods"]:
            result["skipped"].pop(k, None)
    runs_mod.write_json(path, result)
    runs_mod.atomic_write_text(out / "rd.md", rd_markdown(result))
    rd_figures(result, out / "figures")
    from .report import write_report
    write_report(out, command=command)
    return result
