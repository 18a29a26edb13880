"""Encoder/decoder pairs, each built from ``input_shape`` = (C, H, W).

A network builder is registered with :func:`register_net` and returns a :class:`NetPair`:
the encoder, the decoder and the shape of the code between them. Kinds that need a
particular code (a vector of ``latent_dim`` units, a sigmoid activation) ask for it
through the keyword arguments every builder accepts: ``latent_dim`` and ``code_activation``.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from .errors import ConfigError
from .registry import registrar

NETS: dict[str, Callable[..., "NetPair"]] = {}


register_net = registrar(NETS)  # @register_net(name): a network builder (input_shape, **options) -> NetPair


@dataclass
class NetPair:
    encoder: nn.Module
    decoder: nn.Module
    code_shape: tuple[int, ...]  # shape of one code, without the batch axis (at the built size)
    any_size: bool = False       # fully convolutional: takes any H, W (the output may need a crop back)
    field: int = 0               # an upper bound on the receptive field's radius, in input pixels
    align: int = 1               # the product of the strides: tiles start at multiples of it


def activation(name: str | None) -> nn.Module:
    table = {None: nn.Identity, "none": nn.Identity, "linear": nn.Identity, "relu": nn.ReLU,
             "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    if name not in table:
        raise ConfigError(f"expected code_activation one of none, relu, sigmoid, tanh; found {name!r}")
    return table[name]()


def transpose_padding(size: int) -> int:
    """output_padding of a (odd k, s=2, p=k//2) ConvTranspose2d that maps ceil(size/2) back to ``size``."""
    return 1 if size % 2 == 0 else 0


def halved(size: int) -> int:
    """The output size of a (odd k, s=2, p=k//2) Conv2d: ceil(size / 2)."""
    return (size + 1) // 2


@register_net("conv")
def conv_net(input_shape, channels=(16, 8), latent_dim: int | None = None,
             code_activation: str | None = "relu") -> NetPair:
    """The Keras denoising tutorial's network (TF "Intro to Autoencoders").

    encoder: Conv2d(C, 16, 3, s2, p1) + ReLU, Conv2d(16, 8, 3, s2, p1) + ReLU
    decoder: ConvTranspose2d(8, 8, 3, s2) + ReLU, ConvTranspose2d(8, 16, 3, s2) + ReLU,
             Conv2d(16, C, 3, p1) + Sigmoid
    The code is the 8 x H/4 x W/4 feature map. With ``latent_dim`` a Linear layer maps the
    flattened feature map to a vector of that size (and back in the decoder). Without it the
    net is fully convolutional: any H, W goes in, and the decoder's ceil(H/4)*4 rows (at most
    three more) are cropped back by the model.
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
        sizes.append((halved(sizes[-1][0]), halved(sizes[-1][1])))
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
                                   output_padding=(transpose_padding(target[0]), transpose_padding(target[1]))),
                nn.ReLU()]
    dec += [nn.Conv2d(rev[-1], c, 3, padding=1), nn.Sigmoid()]
    # receptive field: each 3x3 conv reaches one pixel of its input's scale; a stride-2 layer doubles the scale
    scales = [2 ** i for i in range(len(ch))]
    field = sum(scales) + sum(2 * s for s in scales) + 1  # encoder convs, decoder transposed convs, last conv
    return NetPair(nn.Sequential(*enc), nn.Sequential(*dec), code_shape, any_size=latent_dim is None,
                   field=field, align=2 ** len(ch))


@register_net("dense")
def dense_net(input_shape, hidden=(256,), latent_dim: int = 32,
              code_activation: str | None = "none", decoder_hidden=None) -> NetPair:
    """Fully connected: Flatten, [Linear + ReLU] per hidden size, Linear to ``latent_dim``;
    the decoder mirrors it (or has the hidden sizes ``decoder_hidden``, from the code out)
    and ends in a Sigmoid, reshaped to ``input_shape``."""
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
    for size in (reversed(tuple(hidden)) if decoder_hidden is None else decoder_hidden):
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
        valid = [p for p in params if p != "input_shape"]
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(valid)}"
        raise ConfigError(f"network {name!r} has no option {unknown[0]!r}; {hint}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConfigError(f"expected input_shape (C, H, W), found {tuple(input_shape)}")
    for key in ("latent_dim", "hidden", "channels", "widths"):  # layer sizes: torch accepts 0, nothing else does
        value = options.get(key)
        sizes = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
            raise ConfigError(f"network {name!r}: expected {key} of positive integers, found {value!r}; "
                              f"e.g. --net-option {key}={'32' if key == 'latent_dim' else '[64,32]'}")
    try:
        return builder(tuple(int(s) for s in input_shape), **options)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError, IndexError, KeyError) as exc:
        if isinstance(exc, ConfigError):
            raise
        shown = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "defaults"
        raise ConfigError(f"network {name!r} cannot be built for input {tuple(input_shape)} with {shown} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                          "check the --net-option values") from None


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


# -- U-Net denoiser -------------------------------------------------------------------
# Ronneberger, Fischer & Brox 2015, "U-Net: convolutional networks for biomedical image
# segmentation", with the residual output of DnCNN (Zhang et al. 2017, "Beyond a Gaussian
# denoiser: residual learning of deep CNN for image denoising"): the network predicts the
# noise n_hat and outputs x_hat = clamp(x_noisy - n_hat, 0, 1).

def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """[Conv2d 3x3 + ReLU] x 2, size-preserving."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


class _ClampST(torch.autograd.Function):
    """clamp(v, 0, 1) forward, identity backward (straight-through), so a pixel pushed past
    the range still gets a gradient that brings it back."""

    @staticmethod
    def forward(ctx, v):
        return v.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad):
        return grad


