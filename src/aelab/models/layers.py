"""Layers every learned codec shares (as CompressAI's ``ops/`` and ``layers/``): the lower bound
with Balle's gradient, a non-negative parameter, and GDN (Balle, Laparra & Simoncelli 2016,
"Density modeling of images using a generalized normalization transformation").

They sit below the codec and its entropy models, which both import them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_PEDESTAL = 2.0 ** -36


class LowerBound(torch.autograd.Function):
    """max(v, bound), passing the gradient where v >= bound or where descent raises v
    (Balle's lower_bound op): a parameter pinned at its bound can still leave it."""

    @staticmethod
    def forward(ctx, v, bound):
        ctx.save_for_backward(v)
        ctx.bound = bound
        return v.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        pass_through = (v >= ctx.bound) | (grad < 0)
        return grad * pass_through.to(grad.dtype), None


class NonNegative(nn.Module):
    """A non-negative parameter stored as p = sqrt(value + pedestal): value = max(p, sqrt(minimum
    + pedestal))^2 - pedestal >= minimum, with gradients that do not vanish near zero."""

    def __init__(self, initial: torch.Tensor, minimum: float = 0.0):
        super().__init__()
        self.minimum = float(minimum)
        self.param = nn.Parameter(torch.sqrt(initial.clamp_min(minimum) + _PEDESTAL))

    def forward(self) -> torch.Tensor:
        bound = math.sqrt(self.minimum + _PEDESTAL)
        return LowerBound.apply(self.param, bound) ** 2 - _PEDESTAL


class GDN(nn.Module):
    """Generalised divisive normalisation over channels (``inverse``: multiply instead):

        v_i = u_i / sqrt(beta_i + sum_j gamma_ij u_j^2)        (IGDN: u_i * sqrt(...))

    at every position; initialised to beta = 1, gamma = 0.1 I (Balle's defaults)."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.beta = NonNegative(torch.ones(channels), minimum=beta_min)
        self.gamma = NonNegative(gamma_init * torch.eye(channels))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        c = u.shape[1]
        norm = F.conv2d(u * u, self.gamma().view(c, c, 1, 1), self.beta())  # beta_i + sum_j gamma_ij u_j^2
        return u * torch.sqrt(norm) if self.inverse else u * torch.rsqrt(norm)


__all__ = ["LowerBound", "NonNegative", "GDN"]
