import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline

from aelab.errors import ConfigError, DataError
from aelab.estimator import KIND_OPTIONS, AutoencoderEstimator
from aelab.loop import fit
from aelab.models import MODELS, build_model
from aelab.settings import TrainConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
# the short trainings here are meant to be short: the loop's "not learned yet" warning is expected
pytestmark = pytest.mark.filterwarnings("ignore:the trained model's output is worse:aelab.errors.AelabWarning")


def _blobs(n=96, seed=0):
    """Flat 12x12 grey images, a class-dependent bar plus noise, and their labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 0.2, (n, 12, 12))
    for i, c in enumerate(y):
        x[i, 2 + 3 * c:5 + 3 * c, 2:10] = 0.9
    return x.reshape(n, -1).astype(np.float32), y


def _table(n=200, seed=0):
    """A standardised-looking table of 6 features on 2 hidden factors, with offsets and scales far from [0, 1]."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 2))
    mix = rng.normal(size=(2, 6))
    return (np.tanh(factors) @ mix + 0.01 * rng.normal(size=(n, 6))) * [1, 10, 100, 0.1, 1, 5] + [0, -50, 1e3, 0, -3, 7]


def _est(**kw):
    return AutoencoderEstimator(**{"kind": "sparse", "net": "dense", "epochs": 3, "batch_size": 16, "lr": 5e-3,
                                   "threads": 1, "net_options": {"hidden": [32], "latent_dim": 8}, **kw})


def test_params_are_explicit():
    assert set(KIND_OPTIONS) == {name for cls in MODELS.values() for name in cls.option_names()}
    est = _est(penalty="kl", sparsity_weight=0.01)
    params = est.get_params()
    assert set(KIND_OPTIONS) | {"latent_dim", "kind", "net", "epochs", "random_state"} <= set(params)
    assert params["penalty"] == "kl" and params["sparsity_weight"] == 0.01
    assert params["sparsity_target"] is None and params["beta"] is None  # None: the kind's default
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    twin.set_params(kind="variational", beta=2.0, penalty=None, sparsity_weight=None)
    assert twin.get_params()["beta"] == 2.0 and est.penalty == "kl" and est.beta is None
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(not_an_option=1)
    x = _table(32)
    with pytest.raises(ConfigError, match="has no option 'penalty'"):
        AutoencoderEstimator("undercomplete", epochs=1, penalty="l1").fit(x)
    with pytest.raises(ConfigError, match="latent_dim=2 and net_options latent_dim=3 disagree"):
        AutoencoderEstimator(epochs=1, latent_dim=2, net_options={"latent_dim": 3}).fit(x)


def test_rows_of_any_range_and_width():
    x = _table()
    est = AutoencoderEstimator("undercomplete", latent_dim=2, epochs=60, batch_size=32, lr=3e-3, threads=1,
                               net_options={"hidden": [32]})
    with pytest.raises(NotFittedError):
        est.transform(x)
    state = torch.get_rng_state()
    assert est.fit(x) is est
    assert torch.equal(torch.get_rng_state(), state), "fit leaves the caller's RNG alone"
    assert est.n_features_in_ == 6 and est.tabular_ and est.input_shape_ == (1, 1, 6)
    np.testing.assert_allclose(est.mean_, x.mean(0))
    np.testing.assert_allclose(est.scale_, x.std(0))
    codes = est.transform(x)
    assert codes.shape == (200, 2) and codes.dtype == np.float32
    back = est.inverse_transform(codes)
    assert back.shape == x.shape and back.dtype == np.float32
    # in the units of X: two codes for two hidden factors reconstruct each feature to a small part of its spread
    assert (np.sqrt(((back - x) ** 2).mean(0)) < 0.2 * x.std(0)).all(), np.sqrt(((back - x) ** 2).mean(0)) / x.std(0)
    assert list(est.get_feature_names_out()) == ["autoencoderestimator0", "autoencoderestimator1"]
    # values outside the range fit saw: neither refused nor clipped to it
    far = est.inverse_transform(est.transform(x * 3))
    assert np.isfinite(far).all() and (far.max(0) > x.max(0)).any()
    # an anomaly scores lower than the rows like those fit saw
    odd = x[:1] + 8 * x.std(0) * np.array([1, -1, 1, -1, 1, -1])
    scores = est.score_samples(np.vstack([x[:50], odd]))
    assert scores.shape == (51,) and scores.argmin() == 50
    assert est.score(x) == pytest.approx(est.score_samples(x).mean())
    # same random_state, same codes; a RandomState or None works too
    np.testing.assert_array_equal(clone(est).fit(x).transform(x), codes)
    for state in (np.random.RandomState(3), None):
        assert clone(est).set_params(random_state=state, epochs=1).fit(x).transform(x).shape == (200, 2)
    with pytest.raises(DataError, match="expected codes of shape \\(N, 2\\)"):
        est.inverse_transform(codes[:, :1])


