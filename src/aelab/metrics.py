"""Quality metrics as docs/protocols.md defines them.

- PSNR: per image ``10 log10(1 / mean((x - x_hat)^2))`` (data range 1), then the mean, dB.
- SSIM: per image as ``skimage.metrics.structural_similarity(x, x_hat, data_range=1)``
  (7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03), then the mean. The
  implementation here is vectorised in torch; it agrees with skimage to ~1e-6 (tested).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError
from .models.contractive import jacobian_frobenius_sq


def psnr_per_image(x: torch.Tensor, x_hat: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    mse = ((x.double() - x_hat.double()) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(eps))


def psnr(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean over images of the per-image PSNR, in dB."""
    return float(psnr_per_image(x, x_hat).mean())


SSIM_WINDOW = 7  # skimage's default window, docs/protocols.md


def check_ssim_size(shape, fix: str = "measure SSIM on larger images", win_size: int = SSIM_WINDOW) -> None:
    """Refuse images (``shape`` (..., H, W)) smaller than SSIM's window, which needs a
    ``win_size`` x ``win_size`` patch inside each image; ``fix`` is the advice the caller gives."""
    h, w = int(shape[-2]), int(shape[-1])
    if h < win_size or w < win_size:
        raise DataError(f"expected images of at least {win_size}x{win_size} pixels (SSIM's {win_size}x{win_size} "
                        f"window), found {h}x{w}; {fix}")


def ssim_per_image(x: torch.Tensor, x_hat: torch.Tensor, win_size: int = SSIM_WINDOW) -> torch.Tensor:
    """SSIM of each image (mean over channels), as skimage computes it.

    skimage filters the whole image (reflect padding) and then averages only the pixels at
    least ``win_size // 2`` from the border, whose windows lie inside the image: exactly
    the windows of a valid (unpadded) average pool, which is what this computes.
    """
    check_ssim_size(x.shape, win_size=win_size)
    x = x.double()
    y = x_hat.double()
    n, c, h, w = x.shape
    x = x.reshape(n * c, 1, h, w)
    y = y.reshape(n * c, 1, h, w)
    k1, k2, data_range = 0.01, 0.03, 1.0
    npix = win_size * win_size
    cov_norm = npix / (npix - 1)  # sample covariance, skimage's default

    def mean(t):
        return F.avg_pool2d(t, win_size, stride=1)

    ux, uy = mean(x), mean(y)
    uxx, uyy, uxy = mean(x * x), mean(y * y), mean(x * y)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).reshape(n, c).mean(1)


