"""Where and how training computes: the device, CPU threads, bf16 autocast, the optimizer and
the memory layout."""

from __future__ import annotations

import contextlib
import os

import torch

from .errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"expected a device like auto, cpu or cuda, found {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("expected a CUDA GPU for --device cuda, found none; use --device cpu")
    return dev


def default_threads() -> int:
    """CPU threads when not told: 1 on machines of up to 4 cores (measured: small convolutional
    steps gain little from a second thread and slow down badly when another process takes
    the core), else half the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if cores <= 4 else cores // 2


def has_conv(model) -> bool:
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def memory_format(model, channels_last: bool) -> torch.memory_format:
    """NHWC (``channels_last``) for a convolutional net when asked, else the usual layout."""
    return torch.channels_last if channels_last and has_conv(model) else torch.contiguous_format


def adam(model, lr, weight_decay: float = 0.0):
    """Adam over the parameters that train (not frozen), with the fused kernel where this torch
    has it (one kernel for all parameters). ``weight_decay``: an L2 penalty added to the gradient."""
    return _fused(torch.optim.Adam, model, lr=lr, **({"weight_decay": weight_decay} if weight_decay else {}))


def adamw(model, lr, weight_decay: float = 0.0):
    """AdamW (Loshchilov & Hutter 2019): Adam with the weight decay applied to the weights, apart
    from the gradient's moments (with ``weight_decay`` 0 it is Adam)."""
    return _fused(torch.optim.AdamW, model, lr=lr, weight_decay=weight_decay)


SGD_MOMENTUM = 0.9


def sgd(model, lr, weight_decay: float = 0.0):
    """SGD with momentum 0.9 (plain SGD at Adam's learning rates barely moves these models)."""
    return _fused(torch.optim.SGD, model, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay)


OPTIMIZERS = {"adam": adam, "adamw": adamw, "sgd": sgd}  # TrainConfig.optimizer -> its maker


def optimizer(model, name: str, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer ``name`` (one of :data:`aelab.settings.OPTIMIZERS`) over the parameters that train."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"expected optimizer one of {', '.join(OPTIMIZERS)}, found {name!r}; e.g. --optimizer adamw")
    return OPTIMIZERS[name](model, lr, weight_decay)


def _fused(cls, model, **settings):
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return cls(params, fused=True, **settings)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or torch
        return cls(params, **settings)


def autocast(amp: str, device: torch.device):
    """bf16 autocast on CUDA by default ("auto"); off on CPU, where it measured slower for these
    small convolutions. "bf16" forces it, "off" disables it."""
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
