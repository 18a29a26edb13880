"""Rate-distortion: how many bytes per image each codec needs for a given quality.

:func:`measure_codec` measures one point of a classical codec (:mod:`.classical`): it
compresses the 8-bit originals (test images are k/255 exactly, so ``round(x * 255)``
recovers them) to real bytes, decodes them, counts the bytes and scores the decoded
images; :func:`learned_points` does the same for runs of aelab's learned codec
(:mod:`.stream`, their lambda read from the model). :func:`rate_distortion` sweeps every
method; :func:`rd` loads the data, runs it and writes ``rd.json``, ``rd.md`` and the
figures. The rate is the mean number of bytes per image, the distortion PSNR and SSIM per
image then averaged (docs/protocols.md, :mod:`aelab.metrics`).
"""

from __future__ import annotations

import difflib
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..curves import LEARNED
from ..data import check_images, load_dataset
from ..errors import ConfigError, DataError
from ..metrics import check_ssim_size, psnr_per_image, ssim_per_image
from ..plots import rd_figures
from ..runs import ZOO_PREFIX, atomic_write_text, is_zoo, read_json, run_file, write_json, zoo_names
from .classical import CODECS, DEFAULT_METHODS, ImageCodec
from .stream import load_codec, model_id, rd_point
from ..report.tables import rd_markdown


def to_uint8(images, name: str = "images") -> np.ndarray:
    """Float images k/255 in [0, 1] (N, C, H, W) -> the uint8 originals; refuse anything else."""
    x = check_images(images, name).numpy()
    u = np.rint(x.astype(np.float64) * 255.0)
    worst = float(np.abs(u / 255.0 - x).max())
    if worst > 1e-6:
        raise DataError(f"expected 8-bit {name} (every value k/255), found values up to {worst:.3g} away from that; "
                        "rate-distortion compares codecs of 8-bit images, quantise with round(x * 255) / 255")
    return u.astype(np.uint8)