class ClampST(nn.Module):
    """A layer: clamp to [0, 1] with the straight-through gradient of :class:`_ClampST`."""

    def forward(self, v):
        return _ClampST.apply(v)


class UNetEncoder(nn.Module):
    """Contracting path. The code packs the (padded) input and every level's feature map,
    each folded to the coarsest resolution with ``pixel_unshuffle``, into one tensor
    (C * 4^L + sum_i widths[i] * 4^(L - i), H' / 2^L, W' / 2^L), L = len(widths) - 1:
    the skip connections travel inside the code, so ``decode(encode(x))`` is the U-Net and
    ``decode`` works on any tensor of that shape. The code is overcomplete (a denoiser, not
    a compressor): its 2-D maps and probes describe features, not a bottleneck."""

    def __init__(self, input_shape, widths, code_activation):
        super().__init__()
        self.levels = len(widths) - 1
        self.blocks = nn.ModuleList(_double_conv(a, b) for a, b in zip((input_shape[0],) + tuple(widths[:-1]), widths))
        self.code_activation = activation(code_activation)

    def forward(self, x):
        m = 2 ** self.levels
        pad = (0, -x.shape[-1] % m, 0, -x.shape[-2] % m)  # F.pad order: left, right, top, bottom; per call
        x = F.pad(x, pad, mode="replicate") if any(pad) else x
        feats, h = [], x
        for i, block in enumerate(self.blocks):
            h = block(F.max_pool2d(h, 2) if i else h)
            feats.append(h)
        feats[-1] = self.code_activation(feats[-1])
        m = 2 ** self.levels
        parts = [F.pixel_unshuffle(x, m)] + [F.pixel_unshuffle(f, m >> i) if m >> i > 1 else f
                                             for i, f in enumerate(feats)]
        return torch.cat(parts, 1)  # (N, code channels, H'/2^L, W'/2^L)


class UNetDecoder(nn.Module):
    """Expanding path: unfold the code, then per level ConvTranspose2d(2, s2), concatenate the
    skip, double conv; a 1x1 conv predicts the noise (``residual``) or the image (Sigmoid)."""

    def __init__(self, input_shape, widths, residual: bool):
        super().__init__()
        c, h, w = input_shape
        self.levels = len(widths) - 1
        m = 2 ** self.levels
        self.c, self.h, self.w, self.residual = c, h, w, residual
        self.padded = (h + (-h % m), w + (-w % m))  # the built size's code decodes to this, cropped to (h, w)
        self.split = [c * m * m] + [wd * (m >> i) ** 2 for i, wd in enumerate(widths)]
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in range(self.levels))
        self.blocks = nn.ModuleList(_double_conv(2 * widths[i], widths[i]) for i in range(self.levels))
        self.head = nn.Conv2d(widths[0], c, 1)
        if residual:  # start as the identity: x_hat = x_noisy
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, z):
        m = 2 ** self.levels
        parts = torch.split(z, self.split, 1)
        x = F.pixel_shuffle(parts[0], m)
        skips = [F.pixel_shuffle(p, m >> i) if m >> i > 1 else p for i, p in enumerate(parts[1:])]
        h = skips[-1]
        for i in reversed(range(self.levels)):
            h = self.blocks[i](torch.cat([self.ups[i](h), skips[i]], 1))
        out = self.head(h)
        out = _ClampST.apply(x - out) if self.residual else torch.sigmoid(out)
        # a code of the built size decodes to the built size; any other to its padded size,
        # which the model crops to its input's (Autoencoder.forward)
        return out[:, :, :self.h, :self.w] if tuple(out.shape[-2:]) == self.padded else out


@register_net("unet")
def unet_net(input_shape, widths=(32, 64, 128), residual: bool = True, latent_dim: int | None = None,
             code_activation: str | None = "relu") -> NetPair:
    """A small U-Net denoiser (Ronneberger et al. 2015) with a residual output (DnCNN).

    ``widths``: channels per level; len(widths) - 1 max-pool halvings (28 -> 14 -> 7 for the
    default). Each level is two 3x3 conv + ReLU; the expanding path upsamples with a
    ConvTranspose2d(2, s2) and concatenates the skip. ``residual``: x_hat = clamp(x_noisy -
    n_hat, 0, 1) (straight-through gradient), else x_hat = sigmoid(out). Any H, W: each call
    pads its input (replicate) to a multiple of 2^L, and the output is cropped back to it.
    ``latent_dim`` is not supported: the code is the multi-scale feature maps (see
    :class:`UNetEncoder`); ``code_activation`` applies to the deepest feature map.
    """
    if latent_dim is not None:
        raise ConfigError(f"the unet network has no latent_dim (its code is its feature maps), found "
                          f"latent_dim={latent_dim}; drop the option or use --net conv or dense")
    widths = tuple(int(v) for v in widths)
    if not widths or min(widths) < 1:
        raise ConfigError(f"expected unet widths of one or more positive channel counts, found {widths}; "
                          "e.g. widths=[32,64,128]")
    c, h, w = input_shape
    m = 2 ** (len(widths) - 1)
    hp, wp = h + (-h % m), w + (-w % m)
    code_shape = (c * m * m + sum(wd * (m >> i) ** 2 for i, wd in enumerate(widths)), hp // m, wp // m)
    levels = len(widths) - 1
    # receptive field: two 3x3 convs per level each way (2 * 2^i pixels), a pool and an up-convolution
    # between levels (2^i and 2^(i+1) pixels)
    field = sum(4 * 2 ** i for i in range(levels + 1)) + sum(3 * 2 ** i for i in range(levels))
    return NetPair(UNetEncoder(input_shape, widths, code_activation), UNetDecoder(input_shape, widths, residual),
                   code_shape, any_size=True, field=field, align=m)
