"""Weights in 8 bits, for the zoo's files (each under 2 MB): per-row symmetric quantisation.

A floating tensor w with at least ``min_values`` values is stored as two tensors::

    NAME#int8   q = round(w / s), int8 in [-127, 127]     (w's shape)
    NAME#scale  s = max |w_row| / 127, float32             (one per row: the first axis)

and read back as w ~ q * s, so each value is off by at most s / 2. Smaller tensors (biases,
GDN's parameters, tables) stay as they are. :func:`dequantize_state` is what every weights
file goes through on loading (:func:`aelab.runs.load_weights`): a file without such pairs
comes back unchanged.
"""

from __future__ import annotations

import torch

from .errors import ConfigError

INT8, SCALE = "#int8", "#scale"


def quantize_state(state: dict[str, torch.Tensor], min_values: int = 4096) -> dict[str, torch.Tensor]:
    """The state with every floating tensor of at least ``min_values`` values in 8 bits."""
    out = {}
    for name, w in state.items():
        if not w.is_floating_point() or w.numel() < min_values:
            out[name] = w
            continue
        rows = w.float().reshape(w.shape[0], -1) if w.ndim > 1 else w.float().reshape(1, -1)
        scale = rows.abs().amax(1) / 127.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: any scale
        q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
        out[name + INT8] = q.reshape(w.shape).contiguous()
        out[name + SCALE] = scale.contiguous()
    return out


def dequantize_state(state: dict[str, torch.Tensor], source: str = "the weights") -> dict[str, torch.Tensor]:
    """float32 tensors back from the pairs :func:`quantize_state` writes; other tensors unchanged."""
    out = {k: v for k, v in state.items() if not k.endswith((INT8, SCALE))}
    for key in state:
        if not key.endswith(INT8):
            continue
        name = key[:-len(INT8)]
        q, scale = state[key], state.get(name + SCALE)
        rows = q.shape[0] if q.ndim > 1 else 1
        if q.dtype != torch.int8 or scale is None or tuple(scale.shape) != (rows,):
            raise ConfigError(f"{source}: expected {name} as int8 values with one scale per row, found "
                              f"{q.dtype} values and {'no scale' if scale is None else f'scales of shape {tuple(scale.shape)}'}; "
                              "the file is damaged, restore it")
        out[name] = (q.float().reshape(rows, -1) * scale.float()[:, None]).reshape(q.shape)
    orphans = [k for k in state if k.endswith(SCALE) and k[:-len(SCALE)] + INT8 not in state]
    if orphans:
        raise ConfigError(f"{source}: found the scale {orphans[0]} without its int8 values; the file is damaged, "
                          "restore it")
    return out
