"""Classical denoisers to measure the autoencoders against, as scikit-learn transformers.

Each baseline is a small class registered in :data:`BASELINES` with
:func:`register_baseline`. scikit-learn's conventions: ``__init__`` only stores its
arguments, ``fit(x_noisy, x_clean)`` learns and returns ``self``, learned attributes end
in ``_``, ``transform(x_noisy)`` returns the cleaned images. Images are float32 NCHW in
[0, 1], as tensors or arrays; ``transform`` answers in the type it was given.

Tuning: a baseline with a ``grid`` tries each value on the training pairs given to
``fit`` and keeps the one with the best mean PSNR (``param_``, with every score in
``scores_``). Never fit on the test set. Strengths that depend on the noise are
multiples of the noise std estimated per image, sigma_hat = ``skimage.restoration.
estimate_sigma`` (Donoho & Johnstone's wavelet MAD): because of the clip at 0 and 1 most
Fashion-MNIST pixels carry less noise than the nominal factor, and the estimate follows.

- ``gaussian``: Gaussian filter, std (pixels) tuned;
- ``median``: 3x3 median filter (nothing to tune);
- ``tv``: total variation, Chambolle 2004, "An algorithm for total variation minimization
  and applications": min_u ||u - x||^2 / 2 + w TV(u), w = k sigma_hat, k tuned;
- ``wavelet``: wavelet shrinkage with BayesShrink thresholds (Chang, Yu & Vetterli 2000),
  T = sigma^2 / sigma_x per sub-band, sigma = k sigma_hat, k tuned;
- ``nlmeans``: non-local means (Buades, Coll & Morel 2005), patch 5x5, search 13x13,
  h = k sigma_hat, k tuned;
- ``bm3d``: BM3D (Dabov et al. 2007, PyPI ``bm3d``, optional extra ``aelab[bm3d]``),
  sigma_psd = k sigma_hat with k = 1 (slow: ~0.4 s per 28x28 image, so no tuning);
- ``pca``: projection on the first k principal components of clean training images
  (x_hat = mu + W_k W_k^T (x - mu)), k tuned on held-out pairs.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .errors import ConfigError, DataError
from .optional import NeedsOptional
from .registry import registrar

BASELINES: dict[str, type["Baseline"]] = {}


register_baseline = registrar(BASELINES, "name")  # @register_baseline(name): for ``evaluate`` and the CLI


def _as_array(x, what: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 4:
        raise DataError(f"expected {what} as (N, C, H, W), found shape {a.shape}; add the batch and channel axes")
    if not np.issubdtype(a.dtype, np.floating) or (a.size and (a.min() < 0 or a.max() > 1)):
        raise DataError(f"expected {what} as floats in [0, 1], found {a.dtype} in "
                        f"[{a.min() if a.size else 0}, {a.max() if a.size else 0}]; divide 8-bit images by 255")
    return a.astype(np.float32, copy=False)


def _per_image(fn, x: np.ndarray) -> np.ndarray:
    """Apply ``fn(image (H, W) or (H, W, C), sigma_hat)`` to each image of an NCHW batch."""
    from skimage.restoration import estimate_sigma  # heavy: scikit-image, loaded on first use

    out = np.empty_like(x)
    c = x.shape[1]
    for i, img in enumerate(x):
        im = img[0] if c == 1 else np.moveaxis(img, 0, -1)
        axis = None if c == 1 else -1
        sigma = float(np.mean(estimate_sigma(im, channel_axis=axis)))
        res = fn(im.astype(np.float64), max(sigma, 1e-4), axis)
        out[i] = res[None] if c == 1 else np.moveaxis(res, -1, 0)
    return np.clip(out, 0.0, 1.0)


def _mean_psnr(x: np.ndarray, x_hat: np.ndarray) -> float:
    mse = ((x.astype(np.float64) - x_hat) ** 2).reshape(len(x), -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


class Baseline(NeedsOptional, TransformerMixin, BaseEstimator):
    """A denoiser ``x_noisy -> x_hat``; subclasses implement :meth:`_denoise`."""

    name: ClassVar[str] = "baseline"
    label: ClassVar[str] = "baseline"         # the name in tables and figures
    slow: ClassVar[bool] = False              # run on the first ``slow_limit`` test images only
    fit_images: ClassVar[int] = 200           # training pairs ``evaluate`` gives to ``fit``
    default_grid: ClassVar[tuple] = ()        # values tried by ``fit``; empty: nothing to tune
    param_name: ClassVar[str] = ""            # the tuned parameter, for tables

    def __init__(self, grid=None):
        self.grid = grid

    def _grid(self) -> tuple:
        return tuple(self.default_grid if self.grid is None else self.grid)

    def fit(self, x_noisy, x_clean=None):
        """Tune the parameter on training pairs (``x_clean`` is needed when there is a grid)."""
        grid = self._grid()
        if len(grid) <= 1:
            self.param_ = grid[0] if grid else None
            self.scores_ = {}
            return self
        if x_clean is None:
            raise ConfigError(f"{self.label}: expected clean images beside the noisy ones to tune "
                              f"{grid}, found none; call fit(x_noisy, x_clean)")
        xn, xc = _as_array(x_noisy, "noisy images"), _as_array(x_clean, "clean images")
        if xn.shape != xc.shape:
            raise DataError(f"expected noisy and clean images of one shape, found {xn.shape} and {xc.shape}")
        self.scores_ = {p: round(_mean_psnr(xc, self._denoise(xn, p)), 4) for p in grid}
        self.param_ = max(self.scores_, key=self.scores_.get)
        return self

    def transform(self, x_noisy):
        """The cleaned images, in the type (tensor or array) of ``x_noisy``."""
        check_is_fitted(self, "param_")
        x = _as_array(x_noisy, "noisy images")
        out = self._denoise(x, self.param_).astype(np.float32)
        return torch.from_numpy(out) if isinstance(x_noisy, torch.Tensor) else out

    def describe(self) -> str:
        """``label (param=value)``, for tables."""
        check_is_fitted(self, "param_")
        return self.label if self.param_ is None else f"{self.label} ({self.param_name} {self.param_:g})"

    def _denoise(self, x: np.ndarray, param) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


@register_baseline("gaussian")
class GaussianFilter(Baseline):
    """Gaussian filter of std ``param`` pixels (scipy.ndimage, reflect border), per channel."""

    label = "Gaussian filter"
    param_name = "std"
    default_grid = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.5, 2.0)

    def _denoise(self, x, param):
        from scipy.ndimage import gaussian_filter  # heavy: SciPy, loaded on first use
        return gaussian_filter(x, sigma=(0, 0, param, param))


@register_baseline("median")
class MedianFilter(Baseline):
    """3x3 median filter (scipy.ndimage, reflect border), per channel."""

    label = "median filter 3x3"

    def _denoise(self, x, param):
        from scipy.ndimage import median_filter  # heavy: SciPy, loaded on first use
        return median_filter(x, size=(1, 1, 3, 3))


@register_baseline("tv")
class TotalVariation(Baseline):
    """Chambolle's TV denoising with weight ``param * sigma_hat``."""

    label = "total variation (Chambolle)"
    param_name = "weight/sigma"
    default_grid = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)

    def _denoise(self, x, param):
        from skimage.restoration import denoise_tv_chambolle  # heavy: scikit-image, loaded on first use
        return _per_image(lambda im, s, axis: denoise_tv_chambolle(im, weight=param * s, channel_axis=axis), x)


