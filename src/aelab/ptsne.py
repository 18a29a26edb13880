"""Parametric t-SNE: a neural network that maps codes to the plane with the t-SNE objective.

van der Maaten 2009, "Learning a parametric embedding by preserving local structure"
(AISTATS). Instead of optimising one free 2-D point per input, as t-SNE does, a network
f_theta (here an MLP D -> 500 -> 500 -> 2000 -> 2 with ReLU, the paper's layer sizes,
trained with Adam from a seeded initialisation instead of the paper's RBM pretraining) is
trained on mini-batches of B codes x_1..x_B. For every batch:

- input affinities, as in t-SNE: p_{j|i} = exp(-b_i |x_i - x_j|^2) / sum_{k != i} exp(-b_i |x_i - x_k|^2),
  with each point's precision b_i = 1 / 2 s_i^2 found by binary search so that the
  perplexity 2^H(P_i) (H in bits) equals ``perplexity``; by default only the
  ``3 * perplexity`` nearest neighbours of each point in the batch take part (the rest get
  p_{j|i} = 0, as in Barnes-Hut t-SNE, van der Maaten 2014), else all B - 1 others;
  symmetrised: p_ij = (p_{j|i} + p_{i|j}) / 2B, so P is symmetric and sums to 1;
- output affinities, a Student-t kernel with ``dof`` = a degrees of freedom on y_i = f(x_i):
  w_ij = (1 + |y_i - y_j|^2 / a)^(-(a + 1) / 2), q_ij = w_ij / sum_{k != l} w_kl
  (a = 1 is t-SNE's Cauchy kernel; the paper also tries a = d - 1 and a learned a;
  a < 1 gives heavier tails and tighter clusters, Kobak et al. 2019);
- the loss, summed over the pairs i != j of the batch (a sum, not a mean; nats):
  KL(P || Q) = sum_ij p_ij log(p_ij / q_ij)
             = sum_ij p_ij log p_ij - e * sum_ij p_ij log w_ij + log sum_{k != l} w_kl
  with the exaggeration e = 1 (plain KL); e != 1 multiplies the attraction as t-SNE's
  exaggeration does (Boehm, Berens & Kobak 2022); the optional early exaggeration uses
  e = ``early_exaggeration`` for the first ``early_epochs`` epochs.

Because the map is a function, new codes are placed with :meth:`ParametricTSNE.transform`
(out of sample), which is what the parametric version is for. As an ``aelab embed``
reducer (``--method ptsne``) it is fitted on the codes it maps.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, DataError


# --------------------------------------------------------------------------- affinities and loss

def _binary_search(d2: torch.Tensor, perplexity: float, tol: float = 1e-5, max_iter: int = 200) -> torch.Tensor:
    """Rows of p_{j|i} from squared distances ``d2`` (N, K) (``inf`` for pairs left out):
    each row's precision found by bisection so that its entropy is log(perplexity) nats."""
    d = d2 - d2.min(dim=1, keepdim=True).values  # shift each row to start at 0 (p is unchanged); (N, K)
    target = math.log(perplexity)
    n = d.shape[0]
    finite = torch.where(torch.isfinite(d), d, torch.zeros_like(d))
    beta = 1.0 / finite.mean(1).clamp_min(1e-12)  # a start at the scale of each row's distances
    lo = torch.zeros(n, dtype=d.dtype)
    hi = torch.full((n,), math.inf, dtype=d.dtype)
    for _ in range(max_iter):
        w = torch.exp(-d * beta[:, None])  # (N, K); exp(-inf) = 0 for pairs left out
        s = w.sum(1)
        h = torch.log(s) + beta * (w * finite).sum(1) / s  # entropy of the row in nats
        diff = h - target
        if bool((diff.abs() < tol).all()):
            break
        too_flat = diff > 0  # entropy too high: the kernel must narrow, so beta grows
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2.0, (lo + hi) / 2.0)
    return w / s[:, None]


def joint_affinities(x: torch.Tensor, perplexity: float = 30.0, neighbors: int | None = None) -> torch.Tensor:
    """t-SNE's symmetric input affinities P (B, B) of the rows of ``x`` (B, D), in float64:
    P = (P_cond + P_cond^T) / 2B with zero diagonal, summing to 1. ``neighbors``: how many
    nearest neighbours of each point take part (None: all the others)."""
    b = x.shape[0]
    if b < 3:
        raise DataError(f"expected at least 3 points per batch for t-SNE affinities, found {b}")
    k = b - 1 if neighbors is None else int(min(neighbors, b - 1))
    if not 1 <= perplexity < k:
        raise ConfigError(f"expected perplexity between 1 and the {k} neighbours per point, found {perplexity:g}; "
                          f"lower --perplexity or use larger batches")
    x = x.detach().to(torch.float64)
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(0.0)  # (B, B) squared distances
    d2.fill_diagonal_(math.inf)
    if k == b - 1:
        cond = _binary_search(d2, perplexity)  # (B, B), the diagonal is 0
    else:
        d2k, idx = torch.topk(d2, k, dim=1, largest=False)  # (B, k) nearest neighbours, self excluded
        cond = torch.zeros(b, b, dtype=torch.float64).scatter_(1, idx, _binary_search(d2k, perplexity))
    p = (cond + cond.T) / (2.0 * b)
    return p / p.sum()  # exact normalisation against rounding


