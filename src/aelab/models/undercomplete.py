"""Undercomplete autoencoder (Goodfellow, Bengio & Courville 2016, "Deep Learning", section
14.1; Hinton & Salakhutdinov 2006, "Reducing the dimensionality of data with neural
networks"): a code smaller than the input, so the network must keep only what matters most.

    L = mean_pixels |x - g(f(x))|                         (L1, the default)
      or mean_pixels (x - g(f(x)))^2                      (``reconstruction="mse"``)
      or mean_pixels BCE(x, g(f(x)))                      (``reconstruction="bce"``)

With a linear 32-unit code (the default ``latent_dim=32``, ``code_activation="none"``) and
a linear one-layer net the optimum spans the PCA subspace (Baldi & Hornik 1989); the
nonlinear nets do better.
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from .base import Autoencoder, register_model


@register_model("undercomplete")
class UndercompleteAutoencoder(Autoencoder):
    """Reconstruction loss only, through a bottleneck smaller than the input (checked)."""

    net_defaults = {"latent_dim": 32, "code_activation": "none"}

    def __init__(self, input_shape, net="conv", net_options=None, reconstruction: str = "l1"):
        super().__init__(input_shape, net=net, net_options=net_options, reconstruction=reconstruction)
        code, pixels = math.prod(self.code_shape), math.prod(self.input_shape)
        if code >= pixels:
            raise ConfigError(f"expected an undercomplete code (fewer units than the {pixels} input values), "
                              f"found {code}; lower latent_dim (e.g. --net-option latent_dim=32) or use the "
                              "sparse kind for a wide code")