def test_the_undercomplete_default_code_fits_a_narrow_table():
    x = _table(40)
    est = AutoencoderEstimator(epochs=1, threads=1).fit(x)  # the kind's 32 units would not be undercomplete
    assert est.transform(x).shape == (40, 5)
    with pytest.raises(ValueError, match="1 feature\\(s\\)"):
        AutoencoderEstimator(epochs=1).fit(x[:, :1])  # no undercomplete code on one feature
    assert AutoencoderEstimator("sparse", epochs=1, threads=1).fit(x[:, :1]).transform(x[:, :1]).shape == (40, 256)


def test_scikit_learns_messages():
    x = _table(20)
    est = AutoencoderEstimator(epochs=1, threads=1)
    for bad, message in [(np.where(np.eye(20, 6) > 0, np.nan, x), "Input X contains NaN"),
                         (np.where(np.eye(20, 6) > 0, np.inf, x), "Input X contains infinity"),
                         (x[:0], "Found array with 0 sample\\(s\\)"),
                         (x[:, 0], "Expected a 2-dimensional container|Expected 2D array"),
                         (x.astype(complex), "Complex data not supported"),
                         (np.array([["a", "b"], ["c", "d"]], dtype=object), "could not convert")]:
        with pytest.raises(ValueError, match=message):
            clone(est).fit(bad)
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        clone(est).fit(scipy.sparse.csr_matrix(x))
    fitted = clone(est).fit(x)
    with pytest.raises(ValueError, match="X has 5 features, but AutoencoderEstimator is expecting 6 features"):
        fitted.transform(x[:, :5])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        fitted.transform(np.full((2, 6), np.nan))


def test_feature_names():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(_table(30), columns=list("abcdef"))
    est = AutoencoderEstimator(epochs=1, latent_dim=2, threads=1).fit(frame)
    assert list(est.feature_names_in_) == list("abcdef")
    assert est.set_output(transform="pandas").transform(frame).shape == (30, 2)


def test_the_image_path_trains_as_the_loop_does():
    x, _ = _blobs(32)
    images = x.reshape(32, 1, 12, 12)
    est = _est(kind="undercomplete", epochs=2).fit(images)
    assert not est.tabular_ and est.n_features_in_ == 144 and not hasattr(est, "mean_")
    torch.manual_seed(0)
    model = build_model("undercomplete", (1, 12, 12), net="dense", net_options={"hidden": [32], "latent_dim": 8})
    fit(model, torch.from_numpy(images), None, TrainConfig(epochs=2, batch_size=16, lr=5e-3, seed=0, threads=1,
                                                           progress=False))
    np.testing.assert_array_equal(est.transform(images), model.eval().codes(torch.from_numpy(images)).numpy())
    # (N, H, W), flat rows of the fitted images, and the layout back
    assert est.inverse_transform(est.transform(x.reshape(32, 12, 12))).shape == (32, 1, 12, 12)
    np.testing.assert_array_equal(est.transform(x), est.transform(images))
    assert est.score(images) == pytest.approx(est.score(x))
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        _est().fit(images * 255)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        _est().fit(np.where(images > 0.5, np.nan, images))
    with pytest.raises(DataError, match="expected images of shape \\(1, 12, 12\\) as in fit"):
        est.transform(images[:, :, :8])
    # flat rows with input_shape: images, for a network that needs their shape
    rows = AutoencoderEstimator(kind="undercomplete", net="conv", epochs=1, input_shape=(1, 4, 8), threads=1,
                                net_options={"latent_dim": 4}).fit(x[:, :32])
    assert not rows.tabular_ and rows.transform(x[:, :32]).shape == (32, 4)
    assert rows.inverse_transform(rows.transform(x[:, :32])).shape == (32, 32)
    with pytest.raises(DataError, match="expected 32 values per row for input_shape \\(1, 4, 8\\)"):
        clone(rows).fit(x[:, :30])


def test_pipeline_and_grid_search():
    x, y = _blobs(120)
    pipe = make_pipeline(_est(epochs=5), KNeighborsClassifier(5))
    assert pipe.fit(x[:90], y[:90]).score(x[90:], y[90:]) > 0.8  # three well-separated classes
    grid = GridSearchCV(_est(kind="undercomplete", epochs=2), {"reconstruction": ["l1", "mse"]}, cv=2)
    grid.fit(x)  # scored by reconstruction PSNR
    assert grid.best_params_["reconstruction"] in ("l1", "mse") and np.isfinite(grid.best_score_)


def test_the_docs_tabular_example_runs():
    section = (DOCS / "kinds.md").read_text().split("## As scikit-learn estimators", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "docs/kinds.md's estimator section has a Python example"
    namespace: dict = {}
    exec(compile(blocks[0], "docs/kinds.md", "exec"), namespace)
    assert namespace["accuracy"] > 0.9 and namespace["codes"].shape == (450, 8)
    assert np.isfinite(namespace["scores"]).all()