def tsne_loss(p: torch.Tensor, y: torch.Tensor, dof: float = 1.0, exaggeration: float = 1.0) -> torch.Tensor:
    """KL(P || Q) in nats (exaggeration 1), summed over the pairs i != j, for the points
    ``y`` (B, 2) and input affinities ``p`` (B, B) symmetric, zero diagonal, sum 1; the
    Student-t kernel with ``dof`` degrees of freedom. Computed in ``y``'s dtype."""
    b = y.shape[0]
    p = p.to(y.dtype)
    sq = (y * y).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * y @ y.T).clamp_min(0.0)  # (B, B)
    log_w = -(dof + 1.0) / 2.0 * torch.log1p(d2 / dof)  # (B, B) log of the Student-t kernel; 0 on the diagonal
    eye = torch.eye(b, dtype=torch.bool)
    log_z = torch.logsumexp(log_w.masked_fill(eye, -math.inf).flatten(), dim=0)  # log sum_{k != l} w_kl
    entropy_term = torch.special.xlogy(p, p).sum().detach()  # sum p log p: a constant for the gradient
    attraction = (p * log_w).sum()  # p_ii = 0, so this is the sum over i != j
    return entropy_term - exaggeration * attraction + log_z


# --------------------------------------------------------------------------- the model

def mlp(input_dim: int, hidden=(500, 500, 2000), output_dim: int = 2) -> nn.Sequential:
    """input_dim -> hidden... -> output_dim, ReLU between, a linear output."""
    layers, width = [], input_dim
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


@dataclass
class PtsneConfig:
    perplexity: float = 30.0        # target perplexity of each point's P row inside a batch (the paper's 30)
    neighbors: int | None = None    # neighbours per point in P; None = 3 * perplexity (Barnes-Hut t-SNE's choice)
    all_pairs: bool = False         # True: every other point of the batch takes part in P (the paper), slower
    dof: float = 1.0                # degrees of freedom of the Student-t kernel (1 = t-SNE)
    hidden: tuple = (500, 500, 2000)  # the paper's hidden layer sizes
    batch_size: int = 2000          # points per batch; P is computed within each batch (the paper: 5,000)
    epochs: int = 40                # passes over the codes, reshuffled every epoch
    lr: float = 1e-3                # Adam learning rate
    exaggeration: float = 1.0       # attraction factor after the early epochs (1 = plain KL)
    early_exaggeration: float = 4.0  # attraction factor of the first early_epochs, to untangle clusters
    early_epochs: int = 5
    seed: int = 0                   # network initialisation and batch order
    threads: int = 1                # torch threads while fitting and mapping
    progress: bool = True           # a tqdm bar over epochs on stderr

    def check(self) -> "PtsneConfig":
        if not self.perplexity >= 1:
            raise ConfigError(f"expected perplexity >= 1, found {self.perplexity}; e.g. --perplexity 30")
        if not self.dof > 0:
            raise ConfigError(f"expected dof > 0 (Student-t degrees of freedom), found {self.dof}; e.g. 1")
        if not self.batch_size >= 3:
            raise ConfigError(f"expected batch_size >= 3, found {self.batch_size}; e.g. 2000")
        if not (self.epochs >= 1 and self.early_epochs >= 0 and self.lr > 0 and self.threads >= 1):
            raise ConfigError(f"expected epochs >= 1, early_epochs >= 0, lr > 0 and threads >= 1, found "
                              f"{self.epochs}, {self.early_epochs}, {self.lr}, {self.threads}")
        if not (self.exaggeration > 0 and self.early_exaggeration > 0):
            raise ConfigError(f"expected exaggeration > 0, found {self.exaggeration} / {self.early_exaggeration}")
        return self


