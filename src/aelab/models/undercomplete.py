"""Undercomplete autoencoder (Goodfellow, Bengio & Courville 2016, "Deep Learning", section
14.1; Hinton & Salakhutdinov 2006, "Reducing the dimensionality of data with neural
networks"): a code smaller than the input, so the network must keep only what matters most.

    L = mean_pixels |x - g(f(x))|                         (L1, the default)
      or mean_pixels (x - g(f(x)))^2                      (``reconstruction="mse"``)
      or mean_pixels BCE(x, g(f(x)))                      (``reconstruction="bce"``)

With a linear 32-unit code (the default ``latent_dim=32``, ``code_activation="none"``) and
a linear one-layer net the optimum spans the PCA subspace (Baldi & Hornik 1989); the
nonlinear nets do better.

``invariance`` = w > 0 adds a term that asks the code not to move when the image moves by a
pixel or two (tangent propagation, Simard et al. 1992, with a finite translation instead of
the derivative along it)::

    L += w * mean_i |f(x_i) - f(s_i(x_i))|^2 / mean_i |f(x_i) - mean_j f(x_j)|^2

with s_i a translation by whole pixels (dy, dx), each uniform in [-K, K] (K =
``invariance_shift``; the uncovered border black, :class:`aelab.noise.Shift`). Dividing by
the spread of the batch's codes keeps the term from being met by shrinking the code. It
shapes neighbourhoods (images that differ by a shift get near codes) at the price of one more
encoder pass per step; the reconstruction keeps the code from forgetting the image.
"""

from __future__ import annotations

import math


from ..errors import ConfigError
from ..losses import reconstruction_loss
from ..noise import Shift
from .base import Autoencoder, register_model


@register_model("undercomplete")
class UndercompleteAutoencoder(Autoencoder):
    """Reconstruction loss only, through a bottleneck smaller than the input (checked)."""

    net_defaults = {"latent_dim": 32, "code_activation": "none"}

    def __init__(self, input_shape, net="conv", net_options=None, reconstruction: str = "l1",
                 invariance: float = 0.0,       # weight of the shift-invariance term (0: off)
                 invariance_shift: int = 1):    # its translations: whole pixels in [-K, K]
        super().__init__(input_shape, net=net, net_options=net_options, reconstruction=reconstruction)
        if isinstance(invariance, bool) or not isinstance(invariance, (int, float)) or not invariance >= 0:
            raise ConfigError(f"expected invariance a weight >= 0, found {invariance!r}; e.g. --option invariance=0.01")
        if isinstance(invariance_shift, bool) or not isinstance(invariance_shift, int) or invariance_shift < 1:
            raise ConfigError(f"expected invariance_shift a whole number of pixels >= 1, found {invariance_shift!r}; "
                              "e.g. --option invariance_shift=1")
        self.invariance = float(invariance)
        self.invariance_shift = int(invariance_shift)
        code, pixels = math.prod(self.code_shape), math.prod(self.input_shape)
        if code >= pixels:
            raise ConfigError(f"expected an undercomplete code (fewer units than the {pixels} input values), "
                              f"found {code}; lower latent_dim (e.g. --net-option latent_dim=32) or use the "
                              "sparse kind for a wide code")

    def loss(self, x_in, x_target):
        if not self.invariance:
            return super().loss(x_in, x_target)
        code = self.encode(x_in)
        rec = reconstruction_loss(self.decode(code), x_target, self.reconstruction)
        shifted = self.encode(Shift(self.invariance_shift)(x_in))
        code, shifted = code.flatten(1), shifted.flatten(1)
        spread = (code - code.mean(0)).pow(2).sum(1).mean().clamp_min(1e-12)
        inv = (code - shifted).pow(2).sum(1).mean() / spread
        return {"reconstruction": rec, "invariance": inv, "loss": rec + self.invariance * inv}
