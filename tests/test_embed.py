"""2-D maps: the two scores against independent references, the thumbnail spread and
placement, the methods, and `aelab embed` end to end on the tiny fake data set."""

import json
import sys

import numpy as np
import pytest
import torch

from aelab.embed import baseline_codes, embed, joint_codes, reduce, spread_indices
from aelab import plots
from aelab.cli import main
from aelab.errors import AelabWarning, ConfigError, DataError
from aelab.metrics import knn_cv_accuracy, trustworthiness


# --------------------------------------------------------------------------- scores

@pytest.mark.parametrize("n, dim, k, batch", [(300, 20, 10, 64), (121, 7, 5, 1000), (60, 3, 1, 7)])
def test_trustworthiness_matches_sklearn(n, dim, k, batch):
    from sklearn.manifold import trustworthiness as reference

    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, dim))
    low = x[:, :2] + 0.5 * rng.normal(size=(n, 2))  # a lossy map, so T is well below 1
    ours = trustworthiness(x, low, n_neighbors=k, batch_size=batch)
    assert ours == pytest.approx(reference(x, low, n_neighbors=k), abs=1e-12)
    assert ours < 0.99


def test_trustworthiness_of_a_perfect_and_a_random_map():
    rng = np.random.default_rng(1)
    plane = rng.normal(size=(200, 2))
    assert trustworthiness(np.hstack([plane, np.zeros((200, 3))]), plane, 10) == pytest.approx(1.0)
    assert trustworthiness(plane, rng.normal(size=(200, 2)), 10) < 0.6  # ~0.5 for a map unrelated to the data


def test_trustworthiness_bad_input():
    with pytest.raises(ConfigError, match="n_neighbors"):
        trustworthiness(np.zeros((10, 3)), np.zeros((10, 2)), n_neighbors=5)
    with pytest.raises(DataError, match="as many map points"):
        trustworthiness(np.zeros((10, 3)), np.zeros((9, 2)), n_neighbors=2)


def _brute_force_knn_cv(points, labels, k, folds, seed):
    """Independent reference: the same folds, distances by numpy, majority vote by bincount."""
    from sklearn.model_selection import KFold

    accs = []
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(points):
        d = ((points[test, None, :] - points[None, train, :]) ** 2).sum(-1)
        nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
        votes = [np.bincount(labels[train][row], minlength=labels.max() + 1).argmax() for row in nearest]
        accs.append(np.mean(np.asarray(votes) == labels[test]))
    return float(np.mean(accs))


def test_knn_cv_accuracy_matches_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 250)
    points = rng.normal(size=(250, 2)) + labels[:, None] * 1.2  # overlapping classes: accuracy strictly inside (0, 1)
    ours = knn_cv_accuracy(points, labels, n_neighbors=5, folds=5, seed=0)
    assert ours == pytest.approx(_brute_force_knn_cv(points, labels, 5, 5, 0), abs=1e-12)
    assert 0.4 < ours < 0.95


def test_knn_cv_accuracy_too_few_points():
    with pytest.raises(DataError, match="at least 7 points"):
        knn_cv_accuracy(np.zeros((6, 2)), np.zeros(6, int))


# --------------------------------------------------------------------------- thumbnails

def test_spread_indices_takes_the_point_nearest_each_cell_centre():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(500, 2))
    grid, min_count = 6, 4
    chosen = spread_indices(points, grid=grid, min_count=min_count)
    lo, hi = points.min(0), points.max(0)
    cell = np.minimum(((points - lo) / (hi - lo) * grid).astype(int), grid - 1)
    cells = {tuple(c) for c in cell[chosen]}
    assert len(cells) == len(chosen)  # one thumbnail per cell
    full = {tuple(c) for c, n in zip(*np.unique(cell, axis=0, return_counts=True)) if n >= min_count}
    assert cells == full  # every cell with enough points, and no other
    for i in chosen:
        members = np.flatnonzero((cell == cell[i]).all(1))
        centre = lo + (cell[i] + 0.5) * (hi - lo) / grid
        assert i == members[np.argmin(((points[members] - centre) ** 2).sum(1))]


def test_thumbnails_place_the_right_images():
    """Each thumbnail shows images[i] at points[i]: checked on the artists and on the pixels."""
    plt = plots._plt()
    n = 40
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 10, size=(n, 2))
    points[:3] = [[1, 1], [9, 1], [5, 9]]  # three far apart, checked in the rendered pixels
    values = np.linspace(0.05, 0.95, n)
    images = (np.ones((n, 1, 8, 8)) * values[:, None, None, None]).astype(np.float32)  # image i: flat grey values[i]
    indices = np.array([2, 0, 1])
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    ax.scatter(points[:, 0], points[:, 1], s=1, color="w")
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    artists = plots.draw_thumbnails(ax, points, images, indices, zoom=3.0)
    assert len(artists) == len(indices)
    fig.canvas.draw()
    canvas = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].astype(int)
    height = canvas.shape[0]
    for artist, i in zip(artists, indices):
        assert np.allclose(artist.xy, points[i])
        assert np.array_equal(artist.offsetbox.get_data(), images[i, 0])
        x, y = ax.transData.transform(points[i])
        pixel = canvas[int(round(height - y)), int(round(x))]
        assert np.all(np.abs(pixel - values[i] * 255) <= 2), (i, pixel)  # the grey of image i is drawn there
    plt.close(fig)


