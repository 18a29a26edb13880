"""The finished parts of an ``aelab evaluate``, kept in the run so that a rerun after a Ctrl-C reuses them.

Each finished (noise factor, method) result is written at once: its per-image PSNR and
SSIM and, at the gallery's noise factor, its images of the hardest test images go into
``RUN/evaluation.partial.npz``; its tuned parameter, tuning scores, seconds and summary go
into ``RUN/evaluation.partial.json`` with the settings they were measured with (a hash of
the model's weights, the data, the number of test images, the noise factors, the tuning,
the subset of slow baselines, the gallery). Both are written atomically, the arrays first,
and an entry counts only when both files hold it, so a kill at any moment leaves them
usable. A rerun with the same settings reuses the entries; any other settings, or a file
that is not what aelab wrote, start over. :meth:`Partial.finish` deletes both files.
Arrays are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from . import runs

PARTIAL_JSON, PARTIAL_NPZ = "evaluation.partial.json", "evaluation.partial.npz"
SEP = "::"  # in the names of the arrays: "0.2::tv::psnr::tv"


def weights_digest(run) -> str:
    """SHA-256 of the run's weights: a retrained model does not reuse the old model's results."""
    path = Path(run) / runs.WEIGHTS
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Partial:
    """The finished entries of one evaluation; ``get`` one, ``put`` one, ``finish`` at the end."""

    def __init__(self, run, settings: dict, log):
        self.run = Path(run)
        self.settings = json.loads(json.dumps(settings))  # as it reads back from JSON
        self.entries: dict[str, dict] = {}     # "factor::method" -> info (params, seconds, ...)
        self.arrays: dict[str, np.ndarray] = {}
        self._load(log)

    def __len__(self) -> int:
        return len(self.entries)

    def _load(self, log) -> None:
        json_path, npz_path = self.run / PARTIAL_JSON, self.run / PARTIAL_NPZ
        if not json_path.exists():
            return
        try:
            doc = json.loads(json_path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("settings") != self.settings:
                log(f"an interrupted evaluation with other settings is in {PARTIAL_JSON}; starting over")
                return
            with np.load(npz_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            entries = {k: v for k, v in doc["entries"].items()
                       if isinstance(v, dict) and all(a in arrays for a in v["arrays"])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
            log(f"ignoring {PARTIAL_JSON} ({type(exc).__name__}: {str(exc)[:80]}); starting over")
            return
        self.entries, self.arrays = entries, arrays
        if entries:
            log(f"reusing {len(entries)} finished results from an interrupted evaluation ({PARTIAL_JSON})")

    def get(self, factor: str, method: str, images: dict[str, int], gallery_shape=None):
        """``(per, gallery, info)`` of a finished entry, or None: ``per`` maps each method the
        entry measured to ``(psnr, ssim)`` per image, ``images`` says how many each must have,
        ``gallery`` its images of the hardest ones (``gallery_shape``, at the gallery's factor)."""
        info = self.entries.get(f"{factor}{SEP}{method}")
        if info is None:
            return None
        per, gallery = {}, {}
        for m, n in images.items():
            p, s = (self.arrays.get(SEP.join((factor, method, q, m))) for q in ("psnr", "ssim"))
            if p is None or s is None or p.shape != (n,) or s.shape != (n,):
                return None
            per[m] = (p, s)
            if gallery_shape is not None:
                g = self.arrays.get(SEP.join((factor, method, "gallery", m)))
                if g is None or g.shape != tuple(gallery_shape):
                    return None
                gallery[m] = g
        return per, gallery, info

    def put(self, factor: str, method: str, per: dict, gallery: dict | None, info: dict) -> None:
        """Keep a finished entry: the arrays first, then the JSON that makes it count."""
        names = []
        for m, (p, s) in per.items():
            for q, a in (("psnr", p), ("ssim", s)):
                names.append(SEP.join((factor, method, q, m)))
                self.arrays[names[-1]] = np.asarray(a)
        for m, g in (gallery or {}).items():
            names.append(SEP.join((factor, method, "gallery", m)))
            self.arrays[names[-1]] = np.asarray(g)
        self.entries[f"{factor}{SEP}{method}"] = {**info, "arrays": names}
        buf = io.BytesIO()
        np.savez(buf, **self.arrays)
        runs.atomic_write_bytes(self.run / PARTIAL_NPZ, buf.getvalue())
        runs.write_json(self.run / PARTIAL_JSON, {"settings": self.settings, "entries": self.entries})

    def finish(self) -> None:
        """The evaluation is complete: the partial files go (the JSON first, so the arrays alone never count)."""
        runs.discard(self.run / PARTIAL_JSON)
        runs.discard(self.run / PARTIAL_NPZ)
