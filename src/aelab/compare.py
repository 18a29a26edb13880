"""Every kind side by side: train each with the same network, code size, epochs, batch
size, learning rate and seed on the same data, measure each the same way (docs/protocols.md),
and write one table (``compare.md``, ``compare.json``) and one figure of reconstructions
(``reconstructions.png``; ``denoised.png`` shows the outputs for noisy inputs). Each model is also a run directory (``<out>/<name>/``).

Measured for every kind, on the test set:

- ``psnr`` / ``ssim``: reconstruction of the clean images;
- ``psnr_denoise_0.2``: the clean image against the model's output for the noisy input
  (fixed evaluation noise, factor 0.2; the noisy input itself is in ``noisy_psnr_0.2``);
- ``knn5``: kNN-5 accuracy of the codes (fitted on the training codes);
- ``near_zero``: the fraction of code activations at most 5% of the largest one;
- ``jacobian``: the mean exact ||J_f(x)||_F on the first ``jacobian_images`` test images;
- ``neg_elbo`` / ``iw_nll`` (kinds with a likelihood): the -ELBO and the importance-weighted
  bound of -log p(x) with ``iw_samples`` samples, in nats, on a fixed binarisation of the
  test images (seed 0) when the model is trained on dynamically binarised images.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import anchors, plots, runs
from .data import load_dataset
from .errors import ConfigError
from .inference import apply_model
from .memory import check_training_memory
from .metrics import jacobian_norm, knn_accuracy, near_zero_fraction, psnr, ssim
from .models.variational import binarize
from .noise import add_evaluation_noise, evaluation_noise
from .report.tables import compare_markdown
from .settings import CompareConfig, TrainConfig
from .train import check_new_run, train_run


@dataclass
class Entry:
    """One row of the comparison: a kind with its hyper-parameters."""

    name: str                                          # the row's label and its run folder
    kind: str                                          # a registered kind
    options: dict = field(default_factory=dict)        # the kind's hyper-parameters
    net_options: dict = field(default_factory=dict)    # on top of the shared ones (e.g. a wider code)
    noise: str | None = None                           # training corruption; None = the kind's default


# The kinds' settings for the comparison. Every row shares the network, the code size
# (``latent_dim``; the sparse rows use a wide code, which their penalty keeps sparse), the
# reconstruction loss (MSE, which PSNR measures; the variational row's is its Bernoulli
# likelihood), the epochs, batch size, learning rate schedule and seed.
ENTRIES = (
    Entry("undercomplete", "undercomplete", {"reconstruction": "mse"}),
    # the sparse weights: the smallest tried that keeps >= 92% of the codes near zero after 10
    # epochs (l1: 1.5e-4 -> 92.3%; kl: rho 0.02 -> 88.3%, rho 0.01 -> 94.0%, both beta 3e-3)
    Entry("sparse-l1", "sparse", {"reconstruction": "mse", "penalty": "l1", "sparsity_weight": 1.5e-4},
          {"latent_dim": 256}),
    Entry("sparse-kl", "sparse", {"reconstruction": "mse", "penalty": "kl", "sparsity_weight": 3e-3,
                                  "sparsity_target": 0.01}, {"latent_dim": 256}),
    Entry("contractive", "contractive", {"reconstruction": "mse", "contractive_weight": 1e-4}),
    Entry("denoising", "denoising", {"reconstruction": "mse"}),
    Entry("variational", "variational", {"reconstruction": "bce"}),
)


VAE_ROW = "variational"  # the row the vae_* arguments change


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-")


@torch.no_grad()
def _codes(model, x, batch_size=2000):
    device = next(model.parameters()).device
    return torch.cat([model.codes(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def measure_kind(model, train, test, jacobian_images: int = 1000, iw_samples: int = 1000,
            noise_factor: float = 0.2) -> dict:
    """The comparison's figures for one trained model (see the module docstring)."""
    row = {}
    x_hat = apply_model(model, test.x)
    row["psnr"], row["ssim"] = round(psnr(test.x, x_hat), 3), round(ssim(test.x, x_hat), 4)
    noisy = add_evaluation_noise(test.x, noise_factor, evaluation_noise(test.x.shape))
    row[f"psnr_denoise_{noise_factor:g}"] = round(psnr(test.x, apply_model(model, noisy)), 3)
    codes_test = _codes(model, test.x)
    row["code_size"] = int(codes_test.shape[1])
    if len(train.y) and len(test.y):
        row["knn5"] = round(knn_accuracy(_codes(model, train.x), train.y, codes_test, test.y), 4)
    row["near_zero"] = round(near_zero_fraction(codes_test), 4)
    row["jacobian"] = round(float(jacobian_norm(model, test.x[:jacobian_images]).mean()), 4)
    if hasattr(model, "nll_bounds"):  # a kind with a likelihood (the variational one)
        x_eval = binarize(test.x) if model.binarizes else test.x
        bounds = model.nll_bounds(x_eval, samples=iw_samples)
        row["neg_elbo"] = round(float(bounds["neg_elbo"].mean()), 2)
        row["iw_nll"] = round(float(bounds["iw"].mean()), 2)
        row["likelihood"] = model.likelihood + (" (test images binarised once, seed 0)" if model.binarizes else "")
    return row


DEFAULTS = CompareConfig()  # the defaults, written once


