"""Encoder/decoder pairs, each built from ``input_shape`` = (C, H, W).

A network builder is registered with :func:`register_net` and returns a :class:`NetPair`:
the encoder, the decoder and the shape of the code between them. Kinds that need a
particular code (a vector of ``latent_dim`` units, a sigmoid activation) ask for it
through the keyword arguments every builder accepts: ``latent_dim`` and ``code_activation``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError

NETS: dict[str, Callable[..., "NetPair"]] = {}


def register_net(name: str):
    def wrap(fn):
        NETS[name] = fn
        return fn
    return wrap


@dataclass
class NetPair:
    encoder: nn.Module
    decoder: nn.Module
    code_shape: tuple[int, ...]  # shape of one code, without the batch axis


def activation(name: str | None) -> nn.Module:
    table = {None: nn.Identity, "none": nn.Identity, "linear": nn.Identity, "relu": nn.ReLU,
             "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    if name not in table:
        raise ConfigError(f"expected code_activation one of none, relu, sigmoid, tanh; found {name!r}")
    return table[name]()


def _transpose_padding(size: int) -> int:
    """output_padding of a (k=3, s=2, p=1) ConvTranspose2d that maps ceil(size/2) back to ``size``."""
    return 1 if size % 2 == 0 else 0


def _halved(size: int) -> int:
    return (size + 1) // 2  # Conv2d(k=3, s=2, p=1)


@register_net("conv")
def conv_net(input_shape, channels=(16, 8), latent_dim: int | None = None,
             code_activation: str | None = "relu") -> NetPair:
    """The Keras denoising tutorial's network (TF "Intro to Autoencoders").

    encoder: Conv2d(C, 16, 3, s2, p1) + ReLU, Conv2d(16, 8, 3, s2, p1) + ReLU
    decoder: ConvTranspose2d(8, 8, 3, s2) + ReLU, ConvTranspose2d(8, 16, 3, s2) + ReLU,
             Conv2d(16, C, 3, p1) + Sigmoid
    The code is the 8 x H/4 x W/4 feature map. With ``latent_dim`` a Linear layer maps the
    flattened feature map to a vector of that size (and back in the decoder).
    """
    c, h, w = input_shape
    ch = list(channels)
    enc, sizes = [], [(h, w)]
    prev = c
    for i, out in enumerate(ch):
        enc += [nn.Conv2d(prev, out, 3, stride=2, padding=1)]
        last = i == len(ch) - 1
        enc += [activation(code_activation) if last and latent_dim is None else nn.ReLU()]
        prev = out
        sizes.append((_halved(sizes[-1][0]), _halved(sizes[-1][1])))
    feat = (ch[-1],) + sizes[-1]
    dec: list[nn.Module] = []
    if latent_dim is not None:
        flat = ch[-1] * sizes[-1][0] * sizes[-1][1]
        enc += [nn.Flatten(), nn.Linear(flat, latent_dim), activation(code_activation)]
        dec += [nn.Linear(latent_dim, flat), nn.ReLU(), nn.Unflatten(1, feat)]
        code_shape = (latent_dim,)
    else:
        code_shape = feat
    rev = [ch[-1]] + ch[::-1]  # 8 -> 8 -> 16 for the tutorial's (16, 8)
    for i in range(len(ch)):
        target = sizes[len(ch) - 1 - i]
        dec += [nn.ConvTranspose2d(rev[i], rev[i + 1], 3, stride=2, padding=1,
                                   output_padding=(_transpose_padding(target[0]), _transpose_padding(target[1]))),
                nn.ReLU()]
    dec += [nn.Conv2d(rev[-1], c, 3, padding=1), nn.Sigmoid()]
    return NetPair(nn.Sequential(*enc), nn.Sequential(*dec), code_shape)


@register_net("dense")
def dense_net(input_shape, hidden=(256,), latent_dim: int = 32,
              code_activation: str | None = "none") -> NetPair:
    """Fully connected: Flatten, [Linear + ReLU] per hidden size, Linear to ``latent_dim``;
    the decoder mirrors it and ends in a Sigmoid, reshaped to ``input_shape``."""
    c, h, w = input_shape
    d = c * h * w
    enc: list[nn.Module] = [nn.Flatten()]
    prev = d
    for size in hidden:
        enc += [nn.Linear(prev, size), nn.ReLU()]
        prev = size
    enc += [nn.Linear(prev, latent_dim), activation(code_activation)]
    dec: list[nn.Module] = []
    prev = latent_dim
    for size in reversed(tuple(hidden)):
        dec += [nn.Linear(prev, size), nn.ReLU()]
        prev = size
    dec += [nn.Linear(prev, d), nn.Sigmoid(), nn.Unflatten(1, (c, h, w))]
    return NetPair(nn.Sequential(*enc), nn.Sequential(*dec), (latent_dim,))


def build_net(name: str, input_shape, **options) -> NetPair:
    """Build the network ``name`` for ``input_shape`` (C, H, W) with its ``options``."""
    if name not in NETS:
        raise ConfigError(f"unknown network {name!r}; expected one of {', '.join(sorted(NETS))}")
    builder = NETS[name]
    params = inspect.signature(builder).parameters
    unknown = [k for k in options if k not in params]
    if unknown:
        import difflib
        valid = [p for p in params if p != "input_shape"]
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(valid)}"
        raise ConfigError(f"network {name!r} has no option {unknown[0]!r}; {hint}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConfigError(f"expected input_shape (C, H, W), found {tuple(input_shape)}")
    return builder(tuple(int(s) for s in input_shape), **options)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(module: nn.Module, input_shape) -> list[dict]:
    """One row per leaf layer: name, type, output shape, parameter count (a dry run on zeros)."""
    rows = []
    hooks = []

    def hook(mod, _inp, out, name):
        rows.append({"layer": name, "type": type(mod).__name__,
                     "output_shape": list(out.shape[1:]) if isinstance(out, torch.Tensor) else None,
                     "parameters": count_parameters(mod)})

    for name, mod in module.named_modules():
        if len(list(mod.children())) == 0:
            hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: hook(m, i, o, n)))
    try:
        with torch.no_grad():
            p = next(module.parameters(), None)
            module(torch.zeros((1,) + tuple(input_shape), device=p.device if p is not None else "cpu"))
    finally:
        for h in hooks:
            h.remove()
    return rows
