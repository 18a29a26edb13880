import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline

from aelab.errors import ConfigError, DataError
from aelab.estimator import AutoencoderEstimator


def _blobs(n=96, seed=0):
    """Flat 12x12 grey images, a class-dependent bar plus noise, and their labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 0.2, (n, 12, 12))
    for i, c in enumerate(y):
        x[i, 2 + 3 * c:5 + 3 * c, 2:10] = 0.9
    return x.reshape(n, -1).astype(np.float32), y


def _est(**kw):
    return AutoencoderEstimator(**{"kind": "sparse", "net": "dense", "epochs": 3, "batch_size": 16, "lr": 5e-3,
                                   "net_options": {"hidden": [32], "latent_dim": 8}, **kw})


def test_params_clone_and_set_params():
    est = _est(penalty="kl", sparsity_weight=0.01)
    params = est.get_params()
    assert params["penalty"] == "kl" and params["sparsity_weight"] == 0.01
    assert params["sparsity_target"] == 0.05 and params["reconstruction"] == "l1"  # the kind's defaults
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    twin.set_params(kind="variational", beta=2.0)
    assert twin.get_params()["beta"] == 2.0 and "penalty" not in twin.get_params()
    assert not hasattr(twin, "penalty") and est.penalty == "kl"
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(not_an_option=1)


def test_fit_transform_inverse_score_on_flat_rows():
    x, _ = _blobs()
    est = _est(epochs=10)
    with pytest.raises(NotFittedError):
        est.transform(x)
    state = torch.get_rng_state()
    assert est.fit(x) is est
    assert torch.equal(torch.get_rng_state(), state), "fit leaves the caller's RNG alone"
    codes = est.transform(x)
    assert codes.shape == (96, 8) and codes.dtype == np.float32
    back = est.inverse_transform(codes)
    assert back.shape == x.shape  # the layout fit was given
    assert set(est.history_["train"]) == {"reconstruction", "sparsity", "loss"}
    score = est.score(x)
    mean_image = 10 * np.log10(1 / ((x - x.mean(0)) ** 2).mean(1)).mean()
    assert score > mean_image + 1.0, (score, mean_image)  # dB, better than the mean image
    # same random_state, same model
    np.testing.assert_array_equal(_est(epochs=10).fit(x).transform(x), codes)
    with pytest.raises(DataError, match="expected codes of shape \\(N, 8\\)"):
        est.inverse_transform(codes[:, :3])


def test_images_and_errors():
    x, _ = _blobs(32)
    est = _est(kind="undercomplete", epochs=1).fit(x.reshape(32, 1, 12, 12))
    assert est.inverse_transform(est.transform(x.reshape(32, 12, 12))).shape == (32, 1, 12, 12)
    with pytest.raises(DataError, match="square grey image or input_shape"):
        _est().fit(np.zeros((4, 10), np.float32))
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        _est().fit(x * 255)
    with pytest.raises(ConfigError, match="has no option 'penalty'"):
        AutoencoderEstimator(kind="undercomplete", net="dense", epochs=1, penalty="l1").fit(x)
    rows = AutoencoderEstimator(kind="undercomplete", net="dense", epochs=1, input_shape=(1, 4, 8),
                                net_options={"latent_dim": 4}).fit(x[:, :32])
    assert rows.transform(x[:, :32]).shape == (32, 4)


def test_pipeline_and_grid_search():
    x, y = _blobs(120)
    pipe = make_pipeline(_est(epochs=5), KNeighborsClassifier(5))
    assert pipe.fit(x[:90], y[:90]).score(x[90:], y[90:]) > 0.8  # three well-separated classes
    grid = GridSearchCV(_est(kind="undercomplete", epochs=2), {"reconstruction": ["l1", "mse"]}, cv=2)
    grid.fit(x)  # scored by reconstruction PSNR
    assert grid.best_params_["reconstruction"] in ("l1", "mse") and np.isfinite(grid.best_score_)
