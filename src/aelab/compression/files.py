"""Files in and out of the learned codec: image files (or a folder, or an .npz) -> one ``.ael``
file (``aelab compress``) -> PNG files (``aelab decompress``), the byte stream itself being
:mod:`.stream`'s.

Neither ever writes over one of its inputs (the images, the stream, the run's config and
weights), and a file already at an output is replaced only with ``overwrite``: every output is
checked (:mod:`aelab.ownership`) before any image is encoded or decoded, and before anything is
written.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from .. import ownership, runs
from ..data import check_images, load_image_folder, load_npz, read_file_bytes
from ..errors import ConfigError, DataError
from ..images import png_bytes, read_images
from .stream import compress, decompress, load_codec, read_header


def _input_paths(inputs) -> list[Path]:
    return [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]


def _run_inputs(run_dir) -> list[Path]:
    """The files of a run that a command reads (never to be written over by its output)."""
    folder = runs.locate(run_dir)
    return [folder / runs.CONFIG, folder / runs.WEIGHTS]


def _load_inputs(inputs, shape) -> torch.Tensor:
    c = shape[0]
    inputs = _input_paths(inputs)
    if not inputs:
        raise DataError("expected image files, a folder of images or one .npz to compress, found none")
    if len(inputs) == 1 and inputs[0].suffix == ".npz":
        return load_npz(inputs[0]).x
    if len(inputs) == 1 and inputs[0].is_dir():
        return load_image_folder(inputs[0]).x
    for p in inputs:
        if p.suffix == ".npz" or p.is_dir():
            raise DataError(f"expected image files, or a single folder or .npz, found {p} among other inputs; "
                            "compress it on its own")
    return check_images(read_images(inputs, c).astype(np.float32), "input images")


def compress_files(run_dir, inputs, out_path, refine: int = 0, progress=None, overwrite: bool = False) -> dict:
    """Compress image files (or one folder of images, or one .npz) with the run's codec into
    ``out_path`` (``refine``, ``progress``: as :func:`compress`); returns {"images", "bytes",
    "bytes_per_image", "path"}. ``out_path`` is never one of the inputs (nor the run's own
    files), nor a folder; an existing file there is replaced only with ``overwrite``: all
    checked before anything is read or written."""
    ownership.check_output_file(out_path, [*_input_paths(inputs), *_run_inputs(run_dir)], overwrite,
                                what="another --out")
    model = load_codec(run_dir)
    if not model.finalised:  # a run trained before the tables were stored: compute them once, keep them
        model.finalise()
        runs.save_weights(model, runs.run_file(run_dir, runs.WEIGHTS))
    x = _load_inputs(inputs, model.input_shape)
    if tuple(x.shape[1:]) != model.input_shape:
        raise DataError(f"expected images of shape {model.input_shape} for this codec, found {tuple(x.shape[1:])}; "
                        "resize them or train a codec for this shape")
    stream = compress(model, x, refine, progress)
    path = runs.atomic_write_bytes(out_path, stream)
    return {"images": len(x), "bytes": len(stream), "bytes_per_image": len(stream) / len(x), "path": str(path)}


def decoded_names(count: int, channels: int) -> list[str]:
    """The files :func:`decompress_file` writes for ``count`` images of ``channels`` channels."""
    if channels not in (1, 3):
        return ["decoded.npz"]
    digits = max(5, len(str(count - 1)))
    return [f"{i:0{digits}d}.png" for i in range(count)]


def decompress_file(path, out_dir, run_dir=None, overwrite: bool = False) -> list[Path]:
    """Decode ``path`` with the run's codec into ``out_dir``: one 8-bit PNG per image
    (00000.png, ...), or decoded.npz for images of other than 1 or 3 channels. ``run_dir``
    defaults to the folder holding ``path`` when that is a run directory. No output is ever
    ``path`` itself (or the run's files); existing files there are replaced only with
    ``overwrite``: every name (from the stream's header) is checked before decoding."""
    path = Path(path)
    if run_dir is None:
        if not (path.parent / runs.CONFIG).is_file():
            raise ConfigError(f"decompressing needs the run that compressed {path}; pass --run DIR")
        run_dir = path.parent
    data = read_file_bytes(path, "a compressed file")
    try:
        head = read_header(data)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    out_dir = Path(out_dir)
    targets = [out_dir / name for name in decoded_names(head["count"], head["shape"][0])]
    ownership.check_output_files(targets, [path, *_run_inputs(run_dir)], overwrite)
    model = load_codec(run_dir)
    try:
        x_hat = decompress(data, model)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    if len(targets) == 1 and targets[0].suffix == ".npz":
        buf = io.BytesIO()
        np.savez_compressed(buf, x=x_hat.numpy())
        return [runs.atomic_write_bytes(targets[0], buf.getvalue())]
    return [runs.atomic_write_bytes(target, png_bytes(img)) for target, img in zip(targets, x_hat)]


__all__ = ["compress_files", "decompress_file", "decoded_names"]
