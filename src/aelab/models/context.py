"""The codec's channel-conditional entropy model (``--option prior=context`` of :mod:`aelab.models.codec`).

Minnen & Singh 2020 ("Channel-wise autoregressive entropy models for learned image
compression"), without a hyperprior: the latent's channels are cut into ``slices`` equal
slices. Slice 0 is coded under the element density of the codec (one learned density per
element); each later slice k under a Gaussian per element whose mean and scale a small
network predicts from the slices 0..k-1, already decoded (every position of them: the
context is the whole of the earlier channels, not a causal neighbourhood)::

    mu_k, s_k = f_k(y_hat[:, :start_k]) + b_k        (b_k: a learned bias per element)
    sigma_k = SCALE_MIN * 2 ** (s_k / STEPS_PER_OCTAVE)
    p(y_hat) = Phi((y_hat - mu + 1/2) / sigma) - Phi((y_hat - mu - 1/2) / sigma)

f_k: Conv3x3 - ReLU - Conv3x3 - ReLU - Conv1x1 (``hidden`` channels). On Fashion-MNIST the
first slice says where the garment is; the later slices then cost little where it is not.

Coding (:mod:`aelab.compression.stream`) needs the encoder and the decoder to compute the
very same mean and scale on any machine. :meth:`ChannelContext.exact` evaluates f_k in
exact arithmetic: weights rounded to multiples of 2^-WEIGHT_BITS, activations to multiples
of 2^-ACTIVATION_BITS and clamped, so every product and sum is a float64 integer multiple
of a power of two below 2^53 and comes out the same in any order of summation (BLAS,
threads, CPU). The scale is then an integer index into :func:`scale_table`, whose values
are decimal constants; the mean is the exact float64. ``forward`` (training) is the float32
network with continuous scales; the two differ by the rounding only (measured in the tests).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LowerBound

SCALE_MIN = 0.11          # the smallest Gaussian scale (as CompressAI's)
STEPS_PER_OCTAVE = 8      # the coded scales: SCALE_MIN * 2 ** (k / 8), k = 0 .. SCALE_LEVELS - 1
SCALE_LEVELS = 96         # up to ~400, beyond any latent of a trained codec
WEIGHT_BITS = 12          # exact weights: multiples of 2^-12, |w| <= 2^WEIGHT_LIMIT
WEIGHT_LIMIT = 4
ACTIVATION_BITS = 8       # exact activations: multiples of 2^-8, |a| <= 2^ACTIVATION_LIMIT
ACTIVATION_LIMIT = 16
MEAN_LIMIT = 15           # |mean| <= 2^15, the latents' own limit


def scale_table() -> tuple[float, ...]:
    """The coded scales, as 6-significant-digit decimals (the same floats on every machine)."""
    return tuple(float(f"{SCALE_MIN * 2 ** (k / STEPS_PER_OCTAVE):.6g}") for k in range(SCALE_LEVELS))


def gaussian_likelihood(v: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The mass of N(mu, sigma^2) on [v - 1/2, v + 1/2], on the side of the mean where it does not cancel."""
    d = (v - mu).abs()
    s = LowerBound.apply(sigma, SCALE_MIN) * math.sqrt(2.0)
    return 0.5 * torch.erfc((d - 0.5) / s) - 0.5 * torch.erfc((d + 0.5) / s)


def _exact_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv2d (stride 1, 'same' padding) as unfold + matmul in float64: exact on exact inputs."""
    n, _, h, w = x.shape
    k = weight.shape[-1]
    cols = F.unfold(x, k, padding=k // 2)                     # (N, C k k, H W): copies only
    out = torch.matmul(weight.flatten(1), cols) + bias[:, None]  # exact: dyadic values, sums < 2^53
    return out.reshape(n, -1, h, w)


def _dyadic(t: torch.Tensor, bits: int, limit: int) -> torch.Tensor:
    """t rounded to a multiple of 2^-bits and clamped to +-2^limit, float64 (exact operations)."""
    scale = float(2 ** bits)
    return torch.round(t.double() * scale).clamp(-(2.0 ** (limit + bits)), 2.0 ** (limit + bits)) / scale


class ChannelContext(nn.Module):
    """Means and scales of slices 1..S-1 from the slices before them (see the module docstring)."""

    def __init__(self, channels: int, spatial: tuple[int, int], slices: int = 4, hidden: int = 64):
        super().__init__()
        size = channels // slices
        self.bounds = [(k * size, (k + 1) * size) for k in range(slices)]
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, hidden, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(hidden, 2 * (b - a), 1))
            for a, b in self.bounds[1:])
        for net in self.nets:  # start as the bias alone: every element its own Gaussian
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)
        # per element: the mean's bias, then the log-scale's (in steps of 1/STEPS_PER_OCTAVE octave)
        self.bias = nn.Parameter(torch.zeros(2, channels - size, *spatial))
        with torch.no_grad():
            self.bias[1].fill_(STEPS_PER_OCTAVE * math.log2(2.0 / SCALE_MIN))  # sigma 2 at the start

    @property
    def first(self) -> int:
        """The channels of slice 0 (coded under the element density)."""
        return self.bounds[0][1]

    def forward(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) decoded latents -> mean and scale of channels first..C-1, each (N, C - first, H, W)."""
        out = torch.cat([net(y_hat[:, :a]).unflatten(1, (2, b - a)) for net, (a, b) in zip(self.nets, self.bounds[1:])],
                        dim=2) + self.bias
        return out[:, 0], SCALE_MIN * torch.exp2(out[:, 1] / STEPS_PER_OCTAVE)

    @torch.no_grad()
    def exact(self, y_hat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slice ``k``'s (k >= 1) mean (float64) and scale index (int64) from the integer latents
        of the earlier slices, ``y_hat`` (N, >= start of slice k, H, W): the same bits on any machine."""
        a, b = self.bounds[k]
        h = y_hat[:, :a].double().cpu()
        layers = [m for m in self.nets[k - 1] if isinstance(m, nn.Conv2d)]
        for i, conv in enumerate(layers):
            w = _dyadic(conv.weight.detach().cpu(), WEIGHT_BITS, WEIGHT_LIMIT)
            bias = _dyadic(conv.bias.detach().cpu(), WEIGHT_BITS, WEIGHT_LIMIT)
            h = _exact_conv(h, w, bias)
            if i < len(layers) - 1:
                h = _dyadic(torch.relu(h), ACTIVATION_BITS, ACTIVATION_LIMIT)
        h = h.unflatten(1, (2, b - a))
        offset = a - self.first
        bias = _dyadic(self.bias.detach().cpu()[:, offset:offset + b - a], WEIGHT_BITS, WEIGHT_LIMIT + 8)
        mu = _dyadic(h[:, 0] + bias[0], ACTIVATION_BITS, MEAN_LIMIT)
        index = torch.round(h[:, 1] + bias[1]).clamp(0, SCALE_LEVELS - 1).long()
        return mu, index
