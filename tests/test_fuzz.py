"""Property-based tests (hypothesis) of the loaders on generated and mutated files: every
input either loads correctly or fails with :class:`aelab.errors.DataError` (issue 7).

"Correctly" is checked against an independent reading: for IDX files a direct parse of
the format as LeCun's page states it (with Python's gzip reading the whole file), for
PNG files the pixels they were written from. Examples are few (the default suite must stay
fast) and derandomized, so a run is repeatable."""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aelab import data
from aelab.errors import DataError

from imagefiles import GREY, GREY_ALPHA, RGB, RGBA, png_bytes

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _write(raw: bytes, name: str = "f") -> Path:
    folder = Path(tempfile.mkdtemp(prefix="aelab-fuzz-"))
    path = folder / name
    path.write_bytes(raw)
    return path


# ------------------------------------------------------------------ mutations

@st.composite
def mutated(draw, raw: bytes) -> bytes:
    """``raw`` after 1-3 random edits: truncation, byte flips, insertions, deletions, appends."""
    out = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "append", "header"]))
        n = len(out)
        if kind == "truncate":
            del out[draw(st.integers(0, max(n - 1, 0))):]
        elif kind == "flip" and n:
            i = draw(st.integers(0, n - 1))
            out[i] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            i = draw(st.integers(0, n))
            out[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and n:
            i = draw(st.integers(0, n - 1))
            del out[i:i + draw(st.integers(1, 8))]
        elif kind == "append":
            out += draw(st.binary(min_size=1, max_size=16))
        elif kind == "header" and n >= 4:  # the header is where a reader is most trusting
            i = draw(st.integers(0, min(n, 16) - 1))
            out[i] = draw(st.integers(0, 255))
    return bytes(out)


# ------------------------------------------------------------------ IDX

def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def reference_idx(raw: bytes) -> np.ndarray | None:
    """The IDX format read directly, or None where the bytes are not a valid IDX file."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.GzipFile(fileobj=io.BytesIO(raw)).read()
        except (OSError, EOFError, zlib.error):
            return None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        return None
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape, dtype=object)):
        return None
    return np.frombuffer(body, np.uint8).reshape(shape)


small_arrays = st.integers(1, 3).flatmap(lambda nd: arrays(
    np.uint8, st.tuples(*[st.integers(0, 6)] * nd)))


@FUZZ
@given(small_arrays, st.booleans())
def test_idx_roundtrip(array, gz):
    raw = idx_bytes(array)
    path = _write(gzip.compress(raw) if gz else raw)
    got = data.read_idx(path)
    assert got.dtype == np.uint8 and got.shape == array.shape
    np.testing.assert_array_equal(got, array)


@FUZZ
@given(st.data(), small_arrays, st.booleans())
def test_idx_mutated_loads_exactly_or_fails_with_data_error(draw, array, gz):
    raw = idx_bytes(array)
    raw = gzip.compress(raw) if gz else raw
    bad = draw.draw(mutated(raw))
    expected = reference_idx(bad)
    path = _write(bad)
    if expected is None:
        with pytest.raises(DataError) as err:
            data.read_idx(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    else:
        np.testing.assert_array_equal(data.read_idx(path), expected)


@FUZZ
@given(st.binary(max_size=64))
def test_idx_random_bytes(raw):
    expected = reference_idx(raw)
    path = _write(raw)
    if expected is None:
        with pytest.raises(DataError):
            data.read_idx(path)
    else:
        np.testing.assert_array_equal(data.read_idx(path), expected)


@FUZZ
@given(st.data(), st.integers(1, 5))
def test_idx_pairs_agree_or_fail_with_data_error(draw, n):
    images = draw.draw(arrays(np.uint8, (n, 3, 3)))
    labels = draw.draw(arrays(np.uint8, (draw.draw(st.integers(0, 6)),)))
    ip, lp = _write(gzip.compress(idx_bytes(images)), "i.gz"), _write(gzip.compress(idx_bytes(labels)), "l.gz")
    if len(labels) != n or (len(labels) and labels.max() >= 10):
        with pytest.raises(DataError):
            data.load_idx_pair(ip, lp)
    else:
        x, y = data.load_idx_pair(ip, lp)
        np.testing.assert_array_equal(x, images)
        np.testing.assert_array_equal(y, labels)


# ------------------------------------------------------------------ images

# (colour type, channels, 16-bit?) -> what load_image must do with it
KINDS = {
    "grey8": (GREY, 1, False), "rgb8": (RGB, 3, False), "rgba8": (RGBA, 4, False), "la8": (GREY_ALPHA, 2, False),
    "grey16": (GREY, 1, True), "rgb16": (RGB, 3, True), "rgba16": (RGBA, 4, True),
}


@st.composite
def png_images(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    ctype, channels, sixteen = KINDS[kind]
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dtype = np.uint16 if sixteen else np.uint8
    shape = (h, w) if channels == 1 else (h, w, channels)
    pixels = draw(arrays(dtype, shape))
    if channels in (2, 4) and draw(st.booleans()):  # often fully opaque, sometimes not
        pixels[..., -1] = np.iinfo(dtype).max
    return kind, pixels, png_bytes(pixels, ctype)


def expected_image(kind: str, pixels: np.ndarray) -> np.ndarray | None:
    """What load_image must return for a PNG written from ``pixels``, or None if it must refuse it."""
    ctype, channels, sixteen = KINDS[kind]
    if sixteen and ctype != GREY:
        return None  # 16-bit colour: refused
    if channels in (2, 4):
        if pixels[..., -1].min() < np.iinfo(pixels.dtype).max:
            return None  # transparent pixels: refused
        pixels = pixels[..., :-1]
        if channels == 2:
            pixels = pixels[..., 0]
    return pixels.astype(np.float64) / (65535.0 if sixteen else 255.0)


@FUZZ
@given(png_images())
def test_png_loads_exactly_or_is_refused(image):
    kind, pixels, raw = image
    path = _write(raw, "img.png")
    expected = expected_image(kind, pixels)
    if expected is None:
        with pytest.raises(DataError) as err:
            data.load_image(path)
        assert "img.png" in str(err.value)
    else:
        got = data.load_image(path)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def _jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@FUZZ
@given(st.data(), png_images(), st.booleans())
def test_mutated_images_load_or_fail_with_data_error(draw, image, as_jpeg):
    kind, pixels, raw = image
    if as_jpeg:  # JPEG holds grey or RGB, 8 bits
        grey_or_rgb = pixels if pixels.ndim == 2 else pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., 0]
        raw = _jpeg((grey_or_rgb >> 8 if grey_or_rgb.dtype == np.uint16 else grey_or_rgb).astype(np.uint8))
    path = _write(draw.draw(mutated(raw)), "img.jpg" if as_jpeg else "img.png")
    try:
        got = data.load_image(path, size=draw.draw(st.none() | st.tuples(st.integers(1, 5), st.integers(1, 5))))
    except DataError as err:
        assert "img." in str(err) and "\n" not in str(err)
        return
    assert got.dtype == np.float32 and got.ndim in (2, 3) and (got.ndim == 2 or got.shape[2] == 3)
    assert np.isfinite(got).all() and got.min() >= 0.0 and got.max() <= 1.0


@FUZZ
@given(st.data())
def test_image_folders_load_every_image_or_fail_with_data_error(draw):
    """A folder of class subfolders with images (sometimes of several sizes) and junk files."""
    folder = Path(tempfile.mkdtemp(prefix="aelab-fuzz-"))
    count = 0
    for c in range(draw.draw(st.integers(1, 3))):
        sub = folder / f"class{c}"
        sub.mkdir()
        for i in range(draw.draw(st.integers(0, 3))):
            h = draw.draw(st.sampled_from([4, 4, 4, 5]))
            raw = png_bytes(draw.draw(arrays(np.uint8, (h, 4))), GREY)
            (sub / f"{i}.png").write_bytes(draw.draw(st.just(raw) | mutated(raw)))
            count += 1
        if draw.draw(st.booleans()):
            (sub / "readme.txt").write_text("junk")
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = data.load_image_folder(folder)
    except DataError as err:
        assert "\n" not in str(err)
        return
    assert len(ds) == count and ds.x.dtype.is_floating_point and ds.x.shape[1] == 1
    assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0


# ------------------------------------------------------------------ .npz

@FUZZ
@given(st.data(), st.integers(1, 4))
def test_mutated_npz_loads_or_fails_with_data_error(draw, n):
    buf = io.BytesIO()
    np.savez(buf, x=draw.draw(arrays(np.uint8, (n, 3, 3))), y=np.arange(n) % 2)
    path = _write(draw.draw(mutated(buf.getvalue())), "d.npz")
    try:
        ds = data.load_npz(path)
    except DataError as err:
        assert "d.npz" in str(err) and "\n" not in str(err)
        return
    assert ds.x.ndim == 4 and len(ds.y) == len(ds.x)
    assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0
