"""The classical baselines: each improves a noisy synthetic image, tuning picks the best
value of its grid, PCA agrees with scikit-learn, scikit-learn's estimator conventions."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

from aelab.baselines import BASELINES, PCAProjection, make_baseline
from aelab.errors import ConfigError, DataError
from aelab.metrics import psnr


def _shapes(n, size=28, seed=0):
    """Piecewise-constant images like Fashion-MNIST: a dark background and a bright shape."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        top, left = rng.integers(2, 8, 2)
        h, w = rng.integers(10, 18, 2)
        x[i, 0, top:top + h, left:left + w] = rng.uniform(0.5, 0.9)
        x[i, 0, top + 2:top + h - 2, left + w // 2 - 1:left + w // 2 + 1] = 0.2  # some inner structure
    return torch.from_numpy(x)


def _noisy(x, factor, seed):
    g = torch.Generator().manual_seed(seed)
    return (x + factor * torch.randn(x.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("name", list(BASELINES))
def test_each_baseline_improves_psnr(name):
    if not BASELINES[name].available():
        pytest.skip(f"{name} needs {BASELINES[name].requires[1]}")
    train, test = _shapes(300 if name == "pca" else 24, seed=1), _shapes(3 if name == "bm3d" else 6, seed=2)
    est = make_baseline(name).fit(_noisy(train, 0.2, 3), train)
    x_noisy = _noisy(test, 0.2, 4)
    x_hat = est.transform(x_noisy)
    assert isinstance(x_hat, torch.Tensor) and x_hat.shape == test.shape and x_hat.dtype == torch.float32
    assert 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1
    assert psnr(test, x_hat) > psnr(test, x_noisy) + 1.0, est.describe()


@pytest.mark.parametrize("name", [n for n, c in BASELINES.items() if len(c.default_grid) > 1])
def test_tuning_picks_the_best_value_of_its_grid(name):
    train = _shapes(300 if name == "pca" else 12, seed=1)
    est = make_baseline(name).fit(_noisy(train, 0.3, 3), train)
    grid = tuple(BASELINES[name].default_grid)
    assert est.param_ in grid
    assert set(est.scores_) <= set(grid) and len(est.scores_) >= 2
    assert est.scores_[est.param_] == max(est.scores_.values())
    assert len(set(est.scores_.values())) > 1, "the parameter must change the result"


def test_tuning_moves_with_the_noise():
    """More noise asks for a stronger Gaussian filter: the tuning follows the data."""
    train = _shapes(30, seed=1)
    weak = make_baseline("gaussian").fit(_noisy(train, 0.05, 3), train).param_
    strong = make_baseline("gaussian").fit(_noisy(train, 0.5, 3), train).param_
    assert strong > weak


def test_a_given_grid_is_used():
    train = _shapes(12, seed=1)
    est = make_baseline("tv", grid=(0.5, 50.0)).fit(_noisy(train, 0.2, 3), train)
    assert est.param_ == 0.5 and set(est.scores_) == {0.5, 50.0}


def _low_rank(n, seed):
    """Images near a 20-dimensional subspace with well-separated variances (a stable PCA)."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((144, 20)))[0].T  # (20, 144), orthonormal rows
    scales = np.linspace(0.3, 0.02, 20)
    z = np.random.default_rng(seed).standard_normal((n, 20)) * scales
    x = 0.5 + z @ basis + 0.001 * np.random.default_rng(seed + 1).standard_normal((n, 144))
    return torch.from_numpy(np.clip(x, 0, 1).astype(np.float32).reshape(n, 1, 12, 12))


def test_pca_projection_matches_scikit_learn():
    train, test = _low_rank(400, seed=1), _low_rank(10, seed=2)
    est = PCAProjection(grid=(16,), tune_images=0).fit(train)
    x_noisy = _noisy(test, 0.05, 4)
    ours = est.transform(x_noisy.numpy())
    assert isinstance(ours, np.ndarray)
    ref = PCA(n_components=16, svd_solver="full").fit(train.numpy().reshape(400, -1))
    theirs = ref.inverse_transform(ref.transform(x_noisy.numpy().reshape(10, -1))).reshape(ours.shape)
    np.testing.assert_allclose(ours, np.clip(theirs, 0, 1), atol=1e-4)


def test_pca_reconstruction_improves_with_components():
    train, test = _shapes(400, seed=1), _shapes(10, seed=2)
    few = PCAProjection(grid=(2,)).fit(train).transform(test)
    many = PCAProjection(grid=(64,)).fit(train).transform(test)
    assert psnr(test, many) > psnr(test, few)


def test_scikit_learn_conventions():
    est = make_baseline("gaussian", grid=(0.5, 1.0))
    assert est.get_params() == {"grid": (0.5, 1.0)}
    assert not hasattr(est, "param_"), "__init__ only stores its arguments"
    with pytest.raises(NotFittedError):
        est.transform(np.zeros((1, 1, 8, 8), np.float32))
    twin = clone(est)
    assert twin.get_params() == est.get_params() and twin is not est
    x = _shapes(4, size=16)
    assert est.fit(x, x) is est  # fit returns self


def test_colour_images():
    x = torch.rand(2, 3, 16, 16) * 0.5 + 0.25
    for name in ("median", "tv", "nlmeans", "gaussian"):
        out = make_baseline(name, grid=None).fit(_noisy(x, 0.1, 1), x).transform(_noisy(x, 0.1, 2))
        assert out.shape == x.shape


def test_bad_input_is_one_clear_error():
    est = make_baseline("median").fit(None)
    with pytest.raises(DataError, match="expected noisy images as floats in \\[0, 1\\].*divide 8-bit images by 255"):
        est.transform(np.full((1, 1, 8, 8), 200, np.uint8))
    with pytest.raises(DataError, match="expected noisy images as \\(N, C, H, W\\)"):
        est.transform(np.zeros((8, 8), np.float32))
    with pytest.raises(ConfigError, match="unknown baseline 'bm4d'; expected one of"):
        make_baseline("bm4d")
    with pytest.raises(ConfigError, match="expected clean images beside the noisy ones"):
        make_baseline("tv").fit(np.zeros((2, 1, 8, 8), np.float32))
