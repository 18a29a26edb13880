"""Rate-distortion curves: the Pareto frontier and the quality at equal bytes per image.

A curve is a list of points ``{"bytes_per_image", "psnr", "ssim", ...}`` as
:func:`aelab.compression.rate_distortion` measures them; the tables
(:mod:`aelab.compression.tables`) and the figure (:func:`aelab.plots.rd_figures`) read them
the same way.
"""

from __future__ import annotations

import math

import numpy as np

TARGETS = (50, 100, 200, 300)      # bytes per image of the headline table
LEARNED = "aelab"                  # the key of the learned codec's rows


def pareto_front(points: list[dict], key: str = "psnr") -> list[dict]:
    """The points no other point beats with as few bytes or fewer, by bytes per image."""
    front: list[dict] = []
    for p in sorted(points, key=lambda p: (p["bytes_per_image"], -p[key])):
        if not front or p[key] > front[-1][key]:  # at equal bytes the best comes first
            front.append(p)
    return front


def at_bytes(points: list[dict], target: float, key: str = "psnr") -> dict:
    """``key`` at ``target`` bytes per image, interpolated linearly in log(bytes) between the
    two nearest points of the curve's Pareto frontier: ``{"value": v}``, ``{"impossible":
    smallest}`` when the smallest point is bigger than the target, ``{"beyond": largest}``
    past the sweep. A point that another point beats with fewer bytes (e.g. a less trained
    codec run) is dropped, as on an operational rate-distortion curve: at that budget the
    smaller, better point is what one would use, so between the frontier's last point and
    the largest measured one the value is that last point's."""
    pts = sorted((p for p in points if p.get(key) is not None), key=lambda p: p["bytes_per_image"])
    if not pts:
        return {"none": True}
    smallest, largest = pts[0]["bytes_per_image"], pts[-1]["bytes_per_image"]
    if target < smallest - 1e-9:
        return {"impossible": float(smallest)}
    if target > largest + 1e-9:
        return {"beyond": float(largest)}
    front = pareto_front(pts, key)  # equal byte counts keep the best value
    ub = np.array([p["bytes_per_image"] for p in front], dtype=np.float64)
    best = np.array([p[key] for p in front], dtype=np.float64)
    if target > ub[-1]:  # past the frontier but inside the sweep: the frontier's best needs fewer bytes
        return {"value": float(best[-1])}
    return {"value": float(np.interp(math.log(target), np.log(ub), best))}



__all__ = ["TARGETS", "LEARNED", "pareto_front", "at_bytes"]