def test_thumbnail_figure_is_written(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 2))
    labels = rng.integers(0, 3, 300)
    images = rng.random((300, 1, 28, 28)).astype(np.float32)
    idx = spread_indices(points)
    path = plots.embedding_thumbnails(points, labels, images, idx, ["a", "b", "c"], tmp_path / "t.png", title="t")
    assert path.stat().st_size > 10_000
    assert plots.embedding_map(points, labels, ["a", "b", "c"], tmp_path / "m.png").exists()


# --------------------------------------------------------------------------- methods

def _blobs(n=150, dim=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    return rng.normal(size=(n, dim)) + 6.0 * np.eye(dim)[labels], labels


def test_pca_map_is_sklearns():
    from sklearn.decomposition import PCA

    codes, _ = _blobs()
    points, info = reduce(codes, method="pca")
    ref = PCA(2, random_state=0).fit_transform(codes.astype(np.float32))
    assert np.allclose(np.abs(points), np.abs(ref), atol=1e-4)  # the same up to the sign of each axis
    assert "scikit-learn" in info["implementation"]


def test_tsne_separates_blobs_and_is_seeded():
    pytest.importorskip("openTSNE")
    codes, labels = _blobs()
    a, info = reduce(codes, method="tsne", progress=False)
    b, _ = reduce(codes, method="tsne", progress=False)
    assert a.shape == (150, 2) and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert "openTSNE" in info["implementation"]
    assert knn_cv_accuracy(a, labels) == 1.0


def test_tsne_falls_back_to_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # import openTSNE now raises ImportError
    codes, labels = _blobs(90)
    with pytest.warns(AelabWarning, match="openTSNE is not installed"):
        points, info = reduce(codes, method="tsne", progress=False)
    assert "scikit-learn" in info["implementation"] and points.shape == (90, 2)
    assert knn_cv_accuracy(points, labels) == 1.0


def test_umap_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(ConfigError, match=r"umap-learn .* pip install 'aelab\[embed\]'"):
        reduce(_blobs()[0], method="umap", progress=False)


@pytest.mark.slow
def test_umap_separates_blobs():
    pytest.importorskip("umap")
    codes, labels = _blobs()
    points, info = reduce(codes, method="umap", progress=False)
    assert points.shape == (150, 2) and knn_cv_accuracy(points, labels) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "isomap"}, "unknown map method 'isomap'"),
    ({"perplexity": 0}, "perplexity > 0"),
])
def test_reduce_bad_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        reduce(_blobs()[0], **kwargs)


def test_baseline_codes():
    x = torch.rand(20, 1, 4, 4)
    train = torch.rand(50, 1, 4, 4)
    codes, text = baseline_codes("pca3", x, lambda: train)
    from sklearn.decomposition import PCA
    ref = PCA(3, random_state=0).fit(train.flatten(1).numpy()).transform(x.flatten(1).numpy())
    assert np.allclose(codes, ref, atol=1e-5) and "PCA-3" in text
    assert baseline_codes("pixels", x, lambda: train)[0].shape == (20, 16)
    with pytest.raises(ConfigError, match="unknown baseline 'ica4'"):
        baseline_codes("ica4", x, lambda: train)
    with pytest.raises(ConfigError, match="number of components"):
        baseline_codes("pca", x, lambda: train)


# --------------------------------------------------------------------------- the command

