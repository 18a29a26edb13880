"""The learned codec's byte stream (``.ael``, :mod:`aelab.models.codec`): images -> bytes -> images.

``compress(model, images)`` encodes the images, rounds the latents to integers and
range-codes them, channel by channel, under the model's learned density with
``constriction`` (a range coder on NumPy arrays; ``pip install 'aelab[codec]'``).
``decompress(data, model)`` inverts it and decodes the integer latents with the
synthesis transform. The stream (all integers big-endian)::

    "AEL"  version (1 byte)  model id (8 bytes)            12 bytes
    N  C H W  rank  latent dims ...                          unsigned LEB128 varints
    CRC-32 of the header above and the payload (4 bytes)
    payload: the range coder's 32-bit words (little-endian), to the end of the stream

The model id is the first 8 bytes of SHA-256 over the model's config (canonical JSON) and
weights, so a stream decodes only with the model that wrote it. Integer latents are exact:
each channel codes the symbols lo..hi of its density (tails of mass < 2^-24 cut off) plus
an escape symbol; an escaped latent follows after all channels as a side bit (above hi /
below lo) and its distance (16 bits, uniform). The probability tables are integers
(multiples of 2^-40) computed once from the density when the codec is finalised (at the
end of training) and stored with its weights; compress and decompress only read them, so
a stream decodes on another machine, thread count or GPU. Every header field is checked
against hard limits and the payload's length before anything is allocated. The decoder runs in fixed chunks of :data:`CHUNK` images, in float32 on
the CPU, so ``decompress(compress(model, x), model)`` equals :func:`reconstruct` (model's
own decode of the rounded latents) bit for bit on the same machine and library versions.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib

import numpy as np
import torch

from .. import runs
from ..data import check_images
from ..errors import ConfigError, DataError
from ..metrics import psnr, ssim
from ..models.codec import TABLE_GRID, LearnedCodec
from ..models.context import scale_table
from .refine import refine_latents

MAGIC = b"AEL"
VERSION = 2                 # 2: the checksum covers the header too; integer tables stored with the model
MAX_REFINE = 10000          # the encoder's search: at most this many steps an image
CHUNK = 256                 # images per encode/decode call: fixed, so results never depend on N
_ESCAPE_BYTES = 2           # an escaped latent's distance beyond the table, in bytes
GAUSS_RADIUS = 2048         # a context codec's Gaussians code -RADIUS..RADIUS around round(mean), then escapes
SCALES = scale_table()      # its Gaussians' scales, by index
# hard limits on what a header may claim, checked before anything is allocated
MAX_IMAGES = 1_000_000      # images in one stream
MAX_SIDE = 4096             # each dimension of the image and latent shapes
MAX_VALUES = 2 ** 26        # latent values in one stream (images x latent size): 512 MB as int64


def _constriction():
    try:
        import constriction  # optional: pip install 'aelab[codec]'
    except ImportError:
        raise ConfigError("the codec needs the constriction range coder, found it missing; "
                          "install it with pip install 'aelab[codec]'") from None
    return constriction


def _check_codec(model):
    if not isinstance(model, LearnedCodec):
        raise ConfigError(f"expected a model of kind 'codec', found kind {getattr(model, 'kind', type(model).__name__)!r}; "
                          "train one with `aelab train --kind codec --net gdn --lambda 0.01`")
    return model


def model_id(model) -> bytes:
    """8 bytes identifying the model: SHA-256 of its config (canonical JSON) and weights."""
    h = hashlib.sha256(json.dumps(model.config(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.digest()[:8]


# -- tables ---------------------------------------------------------------------------------

def tables(model) -> list[tuple[int, np.ndarray]]:
    """Per density: (lo, probabilities of lo..hi then the escape symbol), float64.

    Read from the integer tables stored with the model (:meth:`LearnedCodec.finalise`): each
    probability is an exact int64 count / 2^40, the same on every machine."""
    return [(lo, counts.numpy().astype(np.float64) / TABLE_GRID) for lo, counts in model.coding_tables()]


def _per_density(model, n: int, latent_shape) -> int:
    """How many values each table codes in a stream of ``n`` images (the layout of ``by_density``)."""
    return n * model.by_density(torch.zeros((1,) + tuple(latent_shape))).shape[1]


def _min_payload_bytes(model, n: int) -> float:
    """The fewest bytes a stream of ``n`` images can take: each coded symbol costs at least
    -log2 of its density's largest probability."""
    bits = sum(-np.log2(p.max()) for _, p in tables(model)) * _per_density(model, n, model.code_shape)
    return bits / 8


