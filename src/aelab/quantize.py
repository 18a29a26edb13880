"""Weights in 8 bits or fewer, for the zoo's files (each under 2 MB): per-row symmetric quantisation.

A floating tensor w with at least ``min_values`` values, quantised to b bits (2 <= b <= 8), is
stored with its per-row scale s = max |w_row| / m, m = 2^(b-1) - 1, and read back as w ~ q * s,
so each value is off by at most s / 2::

    NAME#int8   q = round(w / s), int8 in [-127, 127], w's shape        (b = 8)
    NAME#int4   the values q + m in b bits each, packed little-end first  (b < 8; here b = 4)
                into bytes (uint8, one dimension)
    NAME#shape  w's shape, int64                                          (b < 8)
    NAME#scale  s, float32, one per row (the first axis)

Smaller tensors (biases, GDN's parameters, tables) stay as they are. A spec names the bits:
``"int8"``, or a default and others for the tensors whose names start with a prefix, as in
``"int8,decoder.=int4"`` (the longest matching prefix wins). :func:`dequantize_state` is what
every weights file goes through on loading (:func:`aelab.runs.load_weights`): a file without such
tensors comes back unchanged.
"""

from __future__ import annotations

import math
import re

import torch

from .errors import ConfigError

INT8, SCALE, SHAPE = "#int8", "#scale", "#shape"
_PACKED = re.compile(r"#int([2-7])$")
_SPEC = re.compile(r"int([2-8])")


def parse_spec(spec: str) -> tuple[int, dict[str, int]]:
    """``"int8,decoder.=int4"`` -> (8, {"decoder.": 4})."""
    default, prefixes = None, {}
    for part in spec.split(","):
        prefix, _, bits = part.rpartition("=")
        found = _SPEC.fullmatch(bits.strip())
        if found is None or (not prefix and default is not None) or (prefix and default is None):
            raise ConfigError(f"expected weights like 'int8' or 'int8,decoder.=int4' (2 to 8 bits, the default "
                              f"first), found {spec!r}")
        if prefix:
            prefixes[prefix.strip()] = int(found.group(1))
        else:
            default = int(found.group(1))
    return default, prefixes


def _bits_for(name: str, default: int, prefixes: dict[str, int]) -> int:
    matches = [p for p in prefixes if name.startswith(p)]
    return prefixes[max(matches, key=len)] if matches else default


def _pack(u: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative integers below 2**bits -> their bits, little-end first, in bytes."""
    flat = u.reshape(-1).to(torch.int32)
    stream = ((flat[:, None] >> torch.arange(bits, dtype=torch.int32)) & 1).reshape(-1)
    stream = torch.cat([stream, stream.new_zeros(-len(stream) % 8)])
    return (stream.reshape(-1, 8) << torch.arange(8, dtype=torch.int32)).sum(1).to(torch.uint8)


def _unpack(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    stream = ((packed.to(torch.int32)[:, None] >> torch.arange(8, dtype=torch.int32)) & 1).reshape(-1)
    return (stream[:count * bits].reshape(count, bits) << torch.arange(bits, dtype=torch.int32)).sum(1)


def quantize_state(state: dict[str, torch.Tensor], min_values: int = 4096, spec: str = "int8") -> dict[str, torch.Tensor]:
    """The state with every floating tensor of at least ``min_values`` values in the bits ``spec`` gives."""
    default, prefixes = parse_spec(spec)
    out = {}
    for name, w in state.items():
        if not w.is_floating_point() or w.numel() < min_values:
            out[name] = w
            continue
        bits = _bits_for(name, default, prefixes)
        top = 2 ** (bits - 1) - 1
        rows = w.float().reshape(w.shape[0], -1) if w.ndim > 1 else w.float().reshape(1, -1)
        scale = rows.abs().amax(1) / top
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: any scale
        q = torch.round(rows / scale[:, None]).clamp(-top, top)
        if bits == 8:
            out[name + INT8] = q.to(torch.int8).reshape(w.shape).contiguous()
        else:
            out[name + f"#int{bits}"] = _pack(q.to(torch.int32) + top, bits)
            out[name + SHAPE] = torch.tensor(list(w.shape), dtype=torch.int64)
        out[name + SCALE] = scale.contiguous()
    return out


def _damaged(source: str, name: str, found: str) -> ConfigError:
    return ConfigError(f"{source}: expected {name} as quantised values with one scale per row, found {found}; "
                       "the file is damaged, restore it")


def dequantize_state(state: dict[str, torch.Tensor], source: str = "the weights") -> dict[str, torch.Tensor]:
    """float32 tensors back from what :func:`quantize_state` writes; other tensors unchanged."""
    out = {k: v for k, v in state.items() if not k.endswith((INT8, SCALE, SHAPE)) and not _PACKED.search(k)}
    for key, q in state.items():
        packed = _PACKED.search(key)
        if not key.endswith(INT8) and packed is None:
            continue
        name = key[:key.rindex("#")]
        scale = state.get(name + SCALE)
        if packed is None:
            if q.dtype != torch.int8:
                raise _damaged(source, name, f"{q.dtype} values")
            shape, values = tuple(q.shape), q.float()
        else:
            bits, shape_t = int(packed.group(1)), state.get(name + SHAPE)
            if q.dtype != torch.uint8 or q.ndim != 1 or shape_t is None or shape_t.ndim != 1:
                raise _damaged(source, name, f"{q.dtype} values {'without' if shape_t is None else 'with'} a shape")
            shape = tuple(int(d) for d in shape_t)
            count = math.prod(shape)
            if min(shape, default=0) < 0 or len(q) != (count * bits + 7) // 8:
                raise _damaged(source, name, f"{len(q)} bytes for {count} values of {bits} bits")
            values = (_unpack(q, bits, count) - (2 ** (bits - 1) - 1)).float()
        rows = shape[0] if len(shape) > 1 else 1
        if scale is None or tuple(scale.shape) != (rows,):
            raise _damaged(source, name, "no scale" if scale is None else f"scales of shape {tuple(scale.shape)}")
        out[name] = (values.reshape(rows, -1) * scale.float()[:, None]).reshape(shape)
    stems = {k[:k.rindex("#")] for k in state if k.endswith(INT8) or _PACKED.search(k)}
    orphans = [k for k in state if k.endswith((SCALE, SHAPE)) and k[:k.rindex("#")] not in stems]
    if orphans:
        raise ConfigError(f"{source}: found {orphans[0]} without its quantised values; the file is damaged, "
                          "restore it")
    return out