def compare(data: str | None = None, out: str = "runs/compare", net: str = DEFAULTS.net, latent_dim: int = DEFAULTS.latent_dim,
            epochs: int = DEFAULTS.epochs, batch_size: int = DEFAULTS.batch_size, lr: float = DEFAULTS.lr, schedule: str = DEFAULTS.schedule,
            seed: int = DEFAULTS.seed, limit: int | None = None, kinds: list[str] | None = None,
            iw_samples: int = DEFAULTS.iw_samples, jacobian_images: int = DEFAULTS.jacobian_images,
            net_options: dict | None = None, device: str = "auto", threads: int | None = None,
            progress: bool = True, command: str | None = None, overwrite: bool = False, vae_net: str | None = None,
            vae_net_options: dict | None = None, vae_options: dict | None = None) -> dict:
    """Train every kind (or the entries of ``kinds``, by kind or row name) with the same
    settings, measure each, and write ``compare.md``, ``compare.json`` and
    ``reconstructions.png`` into ``out``; return the JSON's content (``runs``: the run
    directory of each row; ``aelab compare`` then writes each one's report.html).

    The variational row may differ: ``vae_net`` (another network, with ``latent_dim`` and
    ``vae_net_options`` only), ``vae_net_options`` (on top of the shared ones) and
    ``vae_options`` (its hyper-parameters, e.g. ``{"kl_warmup": 4690}``). A row's run directory
    that already holds a run is refused unless ``overwrite`` (see :func:`aelab.train.train_run`).
    """
    entries = [e for e in ENTRIES if kinds is None or e.kind in kinds or e.name in kinds]
    if not entries:
        names = sorted({e.kind for e in ENTRIES} | {e.name for e in ENTRIES})
        raise ConfigError(f"expected kinds among {', '.join(names)}, found {', '.join(kinds or [])}")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule, seed=seed, device=device,
                         threads=threads, progress=progress).check()
    out = Path(out)
    for entry in entries:  # refuse before any training: an earlier comparison's runs are there
        check_new_run(out / _slug(entry.name), overwrite)
    train, test = load_dataset(data, "train", limit=limit), load_dataset(data, "test", limit=limit)
    shared = {"latent_dim": latent_dim, **(net_options or {})}
    noisy = add_evaluation_noise(test.x, 0.2, evaluation_noise(test.x.shape))
    rows, recon, denoised = [], [("original", test.x[:10])], [("original", test.x[:10]), ("noisy 0.2", noisy[:10])]
    vae_shared = shared if vae_net in (None, net) else {"latent_dim": latent_dim}
    specs = []
    for entry in entries:
        entry_net, entry_net_options, entry_options = net, {**shared, **entry.net_options}, entry.options
        if entry.name == VAE_ROW:  # the --vae-* options are this row's
            entry_net = vae_net or net
            entry_net_options = {**vae_shared, **entry.net_options, **(vae_net_options or {})}
            entry_options = {**entry.options, **(vae_options or {})}
        spec = {"kind": entry.kind, "input_shape": train.input_shape, "net": entry_net,
                "net_options": entry_net_options, "options": entry_options}
        specs.append((entry, spec))
    for entry, spec in specs:  # every row fits in memory, checked before the first is trained or an old run goes
        check_training_memory(spec, config, len(train), len(test))
    for entry, spec in specs:
        run_config = dataclasses.replace(config, noise=entry.noise)
        run_dir = out / _slug(entry.name)
        t0 = time.perf_counter()
        model, history = train_run(spec, train.x, test.x, run_config, run_dir, record=run_config.record(data, limit),
                                   extra={"class_names": train.class_names}, overwrite=overwrite)
        seconds = time.perf_counter() - t0
        model.eval()
        row = {"name": entry.name, "kind": entry.kind, "net": model.net, "options": model.options(),
               "net_options": model.net_options,
               "noise": run_config.noise or model.default_noise, **measure_kind(model, train, test, jacobian_images,
                                                                            iw_samples),
               "train_seconds": round(seconds, 1), "final_train_terms": {k: v[-1] for k, v in history["train"].items()}}
        runs.update_metrics(run_dir, compare=row)
        rows.append(row)
        recon.append((entry.name, apply_model(model, test.x[:10])))
        denoised.append((entry.name, apply_model(model, noisy[:10])))
    result = {
        "settings": {"net": net, "net_options": shared, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                     "schedule": schedule,
                     "seed": seed, "limit": limit, "data": data, "train_images": len(train), "test_images": len(test),
                     "iw_samples": iw_samples, "jacobian_images": min(jacobian_images, len(test)),
                     "fashion_mnist_full": anchors.applies(train.class_names, len(train), len(test)),
                     "vae_net": vae_net, "vae_net_options": vae_net_options, "vae_options": vae_options},
        "noisy_psnr_0.2": round(psnr(test.x, noisy), 3),
        "command": command,
        "rows": rows,
        "runs": [str(out / _slug(e.name)) for e in entries],  # one run directory per row
    }
    runs.write_json(out / "compare.json", result)
    runs.atomic_write_text(out / "compare.md", compare_markdown(result))
    plots.rows(recon, out / "reconstructions.png", suptitle="Reconstructions of the first 10 test images")
    plots.rows(denoised, out / "denoised.png", suptitle="Each kind's output for the noisy images (factor 0.2)")
    return result