def test_embed_through_main(fake_fashion, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(fake_fashion), "--epochs", "1", "--net", "dense",
                 "--net-option", "latent_dim=8", "--out", str(run), "--no-progress"]) == 0
    assert main(["embed", "--run", str(run), "--method", "pca", "--no-progress"]) == 0
    assert "2-D kNN-5" in capsys.readouterr().out
    assert main(["embed", "--run", str(run), "--baseline", "pca16", "--method", "tsne", "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["embedding"]) == {"pca", "pca16_tsne"}
    own = metrics["embedding"]["pca"]
    assert own["code_dim"] == 8 and own["points"] == 32 and own["baseline"] is None
    assert 0 <= own["trustworthiness"] <= 1 and 0 <= own["knn_accuracy"] <= 1
    assert metrics["embedding"]["pca16_tsne"]["code_dim"] == 16
    with np.load(run / "embedding_pca.npz", allow_pickle=False) as npz:
        assert npz["points"].shape == (32, 2) and npz["labels"].shape == (32,)
        assert np.array_equal(npz["indices"], np.arange(32))
        assert npz["class_names"][0] == "T-shirt/top"
    for name in ("map_pca.png", "map_pca_thumbnails.png", "map_pca16_tsne.png", "map_pca16_tsne_thumbnails.png"):
        assert (run / "figures" / name).exists(), name
    html = (run / "report.html").read_text()
    assert 'class="maps"' in html and "PCA-16 of the pixels" in html and "aelab embed --run" in html


def test_embed_codes_are_the_models(fake_fashion, tmp_path):
    """The map of method pca is the PCA of model.codes(x) of the test images, in order."""
    from sklearn.decomposition import PCA

    from aelab.data import load_dataset
    from aelab.runs import load_model

    run = tmp_path / "run"
    main(["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(run), "--no-progress"])
    embed(run=run, method="pca", progress=False)
    model = load_model(run)
    x = load_dataset(str(fake_fashion), "test").x
    codes = model.codes(x).numpy()
    ref = PCA(2, random_state=0).fit_transform(codes)
    points = np.load(run / "embedding_pca.npz")["points"]
    assert np.allclose(np.abs(points), np.abs(ref), atol=1e-3)


def test_joint_codes_add_the_scaled_squared_distances():
    """|a - b|^2 in the joint space = |code distance|^2 / total code variance + W^2 |pixel
    distance|^2 / total pixel variance, checked with scipy's pairwise distances."""
    from scipy.spatial.distance import cdist

    g = np.random.default_rng(0)
    codes, pix = g.normal(size=(40, 6)) * 3.0, g.normal(size=(40, 9)) * 0.2
    joint = joint_codes(codes, pix, 1.5)
    expect = (cdist(codes, codes, "sqeuclidean") / codes.var(0).sum()
              + 1.5 ** 2 * cdist(pix, pix, "sqeuclidean") / pix.var(0).sum())
    assert np.allclose(cdist(joint, joint, "sqeuclidean"), expect, rtol=1e-4, atol=1e-5)
    zero = joint_codes(codes, pix, 0.0)  # W = 0: the codes' own neighbourhoods
    assert np.allclose(cdist(zero, zero), cdist(codes, codes) / np.sqrt(codes.var(0).sum()), atol=1e-5)
    with pytest.raises(ConfigError, match="expected a pixel weight >= 0, found -1"):
        joint_codes(codes, pix, -1)
    with pytest.raises(DataError, match="one row of pixel components per code, found 3 for 40"):
        joint_codes(codes, pix[:3], 1.0)


def test_embed_with_pixels_maps_the_joint_codes(fake_fashion, tmp_path, capsys):
    """--with-pixels W: the map (method pca, so exact) is the PCA of the codes joined with W x
    PCA-50 of the pixels fitted on the training images; a key of its own."""
    from sklearn.decomposition import PCA

    from aelab.data import load_dataset
    from aelab.runs import load_model

    run = tmp_path / "run"
    assert main(["train", "--data", str(fake_fashion), "--epochs", "1", "--net", "dense",
                 "--net-option", "latent_dim=8", "--out", str(run), "--no-progress"]) == 0
    assert main(["embed", "--run", str(run), "--method", "pca", "--with-pixels", "2", "--no-progress"]) == 0
    assert "joined with 2 x PCA-" in capsys.readouterr().out
    entry = json.loads((run / "metrics.json").read_text())["embedding"]["pca_pixels2"]
    assert entry["with_pixels"] == 2 and entry["code_dim"] == 8
    train, test = load_dataset(str(fake_fashion), "train").x, load_dataset(str(fake_fashion), "test").x
    n = min(50, *train.flatten(1).shape)
    pix = PCA(n, random_state=0).fit(train.flatten(1).numpy()).transform(test.flatten(1).numpy())
    joint = joint_codes(load_model(run).codes(test).numpy(), pix, 2.0)
    ref = PCA(2, random_state=0).fit_transform(joint)
    points = np.load(run / "embedding_pca_pixels2.npz")["points"]
    assert np.allclose(np.abs(points), np.abs(ref), atol=1e-3)
    assert main(["embed", "--run", str(run), "--with-pixels", "-1", "--no-progress"]) == 2
    assert "expected --with-pixels W >= 0, found -1" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["embed"], "expected --run DIR (a trained run) or --baseline NAME"),
    (["embed", "--baseline", "pca8", "--method", "mds"], "unknown map method 'mds'"),
    (["embed", "--baseline", "kpca8"], "unknown baseline 'kpca8'"),
    (["embed", "--run", "/nonexistent/run"], "expected a run directory"),
])
def test_embed_user_errors_are_one_line(tmp_path, capsys, argv, message):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aelab: error: ") and message in err and "\n" not in err


@pytest.mark.slow
def test_embed_real_data_pca32_tsne(real_data, tmp_path):
    """PCA-32 + t-SNE on the first 2,000 real test images: a good map by both scores."""
    pytest.importorskip("openTSNE")
    e = embed(baseline="pca32", method="tsne", data=str(real_data), limit=2000, out=tmp_path / "o",
                progress=False)
    assert e["trustworthiness"] > 0.97 and e["knn_accuracy"] > 0.72
    assert (tmp_path / "o" / "figures" / "map_pca32_tsne_thumbnails.png").exists()
