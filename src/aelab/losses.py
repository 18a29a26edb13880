"""Loss functions: pure, each with its formula and its reduction.

Reduction, everywhere in aelab unless a docstring says otherwise: reconstruction losses
are the **mean over every pixel of the batch** (as Keras' ``mean_squared_error`` and
PyTorch's ``reduction="mean"``), so their size does not depend on the image size or the
batch size. Penalties on codes are summed over code units and averaged over the batch,
as written in their formulas. One exception: ``psnr`` is minus the mean over images of each
image's PSNR (the figure the denoising tables report), so it is in dB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError

RECONSTRUCTION_LOSSES = ("l1", "mse", "bce", "psnr")
PSNR_FLOOR = 1e-10  # the smallest per-image MSE the psnr loss sees (100 dB): a perfect image is no -inf


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """``l1``: mean |x - x_hat|; ``mse``: mean (x - x_hat)^2;
    ``bce``: mean -(x log x_hat + (1 - x) log(1 - x_hat)). Mean over all pixels of the batch.
    ``psnr``: mean over images of 10 log10(MSE_i) = -PSNR_i (dB, peak 1): the metric itself, which
    weighs an image's error by how small it already is (log), unlike the MSE."""
    if kind == "l1":
        return F.l1_loss(x_hat, x)
    if kind == "mse":
        return F.mse_loss(x_hat, x)
    if kind == "bce":
        return F.binary_cross_entropy(x_hat.clamp(1e-7, 1 - 1e-7), x)
    if kind == "psnr":
        mse = (x_hat - x).pow(2).flatten(1).mean(1)
        return (10.0 * torch.log10(mse.clamp_min(PSNR_FLOOR))).mean()
    raise ConfigError(f"unknown reconstruction loss {kind!r}; expected one of {', '.join(RECONSTRUCTION_LOSSES)}")
