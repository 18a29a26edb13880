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


def adam(model, lr):
    """Adam over the parameters that train (not frozen), with the fused kernel where this torch
    has it (one kernel for all parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def autocast(amp: str, device: torch.device):
    """bf16 autocast on CUDA by default ("auto"); off on CPU, where it measured slower for these
    small convolutions. "bf16" forces it, "off" disables it."""
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
