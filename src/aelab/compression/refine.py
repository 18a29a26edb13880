"""The encoder's search: latents chosen for each image, not only the encoder's guess (``aelab compress --refine N``).

The analysis transform is trained to give good latents on average (the amortisation gap of
Cremer et al. 2018); for one image, nearby integers can cost fewer bits for a better picture.
:func:`refine_latents` starts from ``encode(x)`` and takes ``steps`` Adam steps on the
codec's own training objective, bits / pixels + lambda * 255^2 * MSE, through stochastic
Gumbel annealing (SGA, Yang, Marino & Mandt 2020, "Improving inference for neural image
compression"): each latent y is a soft mix of its floor and ceiling, their weights
softmax(logits + Gumbel noise) with the logits -atanh(r) / tau (down) and -atanh(1 - r) / tau
(up), r = y - floor(y); tau falls linearly from 0.5 to 0.05, so the search ends near the
integers it will be rounded to. The decoder and the stream are unchanged: any decoder reads the result.

Each image keeps the refined integers only where they lower its objective against the
encoder's own (measured on the integers the stream codes), so no image is worse off by it.
Cost: ``steps`` forward and backward passes of the whole codec per image (a training step
without the weights' gradients); the figures a card quotes say their ``--refine``.
"""

from __future__ import annotations

import torch

TAU_START, TAU_END = 0.5, 0.05   # the Gumbel temperature, falling linearly over the steps


def _objective(model, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per image: bits / pixels + lambda * 255^2 * MSE (the codec's training loss, per image)."""
    pixels = model.input_shape[1] * model.input_shape[2]
    mse = (model.decode(y) - x).pow(2).flatten(1).mean(1)
    return model.latent_bits(y) / pixels + model.lmbda * 255.0 ** 2 * mse


def _soft_round(y: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """SGA: floor(y) + the up-weight of a Gumbel-softmax draw between rounding down and up (module docstring)."""
    low = torch.floor(y.detach())
    r = (y - low).clamp(1e-4, 1 - 1e-4)
    logits = torch.stack([-torch.atanh(r), -torch.atanh(1 - r)], -1) / tau
    u = torch.rand(logits.shape, generator=generator).clamp_min(1e-9)
    return low + torch.softmax(logits - torch.log(-torch.log(u)), -1)[..., 1]


def refine_latents(model, x: torch.Tensor, steps: int, lr: float = 0.03, seed: int = 0) -> torch.Tensor:
    """Integer latents (float, as ``model.quantize`` gives) for the images ``x`` (N, C, H, W),
    each no worse by the codec's objective than ``quantize(encode(x))``. ``model`` in eval mode."""
    with torch.no_grad():
        y0 = model.encode(x)
        start = model.quantize(y0)
    if steps <= 0:
        return start
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode(False), torch.enable_grad():  # a search, whatever mode the caller is in
        x, y = x.clone(), y0.clone().requires_grad_(True)
        opt = torch.optim.Adam([y], lr=lr)
        for i in range(steps):
            tau = TAU_START + (TAU_END - TAU_START) * i / max(steps - 1, 1)
            loss = _objective(model, _soft_round(y, tau, generator), x).sum()
            (grad,) = torch.autograd.grad(loss, y)   # the latents' gradient only, not the weights'
            y.grad = grad
            opt.step()
    with torch.no_grad():
        refined = model.quantize(y.detach())
        better = _objective(model, refined, x) < _objective(model, start, x)
        return torch.where(better.view(-1, *[1] * (start.dim() - 1)), refined, start)
