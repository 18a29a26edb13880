"""Train a model into a run directory: :func:`train_run`, the one way every caller (``aelab
train``, ``reproduce``, ``compare``, the benchmarks) writes a trained run, and :func:`train`,
which loads the data, builds the model and calls it.

The loop itself is :func:`aelab.loop.fit`; the settings and their defaults are
:class:`aelab.settings.TrainConfig` (both importable from here too).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shlex
import warnings
from pathlib import Path
from typing import Callable

import torch

from . import distributed, ownership, runlock, runs
from .data import check_images, has_test_split, is_fashion, training_set
from .images import check_size
from .errors import AelabWarning, ConfigError
from .loop import check_training_shape, fit
from .streaming import Streamed
from .memory import check_training_memory
from .models import Autoencoder, build_model
from .settings import SCHEDULES, TrainConfig, learning_rate

__all__ = ["SCHEDULES", "TrainConfig", "fit", "learning_rate", "train", "train_run"]


def train_run(model: Autoencoder | dict, x_train: torch.Tensor, x_val: torch.Tensor | None, config: TrainConfig,
              out: str | os.PathLike, *, resume: bool = False, init: str | os.PathLike | None = None,
              record: dict | None = None, extra: dict | None = None,
              on_epoch_end: Callable[[int, dict], None] | None = None, overwrite: bool = False,
              resume_command: str | None = None) -> tuple[Autoencoder, dict]:
    """Train a model into the run directory ``out``; return the trained model and its history.

    ``model``: an :class:`Autoencoder`, or a model spec (the ``model`` section of a
    ``config.json``: ``kind``, ``input_shape``, ``net``, ``net_options``, ``options``), which is
    built right after ``torch.manual_seed(config.seed)`` so that the seed fixes the initial weights.
    A fresh run (no ``resume``) first discards a stale ``checkpoint.pt`` (never resume from
    another run's state), starts from the weights of the run ``init`` when given (fine-tuning,
    recorded as ``initialised_from``) and writes ``config.json`` with the initial weights; with
    ``resume`` the training continues from ``out/checkpoint.pt``. Then :func:`fit` runs, and
    ``config.json`` and the weights are written again; with ``config.keep == "best"`` the model
    returned holds the best validation epoch's weights (``model.best.safetensors``, which
    ``config.json``'s ``"weights": "best"`` makes the run load), the last stay in ``model.safetensors``.

    ``record``: the ``train`` section of ``config.json`` (default ``config.record()``; pass
    ``config.record(data, limit)`` so that ``--resume`` finds the data). ``extra``: more
    top-level entries of ``config.json`` (``class_names``, ``command``). ``on_epoch_end`` goes to
    :func:`fit`. Under ``torchrun`` every rank trains and only rank 0 writes.

    ``out`` is locked while this runs (:mod:`aelab.runlock`: a second writer is refused with the
    first one's pid and command). A fresh run refuses a folder that already holds a run
    (``config.json``) unless ``overwrite``, and a folder holding files of aelab's names that
    aelab did not write (:func:`check_new_run`). The old run's files (:data:`RUN_FILES`, by
    name; nothing else) are removed only once the new model is built and its ``init`` loaded,
    right before the new run's first file is written: a mistake in an option, the init run or
    the data leaves the old run whole. ``resume_command``: what an interrupt tells the user to
    run (see :func:`fit`).
    """
    out = ownership.check_out(out)
    if init is not None and not resume and not runs.is_zoo(init) and Path(init).resolve() == out.resolve():
        raise ConfigError(f"expected --init to name another run than --out, found the run --out replaces ({out}); "
                          "copy it elsewhere first and start from the copy, or continue it with --resume")
    main = distributed.is_main()
    lock = runlock.hold(out, (extra or {}).get("command")) if main else contextlib.nullcontext()
    with lock:
        if not resume and main:
            check_new_run(out, overwrite)
        return _train_run(model, x_train, x_val, config, out, resume, init, record, extra, on_epoch_end,
                          resume_command)


RUN_FILES = ownership.RUN_FILES  # what --overwrite removes (and figures/ of aelab's names), nothing else


def check_new_run(out: Path, overwrite: bool = False) -> None:
    """Refuse to start a new run in ``out`` where it would replace what is there: a trained run
    (aelab's ``config.json`` and more) unless ``overwrite``; files of aelab's names that aelab
    did not write (another program's ``config.json``, the user's ``history.json``) always. A
    start that failed before its first epoch (aelab's ``config.json`` and the initial weights,
    nothing more) is no run to keep: it is replaced without ``overwrite``. Nothing is removed
    here (:func:`_train_run` clears the old run when the new one starts)."""
    out = Path(out)
    foreign = ownership.foreign_files(out)
    if foreign:
        names = ", ".join(p.name for p in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        config = " (its config.json is not one aelab wrote)" if (out / runs.CONFIG).exists() else ""
        raise ConfigError(f"expected a new run directory, found {names} in {out} that aelab did not write{config}; "
                          "aelab never replaces them: move them away or choose another --out")
    if not ownership.is_aelab_run(out):
        return
    found = [p.name for p in ownership.run_files(out)]
    started_only = set(found) <= {runs.CONFIG, runs.WEIGHTS}
    if not overwrite and not started_only:
        raise ConfigError(f"expected a new run directory, found a trained run in {out} ({', '.join(found[:4])}); "
                          "pass --resume to continue it, --overwrite to replace it, or choose another --out")


def _train_run(model, x_train, x_val, config, out, resume, init, record, extra, on_epoch_end, resume_command):
    if isinstance(model, dict):
        torch.manual_seed(config.seed)
        model = build_model(model["kind"], model["input_shape"], net=model.get("net", "conv"),
                            net_options=model.get("net_options"), **model.get("options", {}))
    record = config.record() if record is None else record
    extra = dict(extra or {})
    if not resume:
        if init is not None:
            _load_initial_weights(model, init, config.freeze_encoder)
            extra["initialised_from"] = str(init)
        config.check().check_needs(x_val is not None, True)  # the checks fit makes first, before the old run goes
        for x, name in ((x_train, "training images"), (x_val, "validation images")):
            if x is not None:
                check_training_shape(model, x.items([0]) if isinstance(x, Streamed) else check_images(x, name), name)
        if distributed.is_main():  # every check passed: the old run's files go (never resume from its state)
            ownership.clear_run(out)
            runs.save_model(model, out, train_config=record, extra=extra)
        distributed.barrier()
    history = fit(model, x_train, x_val, config, run_dir=out, resume=resume, on_epoch_end=on_epoch_end,
                  resume_command=resume_command)
    model.finalise()  # data a kind derives once from its final weights (the codec's coding tables)
    extra.pop("weights", None)
    if distributed.is_main() and config.keep == "best" and (out / runs.BEST_WEIGHTS).exists():
        # the model holds the best epoch's weights (fit took them), which the run now loads; the last stay beside
        last = copy.deepcopy(model)
        runs.load_weights(last, out / runs.WEIGHTS)
        last.finalise()
        runs.save_weights(model, out / runs.BEST_WEIGHTS)
        runs.save_model(last, out, train_config=record, extra={**extra, "weights": "best"})
    elif distributed.is_main():
        runs.save_model(model, out, train_config=record, extra=extra)
    return model, history


def train(kind: str | None = None, net: str | None = None, data: str | None = None, out: str = "runs/train",
          config: TrainConfig | None = None, *, limit: int | None = None, resume: bool = False, size=None,
          net_options: dict | None = None, init: str | None = None, overwrite: bool = False, crop=None,
          crops_per_image: int | None = None, replay: str | os.PathLike | None = None, **options) -> Autoencoder:
    """Train a ``kind`` autoencoder (default denoising) on ``net`` (default conv) and write the run to ``out``.

    ``data``: None for Fashion-MNIST from the usual places, or a folder / ``.npz`` (see
    :func:`aelab.data.training_set`: a folder is streamed, never held whole). Validation uses
    the test split when there is one (a folder's ``test/``). ``crop`` (H, W): train on a random
    window of each image per epoch (larger or mixed-size images; validation on the centre);
    ``crops_per_image``: that many windows of each image an epoch (default 1).
    ``config``: the training settings (default :class:`TrainConfig`'s); any of its fields may
    also be given as a keyword (``epochs=5``), which overrides it (None = not given). The other
    ``options`` are the kind's hyper-parameters (e.g. ``reconstruction="mse"``). ``init``: a
    trained run whose weights the new model starts from (same kind, network and image shape;
    its options may differ, e.g. a codec's ``lmbda``), i.e. fine-tuning.

    A new run refuses an ``out`` that holds a run unless ``overwrite`` (see :func:`train_run`).
    With ``resume`` the run continues its own plan (epochs, batch size, learning rate,
    schedule, noise, seed, data, limit, model) except the settings given here: a keyword
    that is not None, or a field of ``config`` that differs from the default. ``device``,
    ``threads``, ``workers`` and ``progress`` are this machine's: never taken from the saved run.

    ``replay`` (``aelab train --config RUN/config.json``): a new run in ``out`` with the model and
    the plan of that run (its config.json, or the folder holding it), on its data, limit, crop
    and ``init``, except what is given here (as with ``resume``; a ``kind`` or ``net`` other
    than the run's drops the run's options for it). The same seed on the CPU gives the same weights.
    """
    given = {k: v for k in TrainConfig.names() if k in options for v in [options.pop(k)] if v is not None}
    if config is not None:  # its fields set away from the defaults count as given
        default = TrainConfig()
        given = {**{k: getattr(config, k) for k in TrainConfig.names() if getattr(config, k) != getattr(default, k)},
                 **given}
    config = TrainConfig(**given).check()
    out = Path(out)
    if resume and overwrite:
        raise ConfigError("expected --resume or --overwrite, found both: --resume continues the run in --out, "
                          "--overwrite replaces it; pass one of them")
    if resume and replay is not None:
        raise ConfigError("expected --resume or --config, found both: --resume continues the run in --out with its "
                          "own settings, --config trains a new run with another run's; pass one of them")
    replayed = runs.read_config(_replay_run(replay)) if replay is not None else {}
    if resume and not (out / runs.CONFIG).exists():  # killed before anything was written
        warnings.warn(f"nothing to resume in {out}; starting a new run", AelabWarning, stacklevel=2)
        resume = False
    if not resume:
        check_new_run(out, overwrite)  # before loading data: refuse an existing run at once
    saved = runs.read_config(out) if resume else replayed
    if saved:  # the run's own plan (its seed also picks the crops), less what was given and this machine's settings
        runs.check_keys(saved.get("train", {}), TrainConfig.names() + ["data", "limit", "crop", "crops_per_image"],
                        f"{out / runs.CONFIG if resume else replay} 'train'")
        plan = {k: v for k, v in saved.get("train", {}).items() if k not in ("device", "threads", "workers", "progress")}
        config = TrainConfig.from_dict({**plan, **given}).check()
    if replayed:  # the run's data, limit, crop and init, unless given
        data, limit, crop, crops_per_image, init = _replayed_data(replayed, data, limit, crop, crops_per_image, init)
    if resume:  # the run's own data and limit, unless given
        data, limit, crop, crops_per_image = _resumed_data(saved, out, data, limit, crop, crops_per_image)
    _check_flags(data, size, given.get("freeze_encoder", saved.get("train", {}).get("freeze_encoder")),
                 saved.get("initialised_from") if resume else init)
    crops_per_image = crops_per_image or 1
    train_set = training_set(data, "train", limit=limit, size=size, crop=crop, seed=config.seed,
                             crops_per_image=crops_per_image)
    val_set = training_set(data, "test", limit=limit, size=size, crop=crop, seed=config.seed) \
        if has_test_split(data) else None
    if resume:  # the run's own model, as it was built
        spec = saved["model"]
        record = {**saved.get("train", {}), **config.record(data, limit, crop, crops_per_image)}
        extra = {k: saved[k] for k in ("class_names", "initialised_from") if k in saved}
    else:
        spec = _model_spec(replayed.get("model", {}), kind, net, net_options, options, train_set.input_shape)
        record = config.record(data, limit, crop, crops_per_image)
        extra = {"class_names": train_set.class_names}
    check_training_memory(spec, config, len(train_set), len(val_set) if val_set else 0,  # before out is touched
                          streamed=isinstance(train_set, Streamed))
    model, _ = train_run(spec, _images(train_set), _images(val_set), config, out, resume=resume,
                         init=None if resume else init, record=record, extra=extra, overwrite=overwrite,
                         resume_command=f"aelab train --resume --out {shlex.quote(str(out))}")
    return model


def _replayed_data(replayed: dict, data, limit, crop, crops_per_image, init):
    """``--config``: the replayed run's data, limit, crop, windows per image and init, each unless given."""
    section = replayed.get("train", {})
    return (section.get("data") if data is None else data, section.get("limit") if limit is None else limit,
            section.get("crop") if crop is None else crop, crops_per_image or section.get("crops_per_image"),
            replayed.get("initialised_from") if init is None else init)


def _resumed_data(saved: dict, out: Path, data, limit, crop, crops_per_image):
    """``--resume``: the run's own data, limit, crop and windows per image; another limit or crop is refused
    (the checkpoint's order and windows would be void)."""
    section = saved.get("train", {})
    if crop is not None and list(check_size(crop)) != section.get("crop"):
        raise ConfigError(f"{out} was trained with --crop {section.get('crop')}, found --crop {crop}; resume with "
                          "the same crop (or leave it out), or train a new run in another --out")
    if limit is not None and limit != section.get("limit"):
        raise ConfigError(f"{out} was trained with --limit {section.get('limit')}, found --limit {limit}; resume "
                          "with the same limit (or leave it out), or train a new run in another --out")
    return (section.get("data") if data is None else data, section.get("limit"), section.get("crop"),
            crops_per_image or section.get("crops_per_image", 1))


def _replay_run(path) -> Path:
    """The run folder of ``--config``: the folder holding the given config.json (or the folder given)."""
    path = Path(path)
    return path.parent if path.name == runs.CONFIG and not path.is_dir() else path


def _model_spec(replayed: dict, kind, net, net_options, options, input_shape) -> dict:
    """The model to build: the replayed run's (none: denoising on conv) with what was given in its place;
    another kind drops the run's kind options, another network its network options."""
    same_kind, same_net = kind in (None, replayed.get("kind")), net in (None, replayed.get("net", "conv"))
    return {"kind": kind or replayed.get("kind", "denoising"), "input_shape": input_shape,
            "net": net or replayed.get("net", "conv"),
            "net_options": {**(replayed.get("net_options") or {} if same_net else {}), **(net_options or {})} or None,
            "options": {**(replayed.get("options") or {} if same_kind else {}), **options}}


def _images(ds):
    """What the loop takes: a streamed set as it is, the images of one in memory (None stays None)."""
    return ds if ds is None or isinstance(ds, Streamed) else ds.x


def _check_flags(data, size, freeze_encoder: bool | None, init) -> None:
    """Refuse flags that one another or the data would silently void (before the data is read):
    ``--freeze-encoder`` without ``--init`` (a random encoder, kept), ``--size`` where nothing is resized."""
    if freeze_encoder and init is None:
        raise ConfigError("expected --init RUN with --freeze-encoder (it keeps the encoder's starting weights), "
                          "found no --init: the encoder would stay random; pass --init RUN, or leave "
                          "--freeze-encoder out")
    if size is None:
        return
    p = None if data is None else Path(data)
    ignored = ("Fashion-MNIST" if p is None else f"the .npz file {p}" if p.suffix == ".npz" else
               f"the Fashion-MNIST files in {p}" if is_fashion(p) else None)
    if ignored:
        raise ConfigError(f"expected --size with a folder of images (it resizes them as they are read), found "
                          f"{ignored}, whose images keep their size; leave --size out")


def _load_initial_weights(model: Autoencoder, run_dir, encoder_only: bool = False) -> None:
    """Copy a trained run's weights into ``model`` (``train(init=...)``): same kind, network and shapes.

    ``encoder_only`` (``--freeze-encoder``): the network's options may differ where they shape
    the rest (e.g. ``decoder_hidden``); the encoder must fit and is copied, the rest is copied
    when all of it fits and otherwise starts afresh (a new decoder for the run's codes)."""
    source = runs.load_model(run_dir)
    mine, theirs = model.config(), source.config()
    for key in ("kind", "net", "input_shape") + (() if encoder_only else ("net_options",)):
        if mine[key] != theirs[key]:
            raise ConfigError(f"--init {run_dir} has {key} {theirs[key]!r}, this run {mine[key]!r}; start from a "
                              f"run of the same kind, network and image shape (only the kind's options may differ)")
    state, expected = model.adapt_initial_state(source.state_dict()), model.state_dict()

    def fits(keys) -> bool:
        return all(k in state and state[k].shape == expected[k].shape for k in keys)

    if state.keys() == expected.keys() and fits(expected):
        model.load_state_dict(state)
        return
    encoder = [k for k in expected if k.startswith("encoder.")]
    if not encoder_only:
        raise ConfigError(f"--init {run_dir}: its weights do not fit this model (an option changes the layers); "
                          "start from a run with the same options that shape the model")
    if not encoder or not fits(encoder):
        raise ConfigError(f"--init {run_dir}: expected its encoder to fit this model's (--freeze-encoder keeps it), "
                          "found other layers; change only the options that shape the decoder")
    model.load_state_dict({k: state[k] for k in encoder}, strict=False)