@register_baseline("wavelet")
class Wavelet(Baseline):
    """BayesShrink soft thresholding (db1, skimage's defaults) with noise std ``param * sigma_hat``."""

    label = "wavelet (BayesShrink)"
    param_name = "sigma/sigma_hat"
    default_grid = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
    requires = ("pywt", "PyWavelets")

    def _denoise(self, x, param):
        from skimage.restoration import denoise_wavelet  # heavy: scikit-image, loaded on first use
        return _per_image(lambda im, s, axis: denoise_wavelet(im, sigma=param * s, method="BayesShrink", mode="soft",
                                                              rescale_sigma=True, channel_axis=axis), x)


@register_baseline("nlmeans")
class NonLocalMeans(Baseline):
    """Non-local means, 5x5 patches, 13x13 search, h = ``param * sigma_hat`` (skimage, fast mode)."""

    label = "non-local means"
    param_name = "h/sigma"
    default_grid = (0.4, 0.6, 0.8, 1.0, 1.2, 1.5)

    def _denoise(self, x, param):
        from skimage.restoration import denoise_nl_means  # heavy: scikit-image, loaded on first use
        return _per_image(lambda im, s, axis: denoise_nl_means(im, h=param * s, sigma=s, patch_size=5, patch_distance=6,
                                                               fast_mode=True, channel_axis=axis), x)


