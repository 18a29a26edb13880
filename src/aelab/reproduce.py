"""The seed experiment end to end (the TensorFlow "Intro to Autoencoders" denoising
tutorial, on the real Fashion-MNIST): sample grids, noise, the convolutional denoiser
trained with Adam and MSE for 10 epochs and validated on the test set, then noisy /
cleaned / original rows, PSNR/SSIM at four noise levels, and the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from . import distributed, plots, runlock, runs
from .data import load_dataset
from .errors import ConfigError
from .evaluate import NOISE_FACTORS, denoising_quality, hardest_images
from .inference import apply_model
from .memory import check_training_memory
from .nets import count_parameters, describe
from .noise import Gaussian, add_evaluation_noise, parse_noise
from .report import write_report
from .settings import FAST, TUTORIAL, TrainConfig
from .train import check_new_run, train_run


def _class_counts(train, test) -> dict:
    counts = {}
    for split, ds in (("train", train), ("test", test)):
        binc = torch.bincount(ds.y, minlength=len(ds.class_names))
        for name, c in zip(ds.class_names, binc.tolist()):
            counts.setdefault(name, {})[split] = c
    return counts


def reproduce(out: str = "runs/reproduce", epochs: int | None = None, noise_factor: float | None = None,
              batch_size: int | None = None, lr: float | None = None, seed: int | None = None,
              limit: int | None = None, data: str | None = None, resume: bool = False, device: str = "auto",
              threads: int | None = None, progress: bool = True, command: str | None = None, fast: bool = False,
              overwrite: bool = False, tensorboard: bool | None = None) -> dict:
    """Run the whole experiment into ``out`` and return its metrics (also in ``metrics.json``).

    ``limit`` keeps the first N images of both splits, for a quick look. ``fast`` trains with
    the :data:`aelab.settings.FAST` preset instead of the tutorial's schedule; explicit ``epochs``,
    ``batch_size`` and ``lr`` override either preset. ``resume`` continues the run's own plan
    (its epochs, batch size, learning rate, schedule, seed and noise factor) except what is given
    here; ``noise_factor`` None: the run's own on resume, else the tutorial's 0.2.
    ``out`` is locked while it is written; a run already there is refused unless ``resume`` or
    ``overwrite`` (which removes the old run's files first; see :func:`aelab.train.train_run`).
    ``tensorboard``: write TensorBoard event files under ``out/tensorboard/`` (None: the run's own
    choice on resume, else off; see :mod:`aelab.tensorboard`).
    """
    if resume and overwrite:
        raise ConfigError("expected --resume or --overwrite, found both: --resume continues the run in --out, "
                          "--overwrite replaces it; pass one of them")
    out = Path(out)
    cmd = command or "aelab reproduce " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    with (runlock.hold(out, cmd) if distributed.is_main() else contextlib.nullcontext()):
        if not resume and distributed.is_main():
            check_new_run(out, overwrite)
        return _reproduce(out, epochs, noise_factor, batch_size, lr, seed, limit, data, resume, device, threads,
                          progress, cmd, fast, overwrite, tensorboard)


def _data_figures(train_set, noise_factor: float, figs: Path) -> None:
    """The first 50 training images, clean and with the noise (the tutorial's first figure)."""
    first = train_set.x[:50]
    titles = [train_set.class_names[i] for i in train_set.y[:50].tolist()]
    plots.image_grid(first, figs / "samples.png", titles=titles)
    plots.image_grid(add_evaluation_noise(first, noise_factor), figs / "noisy_samples.png", titles=titles,
                     suptitle=f"noise factor {noise_factor:g}")


def _denoised_figures(model, test_set, noise_factor: float, figs: Path) -> None:
    """The first 10 test images noisy / cleaned / original, and the 10 hardest for the model."""
    x10 = test_set.x[:10]
    noisy10 = add_evaluation_noise(x10, noise_factor)  # the first 10 rows of the fixed evaluation draw
    cleaned10 = apply_model(model, noisy10)
    plots.rows([("noisy", noisy10), ("cleaned", cleaned10), ("original", x10)], figs / "denoised.png",
               titles=[test_set.class_names[i] for i in test_set.y[:10].tolist()],
               suptitle=f"Test images, noise factor {noise_factor:g}")
    worst, worst_psnr, worst_noisy, worst_clean = hardest_images(model, test_set.x, noise_factor)
    plots.rows([("noisy", worst_noisy), ("cleaned", worst_clean), ("original", test_set.x[worst])],
               figs / "hardest.png", titles=[f"#{i} {test_set.class_names[test_set.y[i]]}\n{p:.1f} dB"
                                              for i, p in zip(worst.tolist(), worst_psnr.tolist())],
               suptitle=f"The 10 hardest test images at noise factor {noise_factor:g} (PSNR after cleaning)")


def _reproduce(out, epochs, noise_factor, batch_size, lr, seed, limit, data, resume, device, threads, progress,
               cmd, fast, overwrite, tensorboard) -> dict:
    t_start = time.perf_counter()
    saved = runs.read_config(out).get("train", {}) if resume and runs.has_config(out) else {}
    preset = dataclasses.asdict(FAST if fast else TUTORIAL)
    if saved and not fast:  # the run's own plan
        preset.update({k: saved[k] for k in preset if k in saved})
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
    settings = {**preset, **{k: v for k, v in given.items() if v is not None}}
    seed = seed if seed is not None else saved.get("seed", TrainConfig.seed)
    if noise_factor is None:  # the run's own when resuming, else the tutorial's
        noise = parse_noise(saved.get("noise")) if saved else None
        noise_factor = noise.factor if isinstance(noise, Gaussian) else 0.2
    batch_size = settings["batch_size"]
    tensorboard = tensorboard if tensorboard is not None else saved.get("tensorboard", TrainConfig.tensorboard)
    config = TrainConfig(seed=seed, noise=f"gaussian:{noise_factor:g}", device=device, threads=threads,
                         progress=progress, tensorboard=tensorboard, **settings).check()
    train_set = load_dataset(data, "train", limit=limit)
    test_set = load_dataset(data, "test", limit=limit)
    figs = out / "figures"

    main = distributed.is_main()  # under torchrun, only rank 0 writes files

    # 1. the model and its training (an old run in ``out`` is cleared only when this one starts)
    t_train = time.perf_counter()
    spec = {"kind": "denoising", "input_shape": train_set.input_shape, "net": "conv"}
    check_training_memory(spec, config, len(train_set), len(test_set))  # before the old run's files go
    model, history = train_run(spec, train_set.x, test_set.x, config, out, resume=resume,
                               record=config.record(data, limit),
                               extra={"class_names": train_set.class_names, "command": cmd}, overwrite=overwrite,
                               resume_command=f"aelab reproduce --resume --out {shlex.quote(str(out))}")
    train_seconds = time.perf_counter() - t_train
    plots.history(history, figs / "history.png", title="Denoising autoencoder: MSE per epoch")

    # 2. the data, as the tutorial shows it; 3. denoise the noisy test images and measure
    if main:
        _data_figures(train_set, noise_factor, figs)
    model = model.cpu().eval()
    quality = denoising_quality(model, test_set.x, NOISE_FACTORS)
    _denoised_figures(model, test_set, noise_factor, figs)

    secs = history["seconds"]
    per_epoch = statistics.median(secs[1:]) if len(secs) > 1 else secs[0]
    key = f"{noise_factor:g}"
    headline = quality.get(key) or next(iter(quality.values()))
    metrics = {
        "summary": {"text": (f"Trained at noise factor {noise_factor:g} for {len(secs)} epochs on "
                             f"{len(train_set):,} images; on {len(test_set):,} test images the model cleans "
                             f"PSNR {headline['noisy']['psnr']:.2f} dB -> {headline['model']['psnr']:.2f} dB "
                             f"and SSIM {headline['noisy']['ssim']:.3f} -> {headline['model']['ssim']:.3f}.")},
        "denoising": quality,
        "trained_noise_factor": noise_factor,
        "test_images": len(test_set),
        "model": {"parameters": count_parameters(model), "layers": describe(model, model.input_shape)},
        "data": {"train": len(train_set), "test": len(test_set),
                 "class_counts": _class_counts(train_set, test_set)},
        "timing": {"seconds_per_epoch": round(per_epoch, 3), "train_seconds": round(train_seconds, 2),
                   "total_seconds": round(time.perf_counter() - t_start, 2),
                   "threads": torch.get_num_threads(), "device": str(next(model.parameters()).device),
                   "batch_size": batch_size},
    }
    runs.update_metrics(out, **metrics)
    write_report(out, command=cmd)
    metrics["timing"]["total_seconds"] = round(time.perf_counter() - t_start, 2)
    runs.update_metrics(out, timing=metrics["timing"])
    return metrics