def ssim(x: torch.Tensor, x_hat: torch.Tensor, batch_size: int = 2000) -> float:
    """Mean over images of the per-image SSIM."""
    vals = [ssim_per_image(x[i:i + batch_size], x_hat[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return float(torch.cat(vals).mean())


def quality(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    return {"psnr": round(psnr(x, x_hat), 4), "ssim": round(ssim(x, x_hat), 5)}


# --------------------------------------------------------------------------- 2-D maps
# docs/protocols.md: trustworthiness@10 of the map against the test pixels (first 5,000 test
# images) and the 5-fold kNN (k = 5) accuracy of the 2-D points.

def trustworthiness(x_high, x_low, n_neighbors: int = 10, batch_size: int = 500) -> float:
    """How far the map's neighbours are from being true neighbours (Venna & Kaski 2001,
    "Neighborhood preservation in nonlinear projection methods").

    T(k) = 1 - 2 / (n k (2n - 3k - 1)) * sum_i sum_{j in N_k^low(i)} max(0, r(i, j) - k)

    with N_k^low(i) the k nearest neighbours of point i in the map (``x_low``) and
    r(i, j) >= 1 the rank of j among i's neighbours in the original space (``x_high``,
    Euclidean). 1 means every map neighbour is a true neighbour. The same number as
    ``sklearn.manifold.trustworthiness`` (tested), computed in row batches so that 10,000
    points need ``batch_size`` x n distances at a time instead of the full n x n matrix
    and its argsort.
    """
    xh = torch.as_tensor(np.asarray(x_high, dtype=np.float64)).flatten(1)
    xl = torch.as_tensor(np.asarray(x_low, dtype=np.float64)).flatten(1)
    n, k = len(xh), int(n_neighbors)
    if len(xl) != n:
        raise DataError(f"expected as many map points as images, found {len(xl)} points for {n} images")
    if not 1 <= k < n / 2:
        raise ConfigError(f"expected 1 <= n_neighbors < n / 2 = {n / 2:g}, found {k}; use fewer neighbours "
                          "or more points")
    sq_h = (xh * xh).sum(1)
    sq_l = (xl * xl).sum(1)
    penalty = 0.0
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(start + batch_size, n))
        d_low = sq_l[rows, None] + sq_l[None, :] - 2.0 * xl[rows] @ xl.T  # (B, n) squared distances
        d_low[torch.arange(len(rows)), rows] = float("inf")              # a point is not its own neighbour
        nbrs = d_low.topk(k, dim=1, largest=False).indices               # (B, k)
        d_high = sq_h[rows, None] + sq_h[None, :] - 2.0 * xh[rows] @ xh.T
        d_high[torch.arange(len(rows)), rows] = float("inf")
        d_nbr = d_high.gather(1, nbrs)                                   # (B, k)
        rank = 1 + (d_high[:, None, :] < d_nbr[:, :, None]).sum(-1)      # (B, k): r(i, j)
        penalty += float((rank - k).clamp_min(0).sum())
    return 1.0 - penalty * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))


def knn_cv_accuracy(points, labels, n_neighbors: int = 5, folds: int = 5, seed: int = 0) -> float:
    """Mean accuracy of a k-nearest-neighbour classifier (Euclidean, majority vote, ties to
    the smallest label) over ``folds`` shuffled folds of ``points`` (``KFold(shuffle=True,
    random_state=seed)``): how well the classes separate in the map, with no data beyond
    the points themselves."""
    from sklearn.model_selection import KFold, cross_val_score  # heavy: scikit-learn, loaded on first use
    from sklearn.neighbors import KNeighborsClassifier

    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    labels = np.asarray(labels)
    if len(points) != len(labels):
        raise DataError(f"expected one label per point, found {len(labels)} labels for {len(points)} points")
    need = max(folds, -(-n_neighbors * folds // (folds - 1)))  # every training part holds k points
    if len(points) < need:
        raise DataError(f"expected at least {need} points for {folds}-fold kNN-{n_neighbors}, found {len(points)}; "
                        "embed more images (raise --limit)")
    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=n_neighbors), points, labels, cv=cv)
    return float(scores.mean())


# -- probes and code statistics (docs/protocols.md "Codes") ---------------------------------

def knn_accuracy(train_codes, train_labels, test_codes, test_labels, n_neighbors: int = 5) -> float:
    """Accuracy on the test codes of a k-nearest-neighbour classifier (Euclidean, majority
    vote) fitted on the training codes: docs/protocols.md's kNN probe (k = 5, 60,000 train codes,
    10,000 test codes). Codes are flattened to (N, D)."""
    from sklearn.neighbors import KNeighborsClassifier  # heavy: scikit-learn, loaded on first use

    a, b = _flat(train_codes), _flat(test_codes)
    ya, yb = np.asarray(train_labels), np.asarray(test_labels)
    if len(a) != len(ya) or len(b) != len(yb):
        raise DataError(f"expected one label per code, found {len(ya)} labels for {len(a)} training codes and "
                        f"{len(yb)} for {len(b)} test codes")
    if len(a) < n_neighbors:
        raise DataError(f"expected at least {n_neighbors} training codes for kNN-{n_neighbors}, found {len(a)}")
    return float(KNeighborsClassifier(n_neighbors=n_neighbors).fit(a, ya).score(b, yb))


def linear_probe_accuracy(train_codes, train_labels, test_codes, test_labels, max_iter: int = 1000) -> float:
    """Test accuracy of ``sklearn.linear_model.LogisticRegression`` fitted on the standardised
    training codes (docs/protocols.md's linear probe)."""
    from sklearn.linear_model import LogisticRegression  # heavy: scikit-learn, loaded on first use
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler  # heavy: scikit-learn, loaded on first use

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    return float(probe.fit(_flat(train_codes), np.asarray(train_labels)).score(_flat(test_codes), np.asarray(test_labels)))


def near_zero_fraction(codes, relative: float = 0.05) -> float:
    """The fraction of code activations with |a| <= ``relative`` * max |a| (max over all
    codes and units given): how sparse the codes are, per activation, averaged over images.
    Relative to the largest activation so that shrinking every code by a constant (which an
    L1 penalty rewards and a decoder can undo) does not count as sparsity; 5% counts a ReLU
    unit's exact zeros and a sigmoid unit below ~0.05 (pre-activation below about -3) as off."""
    a = np.abs(_flat(codes))
    top = float(a.max()) if a.size else 0.0
    return float((a <= relative * top).mean()) if top > 0 else 1.0


def jacobian_norm(model, x: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """The exact Frobenius norm ||J_f(x)||_F of the encoder's Jacobian (codes with respect to
    the input) for each image of ``x``, by autograd (one backward pass per code unit)."""
    was_training = model.training
    model.eval()
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    sq = jacobian_frobenius_sq(lambda xb: model.encode(xb.to(device)), x, batch_size)
    model.train(was_training)
    return sq.sqrt()


def _flat(a) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return a.reshape(len(a), -1).astype(np.float32, copy=False)
