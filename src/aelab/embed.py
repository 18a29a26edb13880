"""2-D maps of the codes (PCA, t-SNE, UMAP, parametric t-SNE), and how good each map is.

A map takes the codes of the test images (the encoder's output flattened to (N, D); a
VAE's posterior mean, through ``model.codes``) or the codes of a baseline (``pca32``: the
first 32 principal components of the pixels, fitted on the training images; ``pixels``)
and places them in the plane with one of the methods of :data:`REDUCERS`:

- ``pca``: the first two principal components (a linear projection);
- ``tsne``: t-SNE (van der Maaten & Hinton 2008, "Visualizing data using t-SNE"):
  p_{j|i} = exp(-|x_i - x_j|^2 / 2 s_i^2) / sum_k exp(-|x_i - x_k|^2 / 2 s_i^2) with s_i set
  so that the perplexity 2^H(P_i) equals ``perplexity``, p_ij = (p_{j|i} + p_{i|j}) / 2n,
  q_ij = (1 + |y_i - y_j|^2)^-1 / sum_{k != l} (1 + |y_k - y_l|^2)^-1, and the map y
  minimises KL(P || Q). openTSNE's FFT-accelerated interpolation (Linderman et al. 2019;
  Policar et al. 2019, "openTSNE") when installed, scikit-learn's Barnes-Hut t-SNE
  otherwise. ``exaggeration`` > 1 multiplies P in the gradient after the early phase,
  which tightens the clusters (Boehm, Berens & Kobak 2022, "Attraction-repulsion spectrum
  in neighbor embeddings");
- ``umap``: UMAP (McInnes, Healy & Melville 2018) with umap-learn.
- ``ptsne``: parametric t-SNE (van der Maaten 2009), an MLP trained with the t-SNE loss on
  mini-batches (:mod:`aelab.ptsne`).

Every map is scored with trustworthiness@10 against the test pixels and the 5-fold kNN-5
accuracy of the 2-D points (both in :mod:`aelab.metrics`). Trustworthiness depends on the
number of points: the issue's reference figures (PCA-32 + t-SNE: 0.991) are on all 10,000
test images, and so is ``trustworthiness``; docs/protocols.md's "first 5,000" version is kept
beside it (0.987 for the same map). The 5-fold kNN-5 accuracy of the codes themselves is
reported as the ceiling a map of those codes can hope for.

A run directory gets ``embedding_<key>.npz`` (points, labels, indices), the figures
``figures/map_<key>.png`` (points coloured by class) and ``figures/map_<key>_thumbnails.png``
(the same with image thumbnails at a spread of points) and ``metrics.json["embedding"][key]``,
where ``key`` is the method (``tsne``) for the model's own codes and
``<baseline>_<method>`` (``pca32_tsne``) for a baseline.
"""

from __future__ import annotations

import io
import re
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import plots, runs, tensorboard as board
from .data import Dataset, load_dataset
from .errors import AelabWarning, ConfigError, DataError
from .inference import model_codes
from .metrics import knn_cv_accuracy, trustworthiness
from .ptsne import reduce_ptsne
from .registry import registrar
from .settings import MapConfig

