"""Looking inside a generative model (the variational kind): samples from the prior, the
2-D latent manifold, latent traversals and interpolation between two images.

Figures go to ``<run>/figures/vae_*.png``, where ``aelab report`` finds them:

- ``vae_samples.png``: ``n`` images decoded from z ~ p(z), the model's prior (the decoder's means);
- ``vae_manifold.png`` (2-D latent only): decoded z on a ``steps`` x ``steps`` grid of
  N(0, 1) quantiles, as in Kingma & Welling 2014, figure 4;
- ``vae_traversals.png``: one row per latent unit (the most used ones first, by their mean
  KL on test images), that unit swept from -3 to 3 with the others at a test image's mean;
- ``vae_interpolation.png``: decoded (1 - t) mu(a) + t mu(b) between two test images of
  different classes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import ownership, plots, runs
from .data import load_dataset
from .errors import ConfigError, DataNotFoundError
from .settings import check_seed

# The figures are grids: n samples in rows of 10, and steps points a row (steps x steps for the
# 2-D manifold). Beyond these they are no longer figures one can read, and drawing them takes ever
# longer (900 cells: about 17 s on a CPU; 10^5 steps never ends), so larger values are refused
# before any work.
MAX_SAMPLES = 400           # samples from the prior: 40 rows of 10
MAX_STEPS = 30              # points per traversal and interpolation, the manifold's side (30 x 30)
FIGURES = ("vae_samples.png", "vae_manifold.png", "vae_traversals.png", "vae_interpolation.png")


def check_bounds(n, steps) -> None:
    """Refuse ``n`` outside 1..MAX_SAMPLES and ``steps`` outside 2..MAX_STEPS, in one line."""
    for name, value, lo, hi, flag, example in (("n", n, 1, MAX_SAMPLES, "--n", 64),
                                               ("steps", steps, 2, MAX_STEPS, "--steps", 10)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"expected {name} a whole number from {lo} to {hi} (the figures are grids of "
                              f"images), found {value!r}; e.g. {flag} {example}")


def _test_images(run_config: dict, data, count: int):
    source = data if data is not None else run_config.get("train", {}).get("data")
    try:
        return load_dataset(source, "test", limit=count, crop=run_config.get("train", {}).get("crop"))
    except DataNotFoundError:
        return None


@torch.no_grad()
def sample(run: str | os.PathLike, out: str | os.PathLike | None = None, n: int = 64, seed: int = 0,
           data: str | None = None, steps: int = 10, traversals: int = 8) -> list[Path]:
    """Write the figures of a variational run (see the module docstring); return their paths.

    ``data``: where to take the test images for traversals and interpolation (default: the
    run's training data); without test images those two figures start from z = 0 / are skipped.
    ``n`` is at most :data:`MAX_SAMPLES` and ``steps`` at most :data:`MAX_STEPS`. The figures have
    aelab's names and replace earlier ones, but never one of the inputs (a ``data`` image of
    that name, the run's files).
    """
    check_bounds(n, steps)
    check_seed(seed)  # before any work: a seed the generator refuses is one line, not a traceback
    model = runs.load_model(run)
    if not hasattr(model, "sample"):
        raise ConfigError(f"expected a run of a generative kind (variational), found kind {model.kind!r} in {run}; "
                          "train one with `aelab train --kind variational`")
    run_config = runs.read_config(run)
    data = data if data is not None else run_config.get("train", {}).get("data")
    located = runs.locate(run)
    out = Path(out) if out is not None else runs.output_dir(run) / "figures"
    ownership.check_output_files([out / name for name in FIGURES],
                                 [located / runs.CONFIG, located / runs.WEIGHTS, *([data] if data else [])],
                                 overwrite=True)
    gen = torch.Generator().manual_seed(seed)
    written = [plots.image_grid(model.sample(n, generator=gen), out / "vae_samples.png", ncols=min(n, 10),
                                suptitle=f"{n} samples from the prior "
                                + ("N(0, I)" if getattr(model, "prior", "standard") == "standard" else "(VampPrior)"),
                                cell=0.9)]
    latent = model.latent_dim
    if latent == 2:
        q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, steps))
        zz = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2)  # row-major grid
        written.append(plots.image_grid(model.decode(zz), out / "vae_manifold.png", ncols=steps, cell=0.6,
                                        suptitle="The 2-D latent manifold (N(0, 1) quantiles 0.05..0.95)"))
    test = _test_images(run_config, data, 1000)
    base = torch.zeros(1, latent)
    order = torch.arange(latent)
    if test is not None:
        mu, logvar = model.posterior(test.x)
        kl_per_unit = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).mean(0)  # (latent,)
        order = torch.argsort(kl_per_unit, descending=True)
        base = mu[:1]
    sweep = torch.linspace(-3, 3, steps)
    named = []
    for j in order[:traversals].tolist():
        z = base.repeat(steps, 1)
        z[:, j] = sweep
        named.append((f"z{j}", model.decode(z)))
    written.append(plots.rows(named, out / "vae_traversals.png",
                              suptitle=f"Latent traversals, z_j from -3 to 3 (others at "
                                       f"{'the first test image' if test is not None else 'zero'})"))
    if test is not None:
        a = 0
        b = int(torch.nonzero(test.y != test.y[0])[0]) if bool((test.y != test.y[0]).any()) else min(1, len(test) - 1)
        t = torch.linspace(0, 1, steps)[:, None]
        z = (1 - t) * mu[a] + t * mu[b]  # (steps, latent)
        images = torch.cat([test.x[a:a + 1], model.decode(z), test.x[b:b + 1]])
        titles = [f"test {a}"] + [f"mu, t={v:.2f}" for v in t.flatten().tolist()] + [f"test {b}"]
        written.append(plots.rows([("", images)], out / "vae_interpolation.png", titles=titles))
    return written
