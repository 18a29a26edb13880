"""Measuring a model: PSNR/SSIM of the noisy input and of the model's output at each
noise factor, with the fixed evaluation noise of PROTOCOLS.md."""

from __future__ import annotations

import torch

from .data import check_images
from .metrics import quality
from .noise import add_evaluation_noise, evaluation_noise

NOISE_FACTORS = (0.1, 0.2, 0.3, 0.5)


def apply_model(model, x: torch.Tensor, batch_size: int = 256, device=None) -> torch.Tensor:
    """``model(x)`` in batches, on the model's device, returned on the CPU.

    Convolutional models run on a channels-last copy (measured about 2x faster on the CPU;
    the caller's model is left as it was, even mid-training); batches of 256 kept the CPU
    caches warm.
    """
    import copy

    x = check_images(x, "images")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    convolutional = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    fmt = torch.channels_last if convolutional else torch.contiguous_format
    runner = copy.deepcopy(model).eval().to(memory_format=fmt) if convolutional else model
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            outs = [runner(x[i:i + batch_size].to(device).contiguous(memory_format=fmt)).float().cpu()
                    for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs).contiguous()


def denoising_quality(model, x: torch.Tensor, factors=NOISE_FACTORS, batch_size: int = 256) -> dict:
    """``{"0.2": {"noisy": {psnr, ssim}, "model": {psnr, ssim}}, ...}`` on the images ``x``."""
    x = check_images(x, "images")
    base = evaluation_noise(x.shape)
    out = {}
    for f in factors:
        x_noisy = add_evaluation_noise(x, f, base)
        x_hat = apply_model(model, x_noisy, batch_size)
        out[f"{f:g}"] = {"noisy": quality(x, x_noisy), "model": quality(x, x_hat)}
    return out


def hardest_images(model, x: torch.Tensor, factor: float, count: int = 10, batch_size: int = 1000):
    """The ``count`` images of ``x`` the model cleans worst at noise ``factor`` (fixed
    evaluation noise): their indices and PSNR after cleaning, lowest first, with the noisy
    and cleaned images -> ``(indices, psnr, x_noisy, x_hat)``."""
    from .metrics import psnr_per_image

    x = check_images(x, "images")
    x_noisy = add_evaluation_noise(x, factor)
    x_hat = apply_model(model, x_noisy, batch_size)
    scores = psnr_per_image(x, x_hat)
    order = torch.argsort(scores)[:count]
    return order, scores[order], x_noisy[order], x_hat[order]