TRUST_SUBSET = 5000     # docs/protocols.md also names trustworthiness on the first 5,000 points of the map
TRUST_NEIGHBORS = 10
KNN_NEIGHBORS = 5
KNN_FOLDS = 5
# the fewest points a map is scored on: each training part of the kNN's folds holds k points
MIN_POINTS = max(KNN_FOLDS, -(-KNN_NEIGHBORS * KNN_FOLDS // (KNN_FOLDS - 1)))
INSTALL_HINT = "pip install 'aelab[embed]' (openTSNE and umap-learn)"


# --------------------------------------------------------------------------- methods

REDUCERS: dict[str, Callable[[np.ndarray, MapConfig], tuple[np.ndarray, dict]]] = {}
# ``@register_reducer(name)``: a codes -> 2-D method; it returns the (N, 2) points and a dict
# describing what ran (library, version, parameters)
register_reducer = registrar(REDUCERS)


@register_reducer("pca")
def _pca(codes: np.ndarray, config: MapConfig) -> tuple[np.ndarray, dict]:
    import sklearn  # heavy: scikit-learn, loaded on first use
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=config.seed).fit(codes)
    ratios = [round(float(v), 4) for v in pca.explained_variance_ratio_]
    return pca.transform(codes), {"implementation": f"scikit-learn {sklearn.__version__} PCA",
                                  "explained_variance_ratio": ratios}


def _perplexity(config: MapConfig, n: int) -> float:
    # both libraries need perplexity well below n; tiny data sets get the largest sensible one
    return float(min(config.perplexity, max(1.0, (n - 1) / 3.0)))


class _TsneBar:
    """openTSNE callback that advances a tqdm bar every ``every`` iterations."""

    def __init__(self, total: int, every: int, enabled: bool):
        self.every = every
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm  # only with a progress bar: tqdm
            self.bar = tqdm(total=total, desc="t-SNE", unit="it", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, iteration, error, embedding):
        if self.bar is not None:
            self.bar.update(self.every)
            self.bar.set_postfix(kl=f"{error:.3f}")
        return False

    def close(self):
        if self.bar is not None:
            self.bar.close()


@register_reducer("tsne")
def _tsne(codes: np.ndarray, config: MapConfig) -> tuple[np.ndarray, dict]:
    perplexity = _perplexity(config, len(codes))
    try:
        import openTSNE  # optional: openTSNE (pip install aelab[embed])
    except ImportError:
        return _sklearn_tsne(codes, config, perplexity)
    every = 25
    if config.progress:
        print(f"t-SNE: affinities of {len(codes):,} points (perplexity {perplexity:g})", file=sys.stderr)
    bar = _TsneBar(250 + 500, every, config.progress)  # openTSNE's early-exaggeration + main iterations
    try:
        tsne = openTSNE.TSNE(n_components=2, perplexity=perplexity, exaggeration=config.exaggeration,
                             initialization="pca", n_jobs=config.threads, random_state=config.seed,
                             callbacks=bar if config.progress else None, callbacks_every_iters=every)
        points = np.asarray(tsne.fit(codes))
    finally:
        bar.close()
    return points, {"implementation": f"openTSNE {openTSNE.__version__} (FFT-accelerated)",
                    "perplexity": perplexity, "exaggeration": config.exaggeration or 1.0,
                    "initialization": "pca", "iterations": "250 early exaggeration + 500"}


def _sklearn_tsne(codes: np.ndarray, config: MapConfig, perplexity: float) -> tuple[np.ndarray, dict]:
    import sklearn  # heavy: scikit-learn, loaded on first use
    from sklearn.manifold import TSNE

    warnings.warn(f"openTSNE is not installed, so t-SNE runs with scikit-learn's slower Barnes-Hut version; "
                  f"for the fast one: {INSTALL_HINT}", AelabWarning, stacklevel=3)
    if config.exaggeration not in (None, 1, 1.0):
        raise ConfigError(f"expected no --exaggeration with scikit-learn's t-SNE, found {config.exaggeration}; "
                          f"{INSTALL_HINT} to use it")
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=config.seed, n_jobs=config.threads, verbose=1 if config.progress else 0)
    return tsne.fit_transform(codes), {"implementation": f"scikit-learn {sklearn.__version__} TSNE (Barnes-Hut)",
                                       "perplexity": perplexity, "initialization": "pca"}


