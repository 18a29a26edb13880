"""Large images in overlapping tiles: a fully convolutional model cleans an image of any size
within a memory budget, and the seams do not show.

Each tile is a *core* of the output plus a *margin* of input on every side, at least the
network's receptive field (``model.field``, an upper bound its builder states); tiles start at
multiples of the network's stride (``model.align``), so every pooling and strided
convolution sees the same grid as on the whole image. The core of each tile's output is
therefore the whole image's output there, up to float rounding (tested within 1e-5), and the
cores tile the image exactly: nothing is blended.
"""

from __future__ import annotations

from typing import Callable

import torch

BUDGET_BYTES = 256 * 2 ** 20  # activations of one forward pass; a 4000x3000 photo runs in about 1 GB RSS


def margin(model) -> int:
    """The input each tile carries beyond its core: the receptive field, rounded up to the stride."""
    align = max(1, int(model.align))
    return -(-int(model.field) // align) * align


@torch.no_grad()
def bytes_per_pixel(model) -> float:
    """What one input pixel costs in activations in one forward pass (the sum of every layer's
    output, an upper bound on what is alive at once), measured on a small probe."""
    side = max(4 * model.align, 32)
    probe = torch.zeros(1, model.input_shape[0], side, side)
    total = 0

    def count(_module, _inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        model(probe)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return max(total, probe.numel() * 4) / (side * side)


def core_size(model, budget_bytes: int = BUDGET_BYTES) -> int:
    """The side of a tile's core so that one tile (core + margins) stays within ``budget_bytes``."""
    align, pad = max(1, int(model.align)), margin(model)
    side = int((budget_bytes / bytes_per_pixel(model)) ** 0.5)
    return max(align, (side - 2 * pad) // align * align)


def spans(size: int, core: int, pad: int) -> list[tuple[int, int, int, int]]:
    """Along one axis of ``size`` pixels: (window start, window end, core start, core end) per tile."""
    return [(max(0, start - pad), min(size, start + core + pad), start, min(size, start + core))
            for start in range(0, size, core)]


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, core: int, pad: int) -> torch.Tensor:
    """``fn`` applied to (N, C, H, W) ``x`` tile by tile (cores of ``core`` pixels, each with ``pad``
    pixels of context), stitched into one (N, C', H, W) output."""
    n, _, height, width = x.shape
    out = None
    for r0, r1, c0, c1 in spans(height, core, pad):
        for q0, q1, d0, d1 in spans(width, core, pad):
            y = fn(x[:, :, r0:r1, q0:q1])  # (N, C', r1 - r0, q1 - q0)
            if out is None:
                out = torch.empty((n, y.shape[1], height, width), dtype=y.dtype)
            out[:, :, c0:c1, d0:d1] = y[:, :, c0 - r0:c1 - r0, d0 - q0:d1 - q0]
    return out


__all__ = ["BUDGET_BYTES", "margin", "bytes_per_pixel", "core_size", "spans", "tiled"]
