"""ONNX export: a run's model, or its encoder and decoder, as .onnx files checked by onnxruntime before they are written.

What is written into ``out`` (``aelab export --run RUN --format onnx --out DIR``):

- ``model.onnx``: the whole forward pass, images -> reconstructions (every kind but the codec);
- ``encoder.onnx``: images -> codes (a VAE: the posterior mean mu; the codec: the analysis
  transform y, before rounding);
- ``decoder.onnx``: codes -> images (the codec: the synthesis transform of round(y));
- ``export.json``: what each file takes and gives (names, shapes, dtype, range) and how far
  onnxruntime was from PyTorch on the check images.

Every file has a dynamic batch axis; a fully convolutional model (``model.any_size``: the
conv net without ``latent_dim``, the U-Net) has dynamic H and W too, any other the built
(C, H, W). The codec's entropy coding (its learned densities, the integer tables, the range
coder of :mod:`aelab.compression.stream`) stays in Python: only its two transforms are
exported. The autoregressive VAE is refused: its decode runs pixel by pixel, each pixel's
probability feeding the ones after it (784 sequential steps for 28 x 28), which an ONNX graph
could only hold unrolled, one block of nodes a pixel.

The check: each file is run by onnxruntime (CPUExecutionProvider) on real test images when
the run's data is there (else seeded random images of the model's shape), as one batch of up
to 64, as a batch of 1 and, for an any-size model, at a second H x W that is not a multiple
of the net's stride, and compared with PyTorch on the same input. The largest absolute
difference, divided by max(1, the largest absolute value PyTorch gives), must be at most
:data:`TOLERANCE`, else the export is refused in one line before any file is written: on
images in [0, 1] that is the absolute difference itself; codes can be larger (the codec's
latents reach 123 on the zoo's codec-315b, where float32's own resolution is 7.6e-6), so
theirs is measured against their largest value. Both figures go into export.json, and for
the codec's analysis transform the number of rounded latents that differ.

The exporter is ``torch.onnx.export(..., dynamo=False)``, the TorchScript tracer: it needs
no package beyond ``onnx``, and exports a model here in well under a second. (The
torch.export-based exporter, torch's default since 2.9, also exports every model here, but
needs ``onnxscript`` and takes 3-8 s a file.) The tracer records the Python branches of a
forward pass at the sizes it traces, so an any-size model is traced at an H x W that is not a
multiple of its stride: the U-Net's padding and the crop back to the input's size are then in
the graph, with their amounts computed from the input's shape, and the check at a second size
confirms it.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import ownership, runs
from .data import load_dataset
from .errors import ConfigError, DataError
from .version import __version__

TOLERANCE = 1e-5        # largest |onnxruntime - PyTorch| / max(1, max |PyTorch|) accepted
OPSET = 17              # ONNX opset: read by onnxruntime >= 1.14 and most other runtimes
CHECK_IMAGES = 64       # test images the check runs
MANIFEST = "export.json"
FILES = ("model.onnx", "encoder.onnx", "decoder.onnx")
FORMATS = ("onnx",)
_IMAGES = "[0, 1]"


@dataclass
class Part:
    """One exported file: the model's method it holds, its input and output, their axes."""

    file: str
    method: str                          # the model's method: forward, encode or decode
    does: str
    input: str
    output: str
    input_axes: dict[int, str]           # dynamic axes: index -> name
    output_axes: dict[int, str]
    input_range: str
    output_range: str
    crop_ok: bool = False                # an any-size decoder: gives the padded size, the model crops
    checks: list = field(default_factory=list)