@register_reducer("umap")
def _umap(codes: np.ndarray, config: MapConfig) -> tuple[np.ndarray, dict]:
    try:
        import umap  # optional: umap-learn (pip install aelab[embed])
    except ImportError:
        raise ConfigError(f"expected umap-learn for --method umap, found it not installed; {INSTALL_HINT}, "
                          "or use --method tsne or pca") from None
    n_neighbors = int(min(config.n_neighbors, len(codes) - 1))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")  # a seed makes UMAP single-threaded
        reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=config.min_dist,
                            random_state=config.seed, n_jobs=config.threads, verbose=config.progress,
                            tqdm_kwds={"file": sys.stderr, "disable": not config.progress})
        points = reducer.fit_transform(codes)
    return np.asarray(points), {"implementation": f"umap-learn {getattr(umap, '__version__', '')}".strip(),
                                "n_neighbors": n_neighbors, "min_dist": config.min_dist}


@register_reducer("ptsne")
def _ptsne(codes: np.ndarray, config: MapConfig) -> tuple[np.ndarray, dict]:
    """Parametric t-SNE (van der Maaten 2009): an MLP trained with the t-SNE loss, see :mod:`aelab.ptsne`."""
    return reduce_ptsne(codes, config)


def reduce(codes, config: MapConfig | None = None, **overrides) -> tuple[np.ndarray, dict]:
    """Map ``codes`` (N, D) to the plane with ``config.method``; returns the (N, 2) float32
    points and what ran (library, version, parameters, seconds)."""
    config = MapConfig(**{**asdict(config or MapConfig()), **overrides}).check(REDUCERS)
    codes = np.ascontiguousarray(np.asarray(codes, dtype=np.float32).reshape(len(codes), -1))
    if len(codes) < 3:
        raise DataError(f"expected at least 3 codes to map, found {len(codes)}; map the codes of more images")
    if not np.isfinite(codes).all():
        raise DataError("expected finite codes, found NaN or infinite values; the model or its weights are broken")
    t0 = time.perf_counter()
    points, info = REDUCERS[config.method](codes, config)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return np.asarray(points, dtype=np.float32), info


# --------------------------------------------------------------------------- codes

CODE_SOURCES: dict[str, Callable[[int | None, torch.Tensor, Callable[[], torch.Tensor], int],
                                  tuple[np.ndarray, str]]] = {}
# ``@register_code_source(prefix)``: codes without a model, asked for as ``<prefix><number>``
# (``pca32``) or ``<prefix>`` (``pixels``) with ``aelab embed --baseline``
register_code_source = registrar(CODE_SOURCES)


@register_code_source("pixels")
def _pixels(size, x, train_images, seed):
    if size is not None:
        raise ConfigError(f"expected the baseline 'pixels' without a number, found 'pixels{size}'")
    return x.flatten(1).numpy(), "the pixels"


@register_code_source("pca")
def _pca_codes(size, x, train_images, seed):
    """The first ``size`` principal components of the pixels, fitted on the training images."""
    from sklearn.decomposition import PCA  # heavy: scikit-learn, loaded on first use

    if size is None or size < 1:
        raise ConfigError("expected the number of components after 'pca', e.g. --baseline pca32")
    train = train_images().flatten(1).numpy()
    if size > min(train.shape):
        raise ConfigError(f"expected at most {min(train.shape)} components for these images, found pca{size}")
    pca = PCA(n_components=size, random_state=seed).fit(train)
    return pca.transform(x.flatten(1).numpy()), (f"PCA-{size} of the pixels (fitted on {len(train):,} training "
                                                 f"images, {pca.explained_variance_ratio_.sum():.1%} of the variance)")


def baseline_codes(name: str, x: torch.Tensor, train_images: Callable[[], torch.Tensor], seed: int = 0):
    """Codes of the images ``x`` from the baseline ``name`` (``pca32``, ``pixels``); returns
    (codes (N, D), a description). ``train_images`` is called when the baseline must fit."""
    m = re.fullmatch(r"([a-z_]+?)(\d*)", str(name).strip().lower())
    if not m or m.group(1) not in CODE_SOURCES:
        known = ", ".join(b if b == "pixels" else f"{b}N" for b in CODE_SOURCES)
        raise ConfigError(f"unknown baseline {name!r}; expected one of {known}, e.g. --baseline pca32")
    size = int(m.group(2)) if m.group(2) else None
    codes, description = CODE_SOURCES[m.group(1)](size, x, train_images, seed)
    return np.asarray(codes, dtype=np.float32), description