@register_baseline("bm3d")
class BM3D(Baseline):
    """BM3D with sigma_psd = ``param * sigma_hat`` (the noise level estimated per image)."""

    label = "BM3D"
    param_name = "sigma/sigma_hat"
    default_grid = (1.0,)
    slow = True
    requires = ("bm3d", "'aelab[bm3d]'")

    def _denoise(self, x, param):
        try:
            import bm3d  # optional: bm3d (pip install aelab[bm3d])
        except ImportError:
            raise ConfigError("the bm3d baseline needs the bm3d package, found none; "
                              "pip install 'aelab[bm3d]' (or leave bm3d out of --baselines)") from None
        profile = bm3d.BM3DProfile()
        profile.num_threads = 1  # its thread pool costs more than it gains on 28x28 images

        def one(im, s, axis):
            if axis is None:
                return bm3d.bm3d(im, sigma_psd=param * s, profile=profile)
            return bm3d.bm3d_rgb(im, sigma_psd=param * s, profile=profile)
        return _per_image(one, x)


@register_baseline("pca")
class PCAProjection(Baseline):
    """Projection on the first k principal components of clean training images.

    ``fit(x_noisy, x_clean)`` fits scikit-learn's PCA (up to max(grid) components,
    ``random_state`` for its randomized SVD) on the clean images after the first
    ``tune_images``, and picks k by PSNR on the first ``tune_images`` pairs. With
    ``x_noisy`` = ``x_clean`` it is PCA reconstruction, the linear autoencoder.
    """

    label = "PCA projection"
    param_name = "components"
    fit_images = 20000
    default_grid = (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)

    def __init__(self, grid=None, tune_images: int = 1000, random_state: int = 0):
        self.grid = grid
        self.tune_images = tune_images
        self.random_state = random_state

    def fit(self, x_noisy, x_clean=None):
        from sklearn.decomposition import PCA  # heavy: scikit-learn, loaded on first use

        xn = _as_array(x_noisy, "noisy images")
        xc = xn if x_clean is None else _as_array(x_clean, "clean images")
        if xn.shape != xc.shape:
            raise DataError(f"expected noisy and clean images of one shape, found {xn.shape} and {xc.shape}")
        grid = tuple(int(k) for k in self._grid())
        tune = min(self.tune_images, len(xc) // 2) if len(grid) > 1 else 0
        train = xc[tune:].reshape(len(xc) - tune, -1)
        k_max = min(max(grid), *train.shape)
        if k_max < 1:
            raise DataError(f"expected at least 2 clean training images for PCA, found {len(xc)}")
        self.pca_ = PCA(n_components=k_max, svd_solver="auto", random_state=self.random_state).fit(train)
        grid = tuple(k for k in grid if k <= k_max) or (k_max,)
        if tune:
            self.scores_ = {k: round(_mean_psnr(xc[:tune], self._denoise(xn[:tune], k)), 4) for k in grid}
            self.param_ = max(self.scores_, key=self.scores_.get)
        else:
            self.scores_, self.param_ = {}, grid[-1]
        return self

    def _denoise(self, x, param):
        flat = x.reshape(len(x), -1).astype(np.float64)
        w = self.pca_.components_[:param]  # (k, D)
        z = (flat - self.pca_.mean_) @ w.T  # (N, k)
        return np.clip(z @ w + self.pca_.mean_, 0.0, 1.0).reshape(x.shape)


def make_baseline(name: str, **params) -> Baseline:
    """The baseline ``name`` with its ``params``; a clear error for an unknown or missing one."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    cls = BASELINES[name]
    if not cls.available():
        raise ConfigError(f"the {name} baseline needs the {cls.requires[0]} module, found none; "
                          f"pip install {cls.requires[1]}, or leave {name} out")
    return cls(**params)


__all__ = ["BASELINES", "Baseline", "register_baseline", "make_baseline"]