class ParametricTSNE:
    """Parametric t-SNE with scikit-learn's conventions: ``fit(codes)`` returns self,
    ``transform(codes)`` maps any codes (N, D) to (N, 2). Learned: ``net_``, ``mean_``,
    ``scale_`` (the network sees standardised codes), ``history_`` (mean batch loss per epoch)."""

    def __init__(self, config: PtsneConfig | None = None, **overrides):
        self.config = PtsneConfig(**{**asdict(config or PtsneConfig()), **overrides})

    def _codes(self, codes) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(codes, dtype=np.float32).reshape(len(codes), -1))
        if not torch.isfinite(x).all():
            raise DataError("expected finite codes, found NaN or infinite values")
        return x

    def fit(self, codes) -> "ParametricTSNE":
        c = self.config.check()
        x = self._codes(codes)
        n = len(x)
        batch = min(c.batch_size, n)
        if n < 3:
            raise DataError(f"expected at least 3 codes for parametric t-SNE, found {n}")
        perplexity = min(c.perplexity, max(1.0, (batch - 1) / 3.0))  # tiny data: the largest sensible one
        neighbors = None if c.all_pairs else (c.neighbors or math.ceil(3 * perplexity))
        self.perplexity_ = perplexity
        self.mean_ = x.mean(0)
        self.scale_ = x.std().clamp_min(1e-12)  # one scale for all dimensions keeps the geometry
        xs = (x - self.mean_) / self.scale_
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(c.threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.seed)
                self.net_ = mlp(x.shape[1], c.hidden)
            g = torch.Generator().manual_seed(c.seed)
            opt = torch.optim.Adam(self.net_.parameters(), lr=c.lr)
            steps = [(s, min(s + batch, n)) for s in range(0, n, batch)]
            if len(steps) > 1 and steps[-1][1] - steps[-1][0] < batch // 2:  # fold a short last batch into the one before
                steps[-2:] = [(steps[-2][0], n)]
            bar = None
            if c.progress:
                from tqdm.auto import tqdm  # only with a progress bar: tqdm
                bar = tqdm(total=c.epochs, desc="parametric t-SNE", unit="epoch", file=sys.stderr, dynamic_ncols=True)
            self.history_ = []
            t0 = time.perf_counter()
            for epoch in range(c.epochs):
                e = c.early_exaggeration if epoch < c.early_epochs else c.exaggeration
                order = torch.randperm(n, generator=g)
                total = 0.0
                for s, t in steps:
                    idx = order[s:t]
                    p = joint_affinities(x[idx], perplexity, neighbors)  # P on the raw codes
                    loss = tsne_loss(p, self.net_(xs[idx]), c.dof, e)
                    if not torch.isfinite(loss):
                        raise DataError(f"parametric t-SNE loss became {loss.item()} at epoch {epoch + 1}; "
                                        f"try a lower lr (now {c.lr})")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item()
                self.history_.append(total / len(steps))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.history_[-1]:.3f}")
            self.seconds_ = time.perf_counter() - t0
            if bar is not None:
                bar.close()
        finally:
            torch.set_num_threads(previous_threads)
        return self

    @torch.no_grad()
    def transform(self, codes, batch_size: int = 10000) -> np.ndarray:
        if not hasattr(self, "net_"):
            raise ConfigError("expected a fitted ParametricTSNE, found fit() not called yet")
        x = self._codes(codes)
        if x.shape[1] != self.mean_.shape[0]:
            raise DataError(f"expected codes of {self.mean_.shape[0]} dimensions (as fitted), found {x.shape[1]}")
        xs = (x - self.mean_) / self.scale_
        self.net_.eval()
        out = torch.cat([self.net_(xs[i:i + batch_size]) for i in range(0, len(xs), batch_size)])
        return out.numpy().astype(np.float32)

    def fit_transform(self, codes) -> np.ndarray:
        return self.fit(codes).transform(codes)

    def info(self) -> dict:
        c = self.config
        return {"implementation": f"aelab parametric t-SNE (torch {torch.__version__}, MLP "
                                  f"{'-'.join(str(h) for h in c.hidden)}, Adam)",
                "perplexity": self.perplexity_, "neighbors": "all in batch" if c.all_pairs else
                (c.neighbors or math.ceil(3 * self.perplexity_)), "dof": c.dof, "batch_size": c.batch_size,
                "epochs": c.epochs, "lr": c.lr, "exaggeration": c.exaggeration,
                "early_exaggeration": c.early_exaggeration, "early_epochs": c.early_epochs,
                "final_loss": round(self.history_[-1], 4), "seconds_fit": round(self.seconds_, 2)}


def reduce_ptsne(codes: np.ndarray, config) -> tuple[np.ndarray, dict]:
    """The ``ptsne`` reducer of :mod:`aelab.embed`: fit on ``codes`` and map them. Takes
    perplexity, exaggeration, seed, threads and progress from the MapConfig; the rest
    are :class:`PtsneConfig`'s defaults."""
    model = ParametricTSNE(perplexity=config.perplexity, exaggeration=config.exaggeration or 1.0,
                           seed=config.seed, threads=config.threads, progress=config.progress)
    points = model.fit_transform(codes)
    return points, model.info()


__all__ = ["ParametricTSNE", "PtsneConfig", "joint_affinities", "tsne_loss", "mlp", "reduce_ptsne"]