JOINT_COMPONENTS = 50  # principal components of the pixels that ``with_pixels`` joins to the codes


def joint_codes(codes, pixel_components, weight: float) -> np.ndarray:
    """The codes joined with ``weight`` times the pixels' principal components, each part
    scaled to a total variance of 1 first, so that ``weight`` alone sets their balance:
    distances in the joint space add the squared code distance and ``weight^2`` times the
    squared pixel distance (both relative to their spread). The map then keeps
    neighbourhoods that the codes and the pixels both hold: the codes separate the classes,
    the pixels are what trustworthiness measures against (docs/maps.md)."""
    codes = np.asarray(codes, dtype=np.float64).reshape(len(codes), -1)
    pix = np.asarray(pixel_components, dtype=np.float64).reshape(len(pixel_components), -1)
    if len(pix) != len(codes):
        raise DataError(f"expected one row of pixel components per code, found {len(pix)} for {len(codes)}")
    if not weight >= 0:
        raise ConfigError(f"expected a pixel weight >= 0, found {weight}; e.g. --with-pixels 1")

    def unit(a):
        total = float(a.var(0).sum())
        return a / np.sqrt(total) if total > 0 else a

    return np.hstack([unit(codes), weight * unit(pix)]).astype(np.float32)


# --------------------------------------------------------------------------- scores and figures