class _Method(nn.Module):
    """One method of a model as a module's forward (what the tracer exports)."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x):
        return getattr(self.model, self.method)(x)


def exportable(model) -> None:
    """Refuse, in one line, a model that cannot be exported to ONNX (and say why)."""
    if getattr(model, "autoregressive", False):
        pixels = math.prod(model.input_shape)
        raise ConfigError(f"expected a model ONNX can hold, found an autoregressive VAE: its decode runs pixel by "
                          f"pixel ({pixels} sequential steps, each pixel's probability feeding the ones after it), "
                          "which an ONNX graph could only hold unrolled; export a plain VAE (e.g. --run zoo:vae-32), "
                          "or use this one from Python")


def parts(model) -> list[Part]:
    """What is exported for ``model``'s kind (see the module docstring)."""
    exportable(model)
    batch = {0: "N"}
    images = {0: "N", 2: "H", 3: "W"} if model.any_size else batch
    codes = {0: "N", 2: "h", 3: "w"} if model.any_size and len(model.code_shape) == 3 else batch
    decoded = {0: "N", 2: "H_out", 3: "W_out"} if model.any_size else batch
    if model.kind == "codec":
        return [Part("encoder.onnx", "encode", "the analysis transform: images -> latents y (the stream codes "
                     "round(y), half to even, under the learned densities, in Python)", "x", "y", images, codes,
                     _IMAGES, "real"),
                Part("decoder.onnx", "decode", "the synthesis transform: rounded latents -> images", "y_hat", "x_hat",
                     codes, decoded, "integers (round(y), as float32)", _IMAGES)]
    code_name = "mu" if model.kind == "variational" else "z"
    return [Part("model.onnx", "forward", "the whole model: images -> reconstructions" +
                 (" (the decoder's mean at the posterior mean)" if model.kind == "variational" else ""),
                 "x", "x_hat", images, images, _IMAGES, _IMAGES),
            Part("encoder.onnx", "encode", "images -> codes" + (", the posterior mean mu" if code_name == "mu" else ""),
                 "x", code_name, images, codes, _IMAGES, "real"),
            Part("decoder.onnx", "decode", "codes -> images" + (" (the mean of p(x|z))" if code_name == "mu" else ""),
                 code_name, "x_hat", codes, decoded, "real", _IMAGES, crop_ok=model.any_size)]


# -- the images the check runs --------------------------------------------------------------

def check_images(model, run, data=None, limit: int = CHECK_IMAGES) -> tuple[torch.Tensor, str]:
    """(images, where they come from): the run's test images (``data``, else the data it was
    trained on) when they are there and fit the model, else seeded random images of its shape."""
    train = runs.read_config(run).get("train", {}) or {}
    source = data if data is not None else train.get("data")
    reason = ""
    try:
        ds = load_dataset(source, "test", limit=limit, crop=train.get("crop"))
        c = model.input_shape[0]
        fits = ds.input_shape == tuple(model.input_shape) or (model.any_size and ds.input_shape[0] == c)
        if fits:
            return ds.x.float(), f"{len(ds)} test images of {source or 'Fashion-MNIST'}"
        reason = f"its test images are {ds.input_shape}, the model takes {tuple(model.input_shape)}"
    except (DataError, ConfigError) as exc:  # no test images there (not installed, no test split): random ones
        reason = str(exc).split(";")[0]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((limit,) + tuple(model.input_shape), generator=gen)
    return x, f"{limit} random images (no test images: {reason})"


def other_size(x: torch.Tensor, align: int, size: tuple[int, int]) -> torch.Tensor:
    """The images mirrored into a mosaic and cropped to ``size`` (less one row or column where
    that is a multiple of ``align``): the same content at another H x W, for an any-size model."""
    h, w = (max(1, s - 1 if align > 1 and s % align == 0 else s) for s in size)
    while x.shape[-2] < h or x.shape[-1] < w:
        x = torch.cat([x, x.flip(-1)], -1) if x.shape[-1] < w else x
        x = torch.cat([x, x.flip(-2)], -2) if x.shape[-2] < h else x
    return x[..., :h, :w].contiguous()


# -- export and check ----------------------------------------------------------------------