# -- latents ------------------------------------------------------------------------------

def _run_chunks(fn, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([fn(x[i:i + CHUNK].contiguous()) for i in range(0, len(x), CHUNK)])


def latents(model, images: torch.Tensor, refine: int = 0, progress=None) -> torch.Tensor:
    """The integer latents round(encode(x)) (as float32, clamped as the model quantises), in chunks;
    with ``refine`` > 0, each image's searched for that many steps (:mod:`.refine`), and
    ``progress(done, total)`` (if given) called after each chunk of CHUNK images."""
    model = _check_codec(model)
    refine = _check_refine(refine)
    with _eval(model):
        x = images.float().cpu()
        if not refine:
            return _run_chunks(lambda b: model.quantize(model.encode(b)), x)
        out = []
        for i in range(0, len(x), CHUNK):
            out.append(refine_latents(model, x[i:i + CHUNK].contiguous(), refine, seed=i // CHUNK))
            if progress is not None:
                progress(min(i + CHUNK, len(x)), len(x))
        return torch.cat(out)


def _check_refine(refine) -> int:
    if isinstance(refine, bool) or not isinstance(refine, int) or not 0 <= refine <= MAX_REFINE:
        raise ConfigError(f"expected refine a whole number of steps from 0 to {MAX_REFINE}, found {refine!r}; "
                          "e.g. --refine 30 (0: the encoder's latents as they are)")
    return refine


def decode_latents(model, y_hat: torch.Tensor) -> torch.Tensor:
    """decode(y_hat) in fixed chunks of CHUNK images, float32 on the CPU."""
    model = _check_codec(model)
    with _eval(model):
        return _run_chunks(model.decode, y_hat.float().cpu()).contiguous()


def reconstruct(model, images: torch.Tensor) -> torch.Tensor:
    """What decompress(compress(model, images), model) gives, without the bytes."""
    return decode_latents(model, latents(model, images))


class _eval:
    """The model in eval mode on the CPU for the block; its mode and device are restored."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        p = next(self.model.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.training = self.model.training
        self.model.eval().cpu()

    def __exit__(self, *exc):
        self.model.train(self.training).to(self.device)
        return False


# -- the stream ---------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DataError("the stream ends inside its header (truncated or not an aelab stream); "
                            "compress the images again")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _encode_tabled(c, encoder, tabs, by_density: np.ndarray) -> None:
    """Values (D, M) under the D integer tables: the symbols density by density, then the
    escapes in density order: side (0 = above hi, 1 = below lo), then the distance in bytes."""
    escaped = []
    for (lo, probs), values in zip(tabs, by_density):
        esc = len(probs) - 1
        symbols = values - lo
        outside = (symbols < 0) | (symbols >= esc)
        escaped.append(values[outside])
        symbols = np.where(outside, esc, symbols).astype(np.int32)
        encoder.encode(symbols, c.stream.model.Categorical(probs, perfect=False))
    sides, dists = [], []
    for (lo, probs), values in zip(tabs, escaped):
        hi = lo + len(probs) - 2
        sides.append((values < lo).astype(np.int32))
        dists.append(np.where(values < lo, lo - 1 - values, values - hi - 1))
    if sides and sum(len(s) for s in sides):
        side, dist = np.concatenate(sides), np.concatenate(dists)
        if dist.max() >= 256 ** _ESCAPE_BYTES:
            raise DataError(f"a latent lies {int(dist.max())} beyond its table, more than the stream can hold; "
                            "the model is broken (retrain it)")
        encoder.encode(side, c.stream.model.Uniform(2))
        _encode_distance(c, encoder, dist)


def _encode_distance(c, encoder, dist: np.ndarray) -> None:
    for k in reversed(range(_ESCAPE_BYTES)):
        encoder.encode(((dist >> (8 * k)) & 0xFF).astype(np.int32), c.stream.model.Uniform(256))


def _decode_distance(c, decoder, count: int) -> np.ndarray:
    dist = np.zeros(count, np.int64)
    for _ in range(_ESCAPE_BYTES):
        dist = (dist << 8) | decoder.decode(c.stream.model.Uniform(256), count).astype(np.int64)
    return dist


def _decode_tabled(c, decoder, tabs, count: int) -> list[np.ndarray]:
    """The inverse of :func:`_encode_tabled`: ``count`` values per table."""
    values, escapes = [], []
    for lo, probs in tabs:
        symbols = decoder.decode(c.stream.model.Categorical(probs, perfect=False), count).astype(np.int64)
        escapes.append(symbols == len(probs) - 1)
        values.append(symbols + lo)
    total = int(sum(int(e.sum()) for e in escapes))
    if total:
        side = decoder.decode(c.stream.model.Uniform(2), total).astype(np.int64)
        dist = _decode_distance(c, decoder, total)
        k = 0
        for (lo, probs), v, esc in zip(tabs, values, escapes):
            m = int(esc.sum())
            if m:
                hi = lo + len(probs) - 2
                s, d = side[k:k + m], dist[k:k + m]
                v[esc] = np.where(s == 1, lo - 1 - d, hi + 1 + d)
                k += m
    return values


def _gaussian_args(model, y_hat: torch.Tensor, k: int):
    """Slice k's integer centres round(mu), and the Gaussians' offsets and scales, flat (exact: see
    :meth:`aelab.models.context.ChannelContext.exact`)."""
    parts = [model.context.exact(y_hat[i:i + CHUNK], k) for i in range(0, len(y_hat), CHUNK)]  # per image: exact
    mu, index = torch.cat([m for m, _ in parts]), torch.cat([i for _, i in parts])
    centre = torch.round(mu)
    return centre.flatten().numpy(), (mu - centre).flatten().numpy(), np.asarray(SCALES)[index.flatten().numpy()]


def _encode_gaussian(c, encoder, model, y_hat: torch.Tensor, k: int) -> None:
    """Slice k >= 1 of a context codec: y_hat - round(mu) under the Gaussian of offset mu - round(mu)
    on -GAUSS_RADIUS..GAUSS_RADIUS (the two ends also mean "this far or further": the rest follows)."""
    a, b = model.context.bounds[k]
    centre, offset, scale = _gaussian_args(model, y_hat, k)
    d = y_hat[:, a:b].double().flatten().numpy() - centre
    symbols = np.clip(d, -GAUSS_RADIUS, GAUSS_RADIUS).astype(np.int32)
    encoder.encode(symbols, c.stream.model.QuantizedGaussian(-GAUSS_RADIUS, GAUSS_RADIUS), offset, scale)
    far = np.abs(symbols) == GAUSS_RADIUS
    if far.any():
        _encode_distance(c, encoder, (np.abs(d[far]) - GAUSS_RADIUS).astype(np.int64))


def _decode_gaussian(c, decoder, model, y_hat: torch.Tensor, k: int) -> None:
    """The inverse of :func:`_encode_gaussian`, into ``y_hat`` (float64) in place."""
    a, b = model.context.bounds[k]
    centre, offset, scale = _gaussian_args(model, y_hat, k)
    d = decoder.decode(c.stream.model.QuantizedGaussian(-GAUSS_RADIUS, GAUSS_RADIUS), offset, scale).astype(np.int64)
    far = np.abs(d) == GAUSS_RADIUS
    if far.any():
        d[far] = np.sign(d[far]) * (GAUSS_RADIUS + _decode_distance(c, decoder, int(far.sum())))
    y_hat[:, a:b] = torch.from_numpy((d + centre).reshape(y_hat[:, a:b].shape))


def encode_latents(model, y_hat: torch.Tensor) -> np.ndarray:
    """Range-code integer latents (N, *latent_shape) under the model's density -> uint32 words.
    Prior "context": slice 0 under the tables (with its escapes), then each later slice under
    its Gaussians, predicted from the slices before it."""
    c = _constriction()
    y_hat = y_hat.detach().cpu()
    encoder = c.stream.queue.RangeEncoder()
    _encode_tabled(c, encoder, tables(model), model.by_density(y_hat).numpy().astype(np.int64))
    if model.context is not None:
        for k in range(1, model.slices):
            _encode_gaussian(c, encoder, model, y_hat, k)
    return encoder.get_compressed()


def decode_latents_stream(model, words: np.ndarray, n: int, latent_shape) -> torch.Tensor:
    """The inverse of :func:`encode_latents`: integer latents (n, *latent_shape) as float32."""
    c = _constriction()
    decoder = c.stream.queue.RangeDecoder(words)
    densities = model.density.channels
    first = model.latent_channels if model.context is None else model.context.first
    values = _decode_tabled(c, decoder, tables(model), _per_density(model, n, latent_shape))
    head = np.moveaxis(np.stack(values).reshape(densities, n, -1), 0, 1).reshape((n, first) + tuple(latent_shape[1:]))
    if model.context is None:
        return torch.from_numpy(head.astype(np.float32)).contiguous()
    y = torch.zeros((n,) + tuple(latent_shape), dtype=torch.float64)
    y[:, :first] = torch.from_numpy(head)
    for k in range(1, model.slices):
        _decode_gaussian(c, decoder, model, y, k)
    return y.float().contiguous()


def compress(model, images: torch.Tensor, refine: int = 0, progress=None) -> bytes:
    """Images (N, C, H, W) float32 in [0, 1] -> the byte stream (header included); ``refine``:
    the encoder's search, steps an image (:mod:`.refine`; any decoder reads the result), with
    ``progress(done, total)`` called as :func:`latents` says."""
    model = _check_codec(model)
    x = check_images(images, "images to compress")
    if tuple(x.shape[1:]) != model.input_shape:
        raise DataError(f"expected images of shape {model.input_shape} for this codec, found {tuple(x.shape[1:])}; "
                        "resize them or train a codec for this shape")
    if not model.finalised:  # a model fresh from training: its integer tables, computed once
        model.finalise()
    y_hat = latents(model, x, refine, progress)
    words = encode_latents(model, y_hat)
    payload = words.astype("<u4").tobytes()
    head = MAGIC + bytes([VERSION]) + model_id(model) + _varint(len(x))
    head += b"".join(_varint(int(s)) for s in model.input_shape)
    head += _varint(len(y_hat.shape) - 1) + b"".join(_varint(int(s)) for s in y_hat.shape[1:])
    return head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head))) + payload


def read_header(data: bytes) -> dict:
    """The header fields of a stream (raises :class:`DataError` on anything malformed)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataError(f"expected the stream as bytes, found {type(data).__name__}")
    data = bytes(data)
    if len(data) < 4 or data[:3] != MAGIC:
        raise DataError("expected an aelab codec stream (starting with 'AEL'), found other data; "
                        "pass a file written by `aelab compress`")
    if data[3] != VERSION:
        raise DataError(f"expected codec stream format {VERSION}, found {data[3]}; "
                        "decode it with the aelab version that wrote it")
    if len(data) < 12:
        raise DataError("the stream ends inside its header (truncated); compress the images again")
    ident = data[4:12]
    pos = 12
    n, pos = _read_varint(data, pos)
    if not 1 <= n <= MAX_IMAGES:
        raise DataError(f"the stream's header claims {n} images, expected 1 to {MAX_IMAGES:,}; it is damaged "
                        "or crafted, compress the images again")
    shape = []
    for _ in range(3):
        v, pos = _read_varint(data, pos)
        shape.append(v)
    rank, pos = _read_varint(data, pos)
    if rank > 8:
        raise DataError(f"the stream's header is damaged (latent rank {rank}); compress the images again")
    latent = []
    for _ in range(rank):
        v, pos = _read_varint(data, pos)
        latent.append(v)
    if any(not 1 <= v <= MAX_SIDE for v in shape + latent):
        raise DataError(f"the stream's header claims shapes {tuple(shape)} / {tuple(latent)}, expected sides of 1 "
                        f"to {MAX_SIDE}; it is damaged or crafted, compress the images again")
    if n * math.prod(latent) > MAX_VALUES:
        raise DataError(f"the stream's header claims {n:,} images of {math.prod(latent):,} latents, more than "
                        f"{MAX_VALUES:,} values in all; split the images into several streams")
    if len(data) < pos + 4:
        raise DataError("the stream ends inside its header (truncated); compress the images again")
    (crc,) = struct.unpack(">I", data[pos:pos + 4])
    return {"version": data[3], "model_id": ident, "count": n, "shape": tuple(shape),
            "latent_shape": tuple(latent), "crc": crc, "payload_offset": pos + 4, "header": data[:pos]}


def decompress(data: bytes, model) -> torch.Tensor:
    """The byte stream -> images (N, C, H, W) float32 in [0, 1], decoded by ``model``."""
    model = _check_codec(model)
    head = read_header(data)
    data = bytes(data)
    if head["model_id"] != model_id(model):
        raise DataError(f"this stream was written by another model (id {head['model_id'].hex()}, this one is "
                        f"{model_id(model).hex()}); decompress with the run that compressed it")
    if head["shape"] != model.input_shape or head["latent_shape"] != tuple(model.code_shape):
        raise DataError(f"the stream's shapes {head['shape']} / {head['latent_shape']} do not match the model's "
                        f"{model.input_shape} / {tuple(model.code_shape)}; the header is damaged")
    payload = data[head["payload_offset"]:]
    if len(payload) % 4 or zlib.crc32(payload, zlib.crc32(head["header"])) != head["crc"]:
        raise DataError(f"the stream is corrupted or truncated ({len(data)} bytes, checksum mismatch); "
                        "compress the images again")
    least = _min_payload_bytes(model, head["count"])
    if len(payload) + 8 < least:
        raise DataError(f"the stream's header claims {head['count']:,} images, but its {len(payload):,} bytes of "
                        f"payload cannot hold them (at least {least:,.0f}); "
                        "it is damaged or crafted, compress the images again")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    try:
        y_hat = decode_latents_stream(model, words, head["count"], head["latent_shape"])
    except (ValueError, RuntimeError, AssertionError, OverflowError) as exc:
        raise DataError(f"the stream could not be decoded ({type(exc).__name__}); it is corrupted, "
                        "compress the images again") from None
    return decode_latents(model, y_hat)


def rd_point(model, images: torch.Tensor, refine: int = 0) -> dict:
    """One rate-distortion point on ``images`` (docs/protocols.md metrics): the real stream's size,
    header included, and PSNR / SSIM of what decompress gives back (``refine``: as compress)."""
    x = images.float().cpu()
    stream = compress(model, x, refine)
    x_hat = decompress(stream, model)
    n = len(x)
    h, w = model.input_shape[1:]
    return {"images": n, "stream_bytes": len(stream), "bytes_per_image": len(stream) / n,
            "bits_per_pixel": 8 * len(stream) / (n * h * w),
            "psnr": psnr(x, x_hat), "ssim": ssim(x, x_hat)}


# -- files ---------------------------------------------------------------------------------

def load_codec(run_dir):
    """The codec model of a run directory, in eval mode on the CPU."""
    return _check_codec(runs.load_model(run_dir))


__all__ = ["compress", "decompress", "load_codec", "rd_point", "reconstruct", "latents", "model_id", "read_header"]