def map_scores(x_high, points, labels, codes=None) -> dict:
    """The figures of a map: trustworthiness@10 against ``x_high`` (the pixels) on all the
    points (the issue's reference numbers are on all 10,000 test images) and on the first
    5,000 (docs/protocols.md), the 5-fold kNN-5 accuracy of the 2-D points, and (with ``codes``)
    the same kNN accuracy of the codes."""
    x_high = np.asarray(x_high, dtype=np.float32).reshape(len(x_high), -1)
    n = len(points)
    k = min(TRUST_NEIGHBORS, max(1, (n - 1) // 2))
    scores = {"trustworthiness": round(trustworthiness(x_high, points, n_neighbors=k), 4),
              "trustworthiness_neighbors": k, "trustworthiness_points": n}
    if n > TRUST_SUBSET:
        scores[f"trustworthiness_first_{TRUST_SUBSET}"] = round(
            trustworthiness(x_high[:TRUST_SUBSET], points[:TRUST_SUBSET], n_neighbors=k), 4)
    scores.update({"knn_accuracy": round(knn_cv_accuracy(points, labels, KNN_NEIGHBORS, KNN_FOLDS), 4),
                   "knn_neighbors": KNN_NEIGHBORS, "knn_folds": KNN_FOLDS})
    if codes is not None:
        scores["codes_knn_accuracy"] = round(knn_cv_accuracy(codes, labels, KNN_NEIGHBORS, KNN_FOLDS), 4)
    return scores


def spread_indices(points, grid: int = 12, min_count: int = 3) -> np.ndarray:
    """A spread of points for thumbnails: cut the map's bounding box into ``grid`` x ``grid``
    cells and, in every cell holding at least ``min_count`` points, take the point nearest
    the cell's centre. Returns their indices, cell by cell (row-major from the bottom left)."""
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p.min(0), p.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    cell = np.minimum(((p - lo) / span * grid).astype(np.int64), grid - 1)  # (N, 2) cell of each point
    cell_id = cell[:, 1] * grid + cell[:, 0]
    centre = lo + (cell + 0.5) * span / grid
    dist = ((p - centre) ** 2).sum(1)
    chosen = []
    order = np.lexsort((dist, cell_id))  # by cell, nearest first inside a cell
    ids, starts, counts = np.unique(cell_id[order], return_index=True, return_counts=True)
    for start, count in zip(starts, counts):
        if count >= min_count:
            chosen.append(int(order[start]))
    return np.asarray(chosen, dtype=np.int64)


# --------------------------------------------------------------------------- the command

def _save_npz(path: Path, **arrays) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return runs.atomic_write_bytes(path, buf.getvalue())


def _check_arguments(run, on: str, baseline, with_pixels: float, tensorboard: bool) -> None:
    """embed's arguments that can be refused before anything is read."""
    if on not in ("test", "train"):
        raise ConfigError(f"expected --on test or train, found {on!r}")
    if run is None and baseline is None:
        raise ConfigError("expected --run DIR (a trained run) or --baseline NAME (e.g. pca32), found neither")
    if not with_pixels >= 0:
        raise ConfigError(f"expected --with-pixels W >= 0, found {with_pixels}; e.g. --with-pixels 1")
    if tensorboard:
        board.check_installed()


def _sources(run, baseline, out, data):
    """Where embed writes, the data it maps (default: the run's) and the run's crop (a run trained on windows:
    the centre window of each image)."""
    out = runs.output_dir(run, out) if run is not None else Path(out if out is not None else f"runs/embed-{baseline}")
    has_config = run is not None and (baseline is None or runs.has_config(run))
    train = (runs.read_config(run) if has_config else {}).get("train", {})
    return out, train.get("data") if data is None else data, train.get("crop")


def _write_map(out: Path, key: str, label: str, points, labels, ds, scores: dict, projector_codes=None) -> list[Path]:
    """The map's figures (coloured by class, with thumbnails), its .npz and, given ``projector_codes``, the
    TensorBoard projector's files; returns their paths."""
    names = ds.class_names or [str(i) for i in range(int(labels.max()) + 1)]
    figs = out / "figures"
    title = (f"{label}: trustworthiness@{scores['trustworthiness_neighbors']} {scores['trustworthiness']:.3f}, "
             f"2-D kNN-{KNN_NEIGHBORS} {scores['knn_accuracy']:.3f}")
    map_png = plots.embedding_map(points, labels, names, figs / f"map_{key}.png", title=title)
    thumb_png = plots.embedding_thumbnails(points, labels, ds.x.numpy(), spread_indices(points), names,
                                           figs / f"map_{key}_thumbnails.png", title=title)
    npz = _save_npz(out / f"embedding_{key}.npz", points=points, labels=labels.astype(np.int64),
                    indices=np.arange(len(points), dtype=np.int64), class_names=np.asarray(names, dtype=str))
    projector = [board.write_projector(out / board.FOLDER / f"embedding_{key}", projector_codes, labels, names,
                                       ds.x, tag=key)] if projector_codes is not None else []
    return [map_png, thumb_png, npz, *projector]


def embed(run=None, method: str = MapConfig.method, on: str = "test", baseline: str | None = None, data=None,
          limit: int | None = None, out=None, perplexity: float = MapConfig.perplexity,
          exaggeration: float | None = MapConfig.exaggeration, n_neighbors: int = MapConfig.n_neighbors,
          min_dist: float = MapConfig.min_dist, seed: int = MapConfig.seed, threads: int = MapConfig.threads,
          progress: bool = True, command: str | None = None, with_pixels: float = 0.0,
          tensorboard: bool = False) -> dict:
    """Map the codes of the ``on`` images to 2-D and score the map; returns the entry it
    adds to ``metrics.json["embedding"]``.

    Codes come from the model of ``run`` or, with ``baseline`` (``pca32``, ``pixels``), from
    the pixels, in which case ``run`` is only where the files go (``out`` when there is no
    run). ``data`` defaults to what the run was trained on. ``limit`` keeps the first N
    images. ``with_pixels`` = W > 0 maps the codes joined with W times the first 50 principal
    components of the pixels (fitted on the training images; :func:`joint_codes`), under the
    key ``<method>_pixels<W>``. ``aelab embed`` then rewrites the run's ``report.html`` when
    the run has a config. ``tensorboard``: the codes with their classes and thumbnails also go to
    ``out/tensorboard/embedding_<key>/`` for TensorBoard's projector (:func:`aelab.tensorboard.write_projector`).
    """
    config = MapConfig(method=method, perplexity=perplexity, exaggeration=exaggeration, n_neighbors=n_neighbors,
                       min_dist=min_dist, seed=seed, threads=threads, progress=progress).check(REDUCERS)
    _check_arguments(run, on, baseline, with_pixels, tensorboard)
    out, data, crop = _sources(run, baseline, out, data)
    ds: Dataset = load_dataset(data, on, limit=limit, crop=crop)
    if len(ds) < MIN_POINTS:  # before the model runs: the map's scores need that many
        fix = (f"raise --limit to {MIN_POINTS} or more, or drop it" if limit is not None and limit < MIN_POINTS else
               "embed a data set with more images (--data)")
        raise DataError(f"expected at least {MIN_POINTS} images to map and score (the {KNN_FOLDS}-fold "
                        f"kNN-{KNN_NEIGHBORS} of the map needs them), found {len(ds)} in the {on} split"
                        f"{f' of {data}' if data is not None else ''}; {fix}")
    t0 = time.perf_counter()
    train_cache: dict = {}

    def train_images():
        if "x" not in train_cache:
            train_cache["x"] = ds.x if on == "train" else load_dataset(data, "train", limit=limit, crop=crop).x
        return train_cache["x"]

    if baseline is None:
        model = runs.load_model(run)
        codes = model_codes(model, ds.x)
        source = f"{model.kind} autoencoder ({model.net} network), {codes.shape[1]}-d codes"
        key = method
    else:
        codes, source = baseline_codes(baseline, ds.x, train_images, seed)
        key = f"{baseline.strip().lower()}_{method}"
    mapped = codes
    if with_pixels > 0:
        components = min(JOINT_COMPONENTS, *ds.x.flatten(1).shape)
        pixels, _ = baseline_codes(f"pca{components}", ds.x, train_images, seed)
        mapped = joint_codes(codes, pixels, with_pixels)
        source += f" joined with {with_pixels:g} x PCA-{components} of the pixels"
        key += f"_pixels{with_pixels:g}"
    code_seconds = time.perf_counter() - t0

    points, info = reduce(mapped, config)
    t1 = time.perf_counter()
    labels = ds.y.numpy()
    scores = map_scores(ds.x.numpy(), points, labels, codes)
    score_seconds = time.perf_counter() - t1

    files = _write_map(out, key, f"{source} + {method}", points, labels, ds, scores,
                       mapped if tensorboard else None)

    entry = {"source": source, "method": method, "baseline": baseline, "split": on, "points": len(points),
             "code_dim": int(codes.shape[1]), "with_pixels": with_pixels, **scores, **info,
             "seconds_codes": round(code_seconds, 2), "seconds_map": info["seconds"],
             "seconds_scores": round(score_seconds, 2), "threads": threads, "seed": seed,
             "files": [str(p.relative_to(out)) for p in files]}
    entry.pop("seconds")
    if command:
        entry["command"] = command
    metrics_path = runs.run_file(out, runs.METRICS)
    maps = (runs.read_json(metrics_path) if metrics_path.exists() else {}).get("embedding", {})
    maps[key] = entry
    runs.update_metrics(out, embedding=maps)
    return entry


__all__ = ["MapConfig", "REDUCERS", "CODE_SOURCES", "register_reducer", "register_code_source", "reduce",
           "model_codes", "baseline_codes", "joint_codes", "map_scores", "spread_indices", "embed"]