def _onnx_bytes(model, part: Part, sample: torch.Tensor, source: str) -> bytes:
    """``part`` of ``model`` as an ONNX file (bytes), traced on ``sample``."""
    import onnx  # optional: aelab[export]

    buf = io.BytesIO()
    with warnings.catch_warnings():
        # TracerWarning: branches on sizes are recorded as taken at the traced size (see the module
        # docstring: any-size models are traced where every branch is taken, then checked at a
        # second size); DeprecationWarning: torch's note that the tracer will be retired
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(_Method(model, part.method).eval(), (sample,), buf, dynamo=False, opset_version=OPSET,
                              input_names=[part.input], output_names=[part.output], do_constant_folding=True,
                              dynamic_axes={part.input: part.input_axes, part.output: part.output_axes})
        except Exception as exc:  # an operation ONNX lacks: one line, not the tracer's traceback
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ConfigError(f"{part.file}: torch.onnx.export could not export this {model.kind} model on the "
                              f"{model.net} network ({type(exc).__name__}: {first}); nothing was written") from None
    proto = onnx.load_from_string(buf.getvalue())
    proto.doc_string = f"aelab {__version__}: {source}, {part.file}: {part.does}"
    for key, value in (("aelab_version", __version__), ("source", source), ("kind", model.kind),
                       ("net", model.net), ("part", part.method)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _session(data: bytes):
    import onnxruntime as ort  # optional: aelab[export]

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _difference(part: Part, got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max |got - want|, the scale it is measured against: max(1, max |want|)); an any-size
    decoder's output may be the padded size (the model crops it)."""
    if got.shape != want.shape and part.crop_ok and got.ndim == want.ndim == 4 and got.shape[:2] == want.shape[:2] \
            and got.shape[2] >= want.shape[2] and got.shape[3] >= want.shape[3]:
        got = got[..., :want.shape[2], :want.shape[3]]
    if got.shape != want.shape:
        raise ConfigError(f"{part.file}: onnxruntime gives shape {got.shape} where PyTorch gives {want.shape}; "
                          "nothing was written, report it with the model's config.json")
    if got.size == 0:
        return 0.0, 1.0
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    return (diff if math.isfinite(diff) else math.inf), max(1.0, float(np.max(np.abs(want))))


def _check(model, part: Part, data: bytes, inputs: list[tuple[str, torch.Tensor]]) -> tuple[float, float]:
    """Run ``data`` with onnxruntime on each input and compare with PyTorch: (the largest absolute
    difference, the largest difference over its scale, the one held to :data:`TOLERANCE`)."""
    session = _session(data)
    worst = scaled = 0.0
    for label, x in inputs:
        with torch.no_grad():
            want = getattr(model, part.method)(x).numpy()
        got = session.run([part.output], {part.input: x.numpy()})[0]
        diff, scale = _difference(part, got, want)
        check = {"on": label, "input_shape": list(x.shape), "max_abs_difference": diff, "scale": scale}
        if model.kind == "codec" and part.method == "encode":  # what the stream codes: the rounded latents
            check["rounded_latents_that_differ"] = int((np.round(got) != np.round(want)).sum())
        part.checks.append(check)
        worst, scaled = max(worst, diff), max(scaled, diff / scale)
    return worst, scaled


def _trace_input(model, x: torch.Tensor) -> torch.Tensor:
    """Two images to trace with: the built size, or for an any-size model a size off its stride."""
    two = torch.cat([x[:1], x[-1:]])
    _, h, w = model.input_shape
    return other_size(two, model.align, (h + 5, w + 3)) if model.any_size else two


def _codes(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = model.encode(x)
        return model.quantize(y) if model.kind == "codec" else y


def _describe(model, part: Part, sample_in: torch.Tensor, sample_out: torch.Tensor) -> dict:
    def tensor(name, t, axes, rng):
        shape = [axes.get(i, int(s)) for i, s in enumerate(t.shape)]
        return {"name": name, "shape": shape, "dtype": "float32", "range": rng}

    out = tensor(part.output, sample_out, part.output_axes, part.output_range)
    if part.output_range == "real":
        out["observed"] = [float(sample_out.min()), float(sample_out.max())]
    entry = {"does": part.does, "input": tensor(part.input, sample_in, part.input_axes, part.input_range),
             "output": out}
    if model.any_size and len(sample_out.shape) == 4 and part.method in ("encode", "decode"):
        entry["sizes"] = (f"h = ceil(H / {model.align}), w = ceil(W / {model.align})" if part.method == "encode" else
                          f"H_out = {model.align} h, W_out = {model.align} w (at most {model.align - 1} more than the "
                          "image: crop to its H x W, as model.onnx does)")
    return entry


def export_onnx(run, out, overwrite: bool = False, data=None, limit: int = CHECK_IMAGES,
                fmt: str = "onnx") -> dict:
    """Export ``run`` (a run directory or ``zoo:NAME``) to ONNX files in ``out``, each checked
    by onnxruntime against PyTorch (see the module docstring); return what export.json holds.
    A check above :data:`TOLERANCE`, an existing file without ``overwrite``, or an input in the
    way is refused in one line before anything is written."""
    if fmt not in FORMATS:
        raise ConfigError(f"expected --format {' or '.join(FORMATS)}, found {fmt!r}")
    try:
        import onnx  # optional: aelab[export], asked for before any work
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(f"aelab export needs onnx and onnxruntime, found no {exc.name}; "
                          "pip install 'aelab[export]'") from None
    model = runs.load_model(run)
    todo = parts(model)
    out = Path(out)
    located = runs.locate(run)
    inputs = [located / runs.CONFIG, located / runs.WEIGHTS, *([data] if data else [])]
    targets = [out / p.file for p in todo] + [out / MANIFEST]
    ownership.check_output_files(targets, inputs, overwrite=overwrite, what="another --out")
    ownership.check_writable(out)

    x, where = check_images(model, run, data=data, limit=limit)
    cases = [(f"{len(x)} images", x), ("1 image", x[:1])]
    if model.any_size:
        second = other_size(x, model.align, (2 * model.input_shape[1] - 5, 2 * model.input_shape[2] - 3))
        cases.append((f"{len(x)} images at {second.shape[-2]}x{second.shape[-1]}", second))
    sample = _trace_input(model, x)
    written, files = {}, {}
    for part in todo:
        if part.method == "decode":
            trace, checks = _codes(model, sample), [(label, _codes(model, t)) for label, t in cases]
        else:
            trace, checks = sample, cases
        data_bytes = _onnx_bytes(model, part, trace, str(run))
        worst, scaled = _check(model, part, data_bytes, checks)
        if not scaled <= TOLERANCE:
            raise ConfigError(f"{part.file}: onnxruntime differs from PyTorch by {worst:.3g}"
                              + (f" ({scaled:.3g} of the output's largest value)" if scaled != worst else "")
                              + f", more than {TOLERANCE:g}, on {where}; nothing was written, report it with "
                              "the run's config.json")
        with torch.no_grad():
            sample_out = getattr(model, part.method)(checks[0][1])
        written[part.file] = data_bytes
        files[part.file] = {**_describe(model, part, checks[0][1], sample_out), "bytes": len(data_bytes),
                            "max_abs_difference": worst,
                            "max_difference_over_scale": scaled, "checks": part.checks}
    manifest = {"format": "onnx", "opset": OPSET, "source": str(run), "kind": model.kind, "net": model.net,
                "input_shape": list(model.input_shape), "any_size": bool(model.any_size),
                "dynamic": "batch, H and W" if model.any_size else "batch (C, H, W fixed)",
                "checked_on": where, "tolerance": TOLERANCE, "files": files,
                "exporter": "torch.onnx.export(dynamo=False)", "torch": torch.__version__,
                "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "aelab_version": __version__}
    if model.kind == "codec":
        manifest["not_exported"] = ("the entropy coding (learned densities, integer tables, range coder) stays in "
                                    "Python: aelab compress / decompress")
    for name, data_bytes in written.items():
        runs.atomic_write_bytes(out / name, data_bytes)
    runs.write_json(out / MANIFEST, manifest)
    return {**manifest, "out": str(out), "written": [*written, MANIFEST]}


def summary(result: dict) -> list[str]:
    """The lines the command prints: each file's largest difference, then what was written."""
    lines = []
    for name, info in result["files"].items():
        scaled = info["max_difference_over_scale"]
        rel = f", {scaled:.2e} of its largest value" if scaled != info["max_abs_difference"] else ""
        lines.append(f"{name}: max abs difference {info['max_abs_difference']:.2e}{rel} (onnxruntime vs PyTorch, "
                     f"{'; '.join(c['on'] for c in info['checks'])})")
    lines.append(f"checked on {result['checked_on']}; dynamic axes: {result['dynamic']}")
    lines.append(f"wrote {result['out']}/ ({', '.join(result['written'])})")
    return lines


__all__ = ["export_onnx", "parts", "exportable", "check_images", "summary", "TOLERANCE", "OPSET"]