def _quality(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    p = torch.cat([psnr_per_image(x[i:i + 2000], x_hat[i:i + 2000]) for i in range(0, len(x), 2000)])
    s = torch.cat([ssim_per_image(x[i:i + 2000], x_hat[i:i + 2000]) for i in range(0, len(x), 2000)])
    return p.numpy(), s.numpy()


def measure_codec(codec: ImageCodec, images_u8: np.ndarray, param, _cache: dict | None = None) -> dict:
    """One point of a classical codec: compress, decompress, count the bytes, score the decoded images."""
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


def learned_points(runs, images, progress: bool = True, refine: int = 0) -> list[dict]:
    """One point per codec run directory (aelab's learned codec, :mod:`aelab.compression.stream`),
    its ``param`` the run's lambda (the model's ``lmbda``); ``refine``: the encoder's search
    (steps an image, :mod:`aelab.compression.refine`)."""
    points = []
    for run in runs:
        t = time.perf_counter()
        model = load_codec(run)
        r = rd_point(model, images, refine)
        points.append({"param": model.lmbda, "run": str(run),
                       "bytes_per_image": round(float(r["bytes_per_image"]), 3), "psnr": round(float(r["psnr"]), 4),
                       "ssim": round(float(r["ssim"]), 5), "lossless": False, "files": 1,
                       "stream_bytes": int(r["stream_bytes"]), "refine": refine, "model_id": model_id(model).hex(),
                       "seconds": round(time.perf_counter() - t, 2)})
        if progress:
            print(f"aelab rd: {run}: {points[-1]['bytes_per_image']:.1f} B/image, {points[-1]['psnr']:.2f} dB",
                  file=sys.stderr, flush=True)
    return sorted(points, key=lambda p: p["bytes_per_image"])


def rate_distortion(images, methods=DEFAULT_METHODS, runs=(), train_images=None, params: dict | None = None,
                    progress: bool = True, refine: int = 0) -> dict:
    """The rate-distortion points of each method on ``images`` (float NCHW, k/255 in [0, 1]).

    ``methods``: codec names of :data:`CODECS` (those not installed are skipped and listed);
    ``runs``: run directories of aelab's learned codec, one point each (the ``"aelab"``
    row); ``train_images``: clean training images for the codecs that learn (PCA);
    ``params``: ``{method: [parameter, ...]}`` to replace a default sweep; ``refine``: the
    learned codec's encoder search, steps an image (0: none). Returns
    ``{"test_images", "methods": {name: {label, param_name, lossless, counts, points:
    [{param, bytes_per_image, psnr, ssim, ...}]}}, "skipped"}``; a lossless point has
    ``psnr`` None (infinite).
    """
    params = dict(params or {})
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in CODECS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(CODECS), n=1)
        raise ConfigError(f"unknown rate-distortion method {unknown[0]!r}; "
                          + (f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(CODECS)}"))
    u = to_uint8(images, "test images")
    check_ssim_size(u.shape, "rate-distortion scores SSIM: measure images at least that large (--data)")
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
    from tqdm.auto import tqdm  # heavy: tqdm.auto probes for notebook widgets

    cache: dict = {}
    bar = tqdm(todo, desc="rate-distortion", unit="point", file=sys.stderr, dynamic_ncols=True, disable=not progress)
    for m, codec, p in bar:
        bar.set_postfix_str(f"{m} {codec.param_name} {p}" if codec.param_name else m)
        entry = result["methods"].setdefault(m, {**codec.describe(), **codec.details(u.shape), "points": []})
        entry["points"].append(measure_codec(codec, u, p, cache))
    bar.close()
    runs = list(runs or [])
    if runs:
        x = torch.from_numpy(u).float() / 255.0
        result["methods"][LEARNED] = {"label": "aelab codec (learned)", "param_name": "lambda", "lossless": False,
                                      "counts": "the whole stream, header included", "points":
                                      learned_points(runs, x, progress, refine)}
    return result



def _still_there(run) -> bool:
    """Whether a measured codec run still exists (a folder, or a model of this zoo)."""
    if not run:
        return False
    if is_zoo(run):
        return str(run)[len(ZOO_PREFIX):] in zoo_names()
    return Path(run).is_dir()


def _same_images(old: dict, new: dict) -> bool:
    return all(old.get(k) == new.get(k) for k in ("test_images", "image_shape", "data", "limit"))


def rd(out, runs=(), methods=DEFAULT_METHODS, limit: int | None = None, data=None, train_limit: int | None = None,
       params: dict | None = None, update: bool = False, threads: int | None = 1, progress: bool = True,
       command: str | None = None, refine: int = 0) -> dict:
    """Measure the methods (and the learned codec runs) on the test images; write
    ``out/rd.json``, ``out/rd.md``, ``out/figures/rd_psnr.png`` and ``rd_ssim.png`` (the
    caller writes the report: :func:`aelab.report.write_report`, as ``aelab rd`` does).
    ``update`` keeps the other methods of an existing ``rd.json`` measured on the same
    images, and the learned codec's points of other runs that still exist (to add a row or a run
    without redoing all; a point of a deleted run or of a model gone from the zoo is dropped)."""
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
    result = rate_distortion(test.x, methods=methods, runs=runs, train_images=train, params=params, progress=progress,
                             refine=refine)
    result.update({"data": None if data is None else str(data), "limit": limit,
                   "seconds": round(time.perf_counter() - t, 1), "command": command})
    path = run_file(out, "rd.json")
    if update and path.exists():
        old = read_json(path)
        if not _same_images(old, result):
            raise ConfigError(f"{path}: measured on other images ({old.get('test_images')} images, limit "
                              f"{old.get('limit')}, data {old.get('data')}); drop --update or match --limit/--data")
        merged = {k: v for k, v in old.get("methods", {}).items() if k not in result["methods"]}
        merged.update(result["methods"])
        if LEARNED in result["methods"] and LEARNED in old.get("methods", {}):  # other runs' points stay...
            fresh = {p["run"] for p in result["methods"][LEARNED]["points"]}
            kept = [p for p in old["methods"][LEARNED]["points"]
                    if p.get("run") not in fresh and _still_there(p.get("run"))]  # ...while the run exists
            merged[LEARNED]["points"] = sorted(kept + result["methods"][LEARNED]["points"],
                                               key=lambda p: p["bytes_per_image"])
        order = [*DEFAULT_METHODS, *CODECS, LEARNED]  # the usual row order, whatever order they were measured in
        result["methods"] = dict(sorted(merged.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
        result["commands"] = [c for c in [*old.get("commands", [old.get("command")]), command] if c]
        result["skipped"] = {**old.get("skipped", {}), **result["skipped"]}
        for k in result["methods"]:
            result["skipped"].pop(k, None)
    write_json(path, result)
    atomic_write_text(out / "rd.md", rd_markdown(result))
    rd_figures(result, out / "figures")
    return result


__all__ = ["to_uint8", "measure_codec", "learned_points", "rate_distortion", "rd"]
