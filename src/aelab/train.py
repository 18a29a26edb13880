"""Train a model into a run directory: :func:`train` loads the data, builds the model, runs
:func:`aelab.loop.fit` and writes the run.

The loop itself is :func:`aelab.loop.fit`; the settings and their defaults are
:class:`aelab.settings.TrainConfig` (both importable from here too).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from . import distributed, runs
from .data import has_test_split, load_dataset
from .errors import AelabWarning, ConfigError
from .loop import fit
from .models import Autoencoder, build_model
from .settings import SCHEDULES, TrainConfig, learning_rate

__all__ = ["SCHEDULES", "TrainConfig", "fit", "learning_rate", "train"]


def train(kind: str = "denoising", net: str = "conv", data: str | None = None, out: str = "runs/train",
          epochs: int = 10, batch_size: int = 32, lr: float = 1e-3, noise: str | None = None,
          seed: int = 0, limit: int | None = None, resume: bool = False, device: str = "auto",
          threads: int | None = None, progress: bool = True, size=None,
          net_options: dict | None = None, schedule: str = "constant", init: str | None = None,
          **options) -> Autoencoder:
    """Train a ``kind`` autoencoder on ``net`` and write the run to ``out``.

    ``data``: None for Fashion-MNIST from the usual places, or a folder / ``.npz`` (see
    :func:`aelab.data.load_dataset`). Validation uses the test split when there is one.
    ``options`` are the kind's hyper-parameters (e.g. ``reconstruction="mse"``). ``init``: a
    trained run whose weights the new model starts from (same kind, network and image shape;
    its options may differ, e.g. a codec's ``lmbda``), i.e. fine-tuning.
    """
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, noise=noise,
                         device=device, threads=threads, progress=progress, schedule=schedule).check()
    out = Path(out)
    if resume and not (out / runs.CONFIG).exists():  # killed before anything was written
        warnings.warn(f"nothing to resume in {out}; starting a new run", AelabWarning, stacklevel=2)
        resume = False
    saved = runs.read_config(out) if resume else {}
    if resume:  # the run's own data and limit, unless given
        runs.check_keys(saved.get("train", {}), TrainConfig.names() + ["data", "limit"],
                        f"{out / runs.CONFIG} 'train'")
        data = saved.get("train", {}).get("data") if data is None else data
        saved_limit = saved.get("train", {}).get("limit")
        if limit is not None and limit != saved_limit:  # another training set: the checkpoint's order is void
            raise ConfigError(f"{out} was trained with --limit {saved_limit}, found --limit {limit}; resume with "
                              "the same limit (or leave it out), or train a new run in another --out")
        limit = saved_limit
    train_set = load_dataset(data, "train", limit=limit, size=size)
    val_set = load_dataset(data, "test", limit=limit) if has_test_split(data) else None
    record = _train_record(config, data, limit)
    if resume:
        config = TrainConfig.from_dict({**saved.get("train", {}), "epochs": epochs, "progress": progress,
                                        "device": device, "threads": threads}).check()
        torch.manual_seed(config.seed)  # the run's initial weights, should it have no checkpoint yet
        model = runs.model_from_config(saved["model"])
        record = {**saved.get("train", {}), "epochs": epochs}
        extra = {k: saved[k] for k in ("class_names", "initialised_from") if k in saved}
    else:
        torch.manual_seed(seed)
        model = build_model(kind, train_set.input_shape, net=net, net_options=net_options, **options)
        extra = {"class_names": train_set.class_names}
        if init is not None:
            _load_initial_weights(model, init)
            extra["initialised_from"] = str(init)
        if distributed.is_main():
            runs.discard(out / runs.CHECKPOINT)  # a previous run's state: never resume from it
            runs.save_model(model, out, train_config=record, extra=extra)
        distributed.barrier()
    fit(model, train_set.x, val_set.x if val_set else None, config, run_dir=out, resume=resume)
    if distributed.is_main():
        runs.save_model(model, out, train_config=record, extra=extra)
    return model


def _load_initial_weights(model: Autoencoder, run_dir) -> None:
    """Copy a trained run's weights into ``model`` (``train(init=...)``): same kind, network and shapes."""
    source = runs.load_model(run_dir)
    mine, theirs = model.config(), source.config()
    for key in ("kind", "net", "input_shape", "net_options"):
        if mine[key] != theirs[key]:
            raise ConfigError(f"--init {run_dir} has {key} {theirs[key]!r}, this run {mine[key]!r}; start from a "
                              f"run of the same kind, network and image shape (only the kind's options may differ)")
    state, expected = model.adapt_initial_state(source.state_dict()), model.state_dict()
    if state.keys() != expected.keys() or any(state[k].shape != expected[k].shape for k in state):
        raise ConfigError(f"--init {run_dir}: its weights do not fit this model (an option changes the layers); "
                          "start from a run with the same options that shape the model")
    model.load_state_dict(state)


def _train_record(config: TrainConfig, data, limit) -> dict:
    return config.record(data, limit)
