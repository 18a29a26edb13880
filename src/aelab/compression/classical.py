"""The classical image codecs that rate-distortion measures, and their registry :data:`CODECS`.

Every codec turns the 8-bit originals (test images are k/255 exactly, so ``round(x * 255)``
recovers them) into real bytes and back; the rate is the mean number of bytes per image,
the distortion PSNR and SSIM per image then averaged (docs/protocols.md, ``aelab.metrics``).
Baselines are tiny classes sharing one runner, :mod:`aelab.compression.rd` (CompressAI's
``class JPEG(PillowCodec): fmt = "jpeg"``), registered in :data:`CODECS` by
``@register_codec(name)``:

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
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..errors import ConfigError, DataError
from ..optional import NeedsOptional
from ..registry import registrar
from .containers import avif_payload, jpeg_scan_span

CODECS: dict[str, type["ImageCodec"]] = {}
DEFAULT_METHODS = ("jpeg", "jpeg-scan", "webp", "avif", "avif-payload", "pca", "png", "xz")


register_codec = registrar(CODECS, "name")  # @register_codec(name): for :func:`aelab.compression.rd.rate_distortion`


class ImageCodec(NeedsOptional, BaseEstimator):
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

    def fit(self, x_train: np.ndarray | None = None) -> "ImageCodec":
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


class PillowCodec(ImageCodec):
    """One file per image with Pillow: ``Image.save(format=fmt, **options(param))``."""

    fmt: ClassVar[str] = ""

    def options(self, param) -> dict:
        return {"quality": int(param)}

    def compress(self, images: np.ndarray, param) -> list[bytes]:
        from PIL import Image  # heavy: Pillow, only when coding

        mode = _mode(images.shape[1])
        out = []
        for img in images:
            buf = io.BytesIO()
            a = img[0] if mode == "L" else np.moveaxis(img, 0, -1)
            Image.fromarray(np.ascontiguousarray(a), mode=mode).save(buf, format=self.fmt, **self.options(param))
            out.append(buf.getvalue())
        return out

    def decompress(self, blobs: list[bytes], param, shape: tuple) -> np.ndarray:
        from PIL import Image  # heavy: Pillow, only when coding

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


@register_codec("avif")
class AVIF(PillowCodec):
    fmt = "AVIF"
    label = "AVIF file"
    default_params = (0, 10, 20, 30, 40, 50, 60, 75, 80, 85, 90)
    requires = ("PIL.AvifImagePlugin", "Pillow >= 11.3 built with libavif")

    @classmethod
    def available(cls) -> bool:
        from PIL import features  # heavy: Pillow, only when asked
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
class XZ(ImageCodec):
    label = "xz of the whole set (lossless)"
    param_name = ""
    default_params = (None,)
    lossless = True
    counts = "one xz stream (preset 9e) of the raw bytes, divided by the number of images"

    def compress(self, images: np.ndarray, param) -> list[bytes]:
        import lzma  # optional: Python may be built without lzma
        return [lzma.compress(np.ascontiguousarray(images).tobytes(), preset=9 | lzma.PRESET_EXTREME)]

    def decompress(self, blobs: list[bytes], param, shape: tuple) -> np.ndarray:
        import lzma  # optional: Python may be built without lzma
        return np.frombuffer(lzma.decompress(blobs[0]), np.uint8).reshape(shape).copy()


# -- PCA with quantised, range-coded coefficients -----------------------------------------

PCA_MAGIC, PCA_VERSION = b"AEPC", 1
_PCA_HEADER = struct.Struct("<4sBIHf")  # magic, version, images, components, step: 15 bytes


@register_codec("pca")
class PCACodec(ImageCodec):
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
        from sklearn.decomposition import PCA  # heavy: scikit-learn's decomposition, only when fitting

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
        import constriction  # optional: pip install 'aelab[codec]'

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
        import constriction  # optional: pip install 'aelab[codec]'

        models, b = self._models(step)
        enc = constriction.stream.queue.RangeEncoder()
        for j, model in enumerate(models):  # component-major: all images' component j, then j + 1
            col = q[:, j].astype(np.int32)
            enc.encode(col + b if self.entropy_model == "empirical" else col, model)
        words = enc.get_compressed().astype("<u4")
        return _PCA_HEADER.pack(PCA_MAGIC, PCA_VERSION, len(q), len(models), step) + words.tobytes()

    def decode_symbols(self, data: bytes) -> tuple[np.ndarray, float]:
        import constriction  # optional: pip install 'aelab[codec]'

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


__all__ = ["CODECS", "DEFAULT_METHODS", "register_codec", "ImageCodec", "PillowCodec", "JPEG", "JPEGScan", "WebP",
           "AVIF", "AVIFPayload", "PNG", "XZ", "PCACodec", "PCALaplace"]
