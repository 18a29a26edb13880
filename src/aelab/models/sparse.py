"""Sparse autoencoder: a code that may be wider than the input (overcomplete), kept from
copying the input by a penalty on the code layer's activations a(h) = f(x).

Two penalties (``penalty=``):

- ``"l1"`` (Goodfellow, Bengio & Courville 2016, "Deep Learning", eq. 14.2 with a Laplace
  prior; Ranzato et al. 2007)::

      L = mean_pixels |x - x_hat| + lambda * mean_batch sum_i |a_i(h)|

  with a ReLU code by default, so inactive units are exactly zero;

- ``"kl"`` (Ng 2011, "Sparse autoencoder", CS294A lecture notes, section 2.3)::

      L = mean_pixels |x - x_hat| + beta * sum_j KL(rho || rho_hat_j)
      rho_hat_j = mean over the batch of a_j(h)          (a sigmoid activation, in (0, 1))
      KL(rho || rho_hat) = rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat))

  with a sigmoid code (required: rho_hat must be a probability).

``sparsity_weight`` is lambda or beta (by default the penalty's own, stored resolved),
``sparsity_target`` is rho. The "sparsity" term is
logged unweighted; "loss" = reconstruction + sparsity_weight * sparsity. Reductions as in
:mod:`aelab.losses`: the reconstruction is a mean over pixels, the penalty a sum over code
units (averaged over the batch for l1; the batch enters rho_hat for kl).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..losses import reconstruction_loss
from .base import Autoencoder, register_model

_EPS = 1e-6


def l1_penalty(a: torch.Tensor, sparsity_target: float = 0.0) -> torch.Tensor:
    """mean_batch sum_i |a_i|, for codes ``a`` of shape (N, D). ``sparsity_target`` is unused."""
    return a.abs().sum(1).mean()


def kl_penalty(a: torch.Tensor, sparsity_target: float = 0.05) -> torch.Tensor:
    """sum_j KL(rho || rho_hat_j), rho_hat_j = mean_batch a_j, for codes ``a`` (N, D) in (0, 1)."""
    rho = sparsity_target
    rho_hat = a.mean(0).clamp(_EPS, 1 - _EPS)  # (D,)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


# penalty name -> (function, its default code activation, its default weight). Measured on
# Fashion-MNIST with a dense 256-unit code: l1 1e-4 with the default L1 reconstruction left
# 91% of the activations near zero after 5 epochs, 0.4 dB below the undercomplete model;
# kl 3e-3 (with MSE and rho = 0.01) 94% after 10 epochs (see aelab.compare.ENTRIES).
PENALTIES = {"l1": (l1_penalty, "relu", 1e-4), "kl": (kl_penalty, "sigmoid", 3e-3)}


@register_model("sparse")
class SparseAutoencoder(Autoencoder):
    """Reconstruction plus an activity penalty on the code (l1 or kl); see the module docstring."""

    net_defaults = {"latent_dim": 256}

    def __init__(self, input_shape, net="conv", net_options=None, reconstruction: str = "l1",
                 penalty: str = "l1",              # "l1" (ReLU code) or "kl" (sigmoid code)
                 sparsity_weight: float | None = None,  # lambda (l1) or beta (kl); None = the penalty's default
                 sparsity_target: float = 0.05):   # rho, the target mean activation (kl only)
        if penalty not in PENALTIES:
            raise ConfigError(f"expected penalty one of {', '.join(PENALTIES)}, found {penalty!r}; "
                              "e.g. --option penalty=kl")
        if sparsity_weight is None:
            sparsity_weight = PENALTIES[penalty][2]
        if not sparsity_weight >= 0:
            raise ConfigError(f"expected sparsity_weight >= 0, found {sparsity_weight}")
        if not 0 < sparsity_target < 1:
            raise ConfigError(f"expected sparsity_target (rho) in (0, 1), found {sparsity_target}; e.g. 0.05")
        # the penalty's code activation, unless the user chose one; recorded in net_options
        net_options = {"code_activation": PENALTIES[penalty][1], **(net_options or {})}
        if penalty == "kl" and net_options["code_activation"] != "sigmoid":
            raise ConfigError(f"the kl penalty needs code activations in (0, 1), found code_activation="
                              f"{net_options['code_activation']!r}; use code_activation=sigmoid or penalty=l1")
        super().__init__(input_shape, net=net, net_options=net_options, reconstruction=reconstruction)
        self.penalty = penalty
        self.sparsity_weight = float(sparsity_weight)
        self.sparsity_target = float(sparsity_target)

    def loss(self, x_in, x_target):
        z = self.encode(x_in)                   # the code activations a(h)
        x_hat = self.decode(z)
        rec = reconstruction_loss(x_hat, x_target, self.reconstruction)
        sparsity = PENALTIES[self.penalty][0](z.flatten(1), self.sparsity_target)  # (N, D) -> scalar
        return {"reconstruction": rec, "sparsity": sparsity, "loss": rec + self.sparsity_weight * sparsity}
