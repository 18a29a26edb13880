"""Training memory: what training a model takes, simulated on the meta device, refused before a run is written.

:func:`training_memory` estimates the peak of a training: the weights, Adam's two moments, the
data's copies on the device, and the largest of one training step (a batch forward and
backward, gradients included), a validation batch and the final quality pass. The step is not
guessed from layer shapes: the model is built on PyTorch's ``meta`` device (shapes, no data)
and one step runs there under a dispatch mode that adds up every tensor as it is created and
takes it off when it is freed, so the peak follows the real order of allocation and release
at the real image size and batch, for free. Measured against the peak RSS of real trainings
on CPU (docs/robustness.md), the tensors account for all but :data:`WORKING_MEMORY`.

:func:`check_training_memory` refuses, in one line, a training whose estimate exceeds the
memory available (:func:`aelab.arrays.available_memory`; on CUDA the GPU's free memory).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from . import arrays
from .device import has_conv, resolve_device
from .errors import AelabError, ConfigError
from .loop import QUALITY_IMAGES
from .models import Autoencoder, build_model
from .settings import TrainConfig

# Beyond the tensors: oneDNN's scratch space, the allocators' caches and the code a first step
# loads. Measured on CPU (peak RSS less the simulated peak, 28x28 to 2048x2048 images, the conv,
# dense, unet and gdn networks): 40-280 MB, most often 60-180 MB.
WORKING_MEMORY = 128 * 2**20
QUALITY_CHUNK = 250  # the images loop.quality passes through the model at once


class _Peak(TorchDispatchMode):
    """Adds up the storage of every tensor an op creates and takes it off when it is freed;
    ``peak`` is the most that was alive at once. Storages alive before (the weights) are not counted."""

    def __init__(self, known=()):
        super().__init__()
        self.live = self.peak = 0
        self.alive: set[int] = set()
        self.known = {id(s) for s in known}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key = id(storage)
        if key in self.alive or key in self.known:  # a view of a tensor already counted, or of a weight
            return
        n = storage.nbytes()
        self.alive.add(key)
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, n)

    def _free(self, key: int, n: int) -> None:
        self.alive.discard(key)
        self.live -= n


def _simulate(model: Autoencoder, fn) -> int:
    """The peak bytes of tensors ``fn()`` creates on the meta device."""
    mode = _Peak(p.untyped_storage() for p in model.parameters())
    with mode:
        fn()
    return mode.peak


def _meta_model(spec: dict) -> Autoencoder:
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the seeded initial weights are not touched
        return build_model(spec["kind"], spec["input_shape"], net=spec.get("net", "conv"),
                           net_options=spec.get("net_options"), **spec.get("options", {}))


def training_memory(spec: dict, config: TrainConfig, n_train: int, n_val: int = 0, streamed: bool = False) -> dict:
    """The estimated peak bytes of training the model ``spec`` (the ``model`` section of a
    config.json) with ``config`` on ``n_train`` images (validated on ``n_val``), as a dict:
    ``weights`` (the weights and Adam's moments; under bf16 autocast also the bf16 copies),
    ``data`` (the images' copies on the device), ``step`` (the largest of a training step, a
    validation batch and the quality pass), ``working`` and ``total``; ``batch``: the images in
    a step. ``step`` is None when the meta device cannot run the model (then it is left out).
    ``streamed``: the training images are read batch by batch (:mod:`aelab.streaming`), never
    held whole.

    Errors in the spec (an unknown kind, a bad option) raise here as they would in training.
    """
    model = _meta_model(spec)
    device = resolve_device(config.device)
    amp = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    if config.freeze_encoder and isinstance(getattr(model, "encoder", None), torch.nn.Module):
        model.encoder.requires_grad_(False)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    weights = params + 2 * trained + (params // 2 + trained // 2 if amp else 0)  # bf16: weight copies, fp32 grads
    image = 4 * int(torch.Size(model.input_shape).numel())
    batch = min(config.batch_size, n_train)
    on_cuda = device.type == "cuda"
    copied = not streamed and (on_cuda or (model.input_shape[0] > 1 and config.channels_last and has_conv(model)))
    data = image * ((n_train if copied else 0) + n_val * (2 if on_cuda else 1))  # the training set, the noisy val
    try:
        step = _step_peak(model, batch, amp, n_train, n_val, config.val_batch_size)
    except AelabError:
        raise
    except Exception:  # an op the meta device lacks: the estimate is advisory, the training decides
        step = None
    total = weights + data + (step or 0) + WORKING_MEMORY
    return {"weights": weights, "data": data, "step": step, "working": WORKING_MEMORY, "total": total,
            "batch": batch}


def _step_peak(model: Autoencoder, batch: int, amp: bool, n_train: int, n_val: int, val_batch: int) -> int:
    shape = tuple(model.input_shape)
    dtype = torch.bfloat16 if amp else torch.float32  # meta has no autocast: a bf16 model is near what it does

    def step():  # loop._Loop.step: the batch, its noisy copy, the loss forward and backward
        x = torch.empty((batch,) + shape, device="meta", dtype=dtype)
        model.train().loss(torch.empty_like(x), x)["loss"].backward()

    def validate():  # loop._validate: the loss of a validation batch, no gradients
        x = torch.empty((min(n_val, val_batch),) + shape, device="meta", dtype=dtype)
        with torch.no_grad():
            model.eval().loss(x, x)

    def quality():  # loop.quality (no autocast): the noisy images, the outputs in chunks, then joined
        q = min(n_val or n_train, QUALITY_IMAGES)
        with torch.no_grad():
            x_in = torch.empty((q,) + shape, device="meta")
            torch.cat([model.eval()(x_in[i:i + QUALITY_CHUNK]) for i in range(0, q, QUALITY_CHUNK)])

    peaks = [_simulate(model.to(dtype), step)]
    if n_val:
        peaks.append(_simulate(model.to(dtype), validate))
    peaks.append(_simulate(model.float(), quality))
    return max(peaks)


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def device_memory(device: torch.device) -> int:
    """Bytes free for training on ``device``: the GPU's free memory on CUDA, else :func:`available_memory`."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return arrays.available_memory()


def check_training_memory(spec: dict, config: TrainConfig, n_train: int, n_val: int = 0,
                          streamed: bool = False) -> dict:
    """Refuse (:class:`ConfigError`, one line) a training whose :func:`training_memory` is more than
    the memory available, saying how much it would need and how to make it smaller; else return the estimate."""
    need = training_memory(spec, config, n_train, n_val, streamed)
    device = resolve_device(config.device)
    free = device_memory(device)
    if need["total"] <= free:
        return need
    c, h, w = spec["input_shape"]
    parts = [f"weights and Adam's state {_size(need['weights'])}"]
    if need["step"] is not None:
        parts.append(f"a step of {need['batch']} image(s) forward and backward {_size(need['step'])}")
    if need["data"]:
        parts.append(f"the images' copies {_size(need['data'])}")
    where = "GPU memory" if device.type == "cuda" else "memory"
    raise ConfigError(f"expected a training that fits in {where} ({_size(free)} available), found the "
                      f"{spec['kind']} model on the {spec.get('net', 'conv')} network at {c}x{h}x{w}, which would "
                      f"need about {_size(need['total'])} ({', '.join(parts)}); pass a smaller --size H,W, "
                      "a smaller --batch-size, or a smaller network (--net, --net-option)")
