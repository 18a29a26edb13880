"""Real photos with no download: the natural photographs that ship inside scikit-image and
scikit-learn, split once and for all into whole photos for training and held-out ones.

The split (:data:`TRAIN`, :data:`TEST`) never puts a crop of a test photo in training: a
test photo is held out whole. :func:`write_split` writes the two folders as 8-bit PNG files
(``train/`` and ``test/``, colour photos in RGB, grey ones in grey), which ``--data`` takes
with ``--crop H,W``; ``grey=True`` writes every photo in grey (ITU-R 601 luma), for a grey
model. Nothing is resized or recoloured otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError, DataNotFoundError
from .images import load_image, png_bytes

# name -> (package, file inside the package's data folder)
PHOTOS = {
    "astronaut": ("skimage", "astronaut.png"), "brick": ("skimage", "brick.png"),
    "camera": ("skimage", "camera.png"), "chelsea": ("skimage", "chelsea.png"),
    "coffee": ("skimage", "coffee.png"), "coins": ("skimage", "coins.png"),
    "grass": ("skimage", "grass.png"), "gravel": ("skimage", "gravel.png"),
    "hubble": ("skimage", "hubble_deep_field.jpg"), "ihc": ("skimage", "ihc.png"),
    "moon": ("skimage", "moon.png"), "motorcycle_left": ("skimage", "motorcycle_left.png"),
    "motorcycle_right": ("skimage", "motorcycle_right.png"), "retina": ("skimage", "retina.jpg"),
    "rocket": ("skimage", "rocket.jpg"), "clock": ("skimage", "clock_motion.png"),
    "china": ("sklearn", "china.jpg"), "flower": ("sklearn", "flower.jpg"),
}
# held out whole: four colour photos and two grey ones, of the kinds the training set has
TEST = ("astronaut", "coffee", "china", "chelsea", "camera", "moon")
TRAIN = tuple(name for name in PHOTOS if name not in TEST)
COLOUR_TEST = ("astronaut", "coffee", "china", "chelsea")  # the held-out colour photos (a colour model's test)


def photo_path(name: str) -> Path:
    """Where photo ``name`` lies inside its package."""
    package, filename = PHOTOS[name]
    if package == "skimage":
        import skimage  # heavy: only to find its data folder

        folder = Path(skimage.__file__).parent / "data"
    else:
        import sklearn.datasets  # heavy: only to find its data folder

        folder = Path(sklearn.datasets.__file__).parent / "images"
    path = folder / filename
    if not path.is_file():
        raise DataNotFoundError(f"expected the photo {name} at {path}, found nothing; reinstall "
                                f"{'scikit-image' if package == 'skimage' else 'scikit-learn'}")
    return path


def load_photo(name: str, grey: bool = False) -> np.ndarray:
    """Photo ``name`` as float32 in [0, 1]: (H, W) grey or (H, W, 3) colour (``grey``: luma)."""

    a = load_image(photo_path(name))
    if grey and a.ndim == 3:
        a = (a @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
    return a


def write_split(out, grey: bool = False) -> dict[str, list[Path]]:
    """Write ``out/train/NAME.png`` and ``out/test/NAME.png`` for every photo; return the paths.
    A file already there is left alone when it holds the same bytes, else refused (nothing
    is written then): aelab never writes over a file it did not write."""
    import torch  # heavy: only to write the PNG files

    from .runs import atomic_write_bytes  # the run layer sits above the data: only when writing

    out = Path(out)
    files = {}
    for split, names in (("train", TRAIN), ("test", TEST)):
        for name in names:
            a = load_photo(name, grey)
            chw = torch.from_numpy(a[None] if a.ndim == 2 else np.transpose(a, (2, 0, 1)).copy())
            files[out / split / f"{name}.png"] = png_bytes(chw)
    other = next((p for p, data in files.items() if p.exists() and (not p.is_file() or p.read_bytes() != data)), None)
    if other is not None:
        raise ConfigError(f"expected {out} to hold nothing of its own under the photos' names, found {other} with "
                          "other content; choose another --out (aelab does not write over it)")
    for path, data in files.items():
        if not path.exists():
            atomic_write_bytes(path, data)
    return {split: [p for p in files if p.parent.name == split] for split in ("train", "test")}


SIGMAS = (15, 25, 50)  # the levels photo denoisers are compared at, of 255


def noisy_photo(name: str, sigma: float, grey: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) photo ``name`` as (C, H, W) float32 in [0, 1]: noisy = clip(clean + sigma/255 *
    N(0, 1)), the noise drawn from a generator seeded by the photo and sigma (the same draw every
    time, for every method)."""
    import torch  # heavy: the noise is torch's, as in training

    a = load_photo(name, grey)
    clean = a[None] if a.ndim == 2 else np.ascontiguousarray(np.transpose(a, (2, 0, 1)))
    seed = 1_000 * (sorted(PHOTOS).index(name) + 1) + int(round(sigma * 10))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)).numpy()
    return clean, np.clip(clean + np.float32(sigma / 255.0) * noise, 0.0, 1.0).astype(np.float32)


def photo_psnr(clean: np.ndarray, x_hat: np.ndarray) -> float:
    """PSNR in dB of one image in [0, 1] (data range 1)."""
    mse = float(np.mean((clean.astype(np.float64) - np.clip(x_hat, 0, 1).astype(np.float64)) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-20)))


def denoising_scores(denoise, sigmas=SIGMAS, names=TEST, grey: bool = False) -> dict[str, dict[str, float]]:
    """PSNR of ``denoise(noisy (C, H, W), sigma) -> (C, H, W)`` on each held-out photo at each sigma,
    and the mean over photos: ``{"25": {"astronaut": 30.1, ..., "mean": 29.4}, ...}``."""
    out = {}
    for sigma in sigmas:
        row = {}
        for name in names:
            clean, noisy = noisy_photo(name, sigma, grey)
            row[name] = round(photo_psnr(clean, denoise(noisy, sigma)), 4)
        row["mean"] = round(float(np.mean([row[n] for n in names])), 4)
        out[f"{sigma:g}"] = row
    return out


__all__ = ["PHOTOS", "TRAIN", "TEST", "COLOUR_TEST", "SIGMAS", "photo_path", "load_photo", "write_split", "noisy_photo",
           "photo_psnr", "denoising_scores"]
