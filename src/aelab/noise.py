"""Corruption models applied to the input during training and evaluation.

- ``gaussian:F``: ``clip(x + F * N(0, 1), 0, 1)`` (the tutorial's protocol, F = 0.2 by default);
  ``gaussian:LO-HI`` draws F per image uniformly in [LO, HI] (blind denoising);
- ``saltpepper:P``: a fraction P of the pixels set to 0 or 1 with equal chance;
- ``masking:P``: a fraction P of the pixels set to 0;
- ``shift:K``: each image translated by whole pixels (dy, dx), each uniform in [-K, K], the
  uncovered border set to 0 (a corruption of position: against the unshifted target, an
  encoder learns codes that small translations do not move).

Every draw comes from an explicit ``torch.Generator`` so runs are reproducible; training
draws fresh noise per batch, evaluation uses :func:`evaluation_noise` (docs/protocols.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F

from .errors import ConfigError


class Noise:
    """A corruption ``x -> x_noisy``; subclasses set ``name`` and implement ``__call__``."""

    name = "none"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def spec(self) -> str:
        return self.name


def _rand(shape, generator, device, kind="randn"):
    """Draw on the generator's device, then move (a CPU generator serves every device)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    fn = torch.randn if kind == "randn" else torch.rand
    out = fn(shape, generator=generator, device=gen_device)
    return out.to(device, non_blocking=True)


@dataclass
class Gaussian(Noise):
    """Additive Gaussian noise, clipped to [0, 1]; ``factor_max`` > ``factor`` makes it blind."""

    factor: float = 0.2
    factor_max: float | None = None
    name = "gaussian"

    def __post_init__(self):
        hi = self.factor if self.factor_max is None else self.factor_max
        if not (isinstance(self.factor, Real) and isinstance(hi, Real) and 0.0 <= self.factor <= hi <= 5.0):
            raise ConfigError(f"expected a Gaussian noise factor in [0, 5] (low <= high), found "
                              f"{self.factor}{'' if self.factor_max is None else f'-{self.factor_max}'}; "
                              "the tutorial uses 0.2")

    def __call__(self, x, generator=None):
        noise = _rand(x.shape, generator, x.device)
        if self.factor_max is None:
            scale = self.factor
        else:  # one factor per image, uniform in [factor, factor_max]
            u = _rand((x.shape[0],) + (1,) * (x.ndim - 1), generator, x.device, "rand")
            scale = self.factor + (self.factor_max - self.factor) * u
        return (x + scale * noise.to(x.dtype)).clamp_(0.0, 1.0)

    def spec(self):
        return f"gaussian:{self.factor:g}" + ("" if self.factor_max is None else f"-{self.factor_max:g}")


@dataclass
class SaltPepper(Noise):
    """A fraction ``amount`` of pixels set to 0 (pepper) or 1 (salt), half each."""

    amount: float = 0.1
    name = "saltpepper"

    def __post_init__(self):
        if not 0.0 <= self.amount <= 1.0:
            raise ConfigError(f"expected a salt-and-pepper fraction in [0, 1], found {self.amount}")

    def __call__(self, x, generator=None):
        u = _rand(x.shape, generator, x.device, "rand")
        out = x.clone()
        out[u < self.amount / 2] = 0.0
        out[(u >= self.amount / 2) & (u < self.amount)] = 1.0
        return out

    def spec(self):
        return f"saltpepper:{self.amount:g}"


@dataclass
class Masking(Noise):
    """A fraction ``fraction`` of pixels set to 0 (masking noise, Vincent et al. 2008)."""

    fraction: float = 0.25
    name = "masking"

    def __post_init__(self):
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"expected a masking fraction in [0, 1], found {self.fraction}")

    def __call__(self, x, generator=None):
        keep = _rand(x.shape, generator, x.device, "rand") >= self.fraction
        return x * keep

    def spec(self):
        return f"masking:{self.fraction:g}"


@dataclass
class Shift(Noise):
    """Each image translated by (dy, dx) whole pixels, each drawn uniformly in [-pixels, pixels],
    the uncovered border filled with 0 (Fashion-MNIST's black background)."""

    pixels: int = 2
    name = "shift"

    def __post_init__(self):
        if not (isinstance(self.pixels, Real) and float(self.pixels).is_integer() and 0 <= self.pixels <= 64):
            raise ConfigError(f"expected a shift of 0 to 64 whole pixels, found {self.pixels}; e.g. shift:2")
        self.pixels = int(self.pixels)

    def offsets(self, n: int, generator=None, device=None) -> torch.Tensor:
        """(n, 2) integer (dy, dx), each uniform in [-pixels, pixels]."""
        k = self.pixels
        return (_rand((n, 2), generator, device or torch.device("cpu"), "rand") * (2 * k + 1)).floor().long() - k

    def __call__(self, x, generator=None):
        k = self.pixels
        if k == 0:
            return x.clone()
        n, c, h, w = x.shape
        d = self.offsets(n, generator, x.device)
        padded = F.pad(x, (k, k, k, k))
        rows = torch.arange(h, device=x.device) + k - d[:, :1]  # (n, h): out[y] = x[y - dy]
        cols = torch.arange(w, device=x.device) + k - d[:, 1:]  # (n, w)
        idx_n = torch.arange(n, device=x.device)[:, None, None, None]
        idx_c = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]

    def spec(self):
        return f"shift:{self.pixels}"


NOISES = {"none": Noise, "gaussian": Gaussian, "saltpepper": SaltPepper, "masking": Masking, "shift": Shift}
_ALIASES = {"salt-and-pepper": "saltpepper", "s&p": "saltpepper", "sp": "saltpepper", "mask": "masking"}


def parse_noise(text: str | Noise | None) -> Noise:
    """``"gaussian:0.2"``, ``"gaussian:0-0.5"``, ``"saltpepper:0.1"``, ``"masking:0.25"``, ``"shift:2"``, ``"none"``."""
    if isinstance(text, Noise):
        return text
    if text is None or str(text).strip().lower() in ("", "none"):
        return Noise()
    name, _, arg = str(text).strip().lower().partition(":")
    name = _ALIASES.get(name, name)
    if name not in NOISES:
        raise ConfigError(f"expected a noise of the form NAME:VALUE with NAME one of "
                          f"{', '.join(NOISES)}, found {text!r}; e.g. gaussian:0.2")
    if not arg:
        return NOISES[name]()
    try:
        if name == "gaussian" and "-" in arg.lstrip("-"):
            lo, hi = (float(v) for v in arg.split("-", 1))
            return Gaussian(lo, hi)
        value = float(arg)
    except ValueError:
        raise ConfigError(f"expected a number after '{name}:', found {arg!r}; e.g. gaussian:0.2") from None
    return NOISES[name](value)


def evaluation_noise(shape, seed: int = 0) -> torch.Tensor:
    """The fixed N(0, 1) draw of docs/protocols.md: ``torch.randn(shape, generator=Generator().manual_seed(0))``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=g)


def add_evaluation_noise(x: torch.Tensor, factor: float, noise: torch.Tensor | None = None) -> torch.Tensor:
    """``clip(x + factor * n, 0, 1)`` with the fixed evaluation draw ``n`` (docs/protocols.md)."""
    Gaussian(factor)  # checks the factor: a ConfigError for one outside [0, 5]
    if noise is None:
        noise = evaluation_noise(x.shape)
    return (x + factor * noise.to(x.device, x.dtype)).clamp(0.0, 1.0)
