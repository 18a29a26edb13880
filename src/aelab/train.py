"""The fit loop: in-memory batches, Adam, fresh seeded noise per batch, validation each
epoch, every loss term logged, atomic checkpoints, exact resume.

Reproducibility: ``seed`` drives the initial weights (``torch.manual_seed``), the batch
order and the noise (two ``torch.Generator`` seeded from it). A checkpoint holds the
model, the optimizer, both generators and the position inside the epoch, so a resumed
run ends bit-identical (on CPU) to one that was never interrupted.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from . import distributed, runs
from .data import check_images, has_test_split, load_dataset
from .errors import AelabWarning, ConfigError, TrainingError
from .models import Autoencoder, build_model
from .noise import Noise, parse_noise


@dataclass
class TrainConfig:
    epochs: int = 10            # the tutorial trains 10 epochs
    batch_size: int = 32        # Keras' default batch size, which the tutorial uses
    lr: float = 1e-3            # Adam's default learning rate (Keras and PyTorch agree)
    seed: int = 0               # initial weights, batch order and noise all follow from it
    noise: str | None = None    # corruption of the input, e.g. "gaussian:0.2"; None = the kind's default
    device: str = "auto"        # "auto" = CUDA when present, else CPU
    threads: int | None = None  # CPU threads; None = default_threads() (1 on machines of up to 4 cores)
    channels_last: bool = True  # NHWC memory layout for convolutional nets (measured faster on CPU)
    amp: str = "auto"           # "auto": bf16 autocast on CUDA only; "bf16" forces it; "off"
    schedule: str = "constant"  # learning rate per step: "constant" (the tutorial) or "onecycle" (lr is the peak)
    val_batch_size: int = 1000  # validation is forward-only, so bigger batches are cheaper
    progress: bool = True       # a progress bar on stderr

    def check(self) -> "TrainConfig":
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"expected epochs >= 1, found {self.epochs}; e.g. --epochs 10")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"expected batch size >= 1, found {self.batch_size}; e.g. --batch-size 32")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"expected a learning rate > 0, found {self.lr}; e.g. --lr 1e-3")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"expected threads >= 1, found {self.threads}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"expected schedule one of {', '.join(SCHEDULES)}, found {self.schedule!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"expected amp auto, bf16 or off, found {self.amp!r}")
        parse_noise(self.noise)  # raises on a bad spec
        resolve_device(self.device)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


SCHEDULES = ("constant", "onecycle")


def learning_rate(config: "TrainConfig", step: int, total_steps: int) -> float:
    """The learning rate of global step ``step`` (0-based) of ``total_steps``.

    "onecycle" (Smith & Topin 2017, as torch's OneCycleLR with cosine annealing): rises from
    lr/25 to lr over the first 30% of the steps, then falls to lr/25e4. A pure function of
    the step, so a resumed run follows the same schedule without saving scheduler state.
    """
    if config.schedule == "constant":
        return config.lr
    warm = max(1, int(0.3 * total_steps))
    start, peak, end = config.lr / 25, config.lr, config.lr / 25e4
    if step < warm:
        t = step / warm
        return start + (peak - start) * (1 - math.cos(math.pi * t)) / 2
    t = min(1.0, (step - warm) / max(1, total_steps - warm))
    return end + (peak - end) * (1 + math.cos(math.pi * t)) / 2


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"expected a device like auto, cpu or cuda, found {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("expected a CUDA GPU for --device cuda, found none; use --device cpu")
    return dev


@dataclass
class _State:
    epoch: int = 0                      # epochs finished
    step: int = 0                       # steps finished inside the current epoch
    perm: torch.Tensor | None = None    # the current epoch's batch order
    sums: dict = field(default_factory=dict)  # running sums of the terms in the current epoch
    history: dict = field(default_factory=lambda: {"train": {}, "val": {}, "seconds": []})
    seconds: float = 0.0                # time spent in the current epoch so far


def _validate(model, x_in, x_target, batch_size, amp=None) -> dict[str, float]:
    """Sums over images of each loss term (the caller divides by the number of images)."""
    import contextlib

    model.eval()
    sums: dict[str, float] = {}
    n = len(x_in)
    with torch.no_grad(), (amp or contextlib.nullcontext()):
        for i in range(0, n, batch_size):
            terms = model.loss(x_in[i:i + batch_size], x_target[i:i + batch_size])
            k = len(x_in[i:i + batch_size])
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value) * k
    model.train()
    return sums


def _sanity_check(model: Autoencoder, x: torch.Tensor, noise: Noise) -> None:
    """One forward/backward pass on a tiny batch, failing early with likely causes."""
    batch = x[:2]
    try:
        x_hat = model(noise(batch, torch.Generator().manual_seed(0)))
    except RuntimeError as exc:
        raise ConfigError(f"the model cannot process images of shape {tuple(batch.shape[1:])} ({exc}); "
                          "check the network options against the image size") from None
    if x_hat.shape != batch.shape:
        raise ConfigError(f"expected the network to reconstruct shape {tuple(batch.shape)}, it gives "
                          f"{tuple(x_hat.shape)}; check the network options")


class _Interrupt:
    """Turn SIGINT/SIGTERM into a flag checked between steps, so the loop can checkpoint."""

    def __init__(self):
        self.hit = False
        self._old = {}

    def __enter__(self):
        if hasattr(signal, "SIGTERM") and threading_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.hit:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def threading_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _save_checkpoint(path: Path, model, optimizer, state: _State, perm_gen, noise_gen) -> None:
    import io

    payload = {
        "model": runs._state_dict(model),
        "optimizer": optimizer.state_dict(),
        "epoch": state.epoch, "step": state.step, "seconds": state.seconds,
        "perm": state.perm if state.perm is not None else torch.empty(0, dtype=torch.long),
        "sums": state.sums, "history": state.history,
        "perm_gen": perm_gen.get_state(), "noise_gen": noise_gen.get_state(),
        "torch_rng": torch.get_rng_state(),  # the draws inside a kind's loss (VAE, contractive projection)
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    runs.atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path, model, optimizer, perm_gen, noise_gen) -> _State:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"expected a checkpoint at {path} to resume from, found nothing; "
                          "start the run without --resume") from None
    except Exception as exc:  # a damaged file: say so in one line
        raise ConfigError(f"{path}: expected a training checkpoint, could not read it "
                          f"({type(exc).__name__}); delete it and start again without --resume") from None
    try:
        getattr(model, "module", model).load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        perm_gen.set_state(payload["perm_gen"])
        noise_gen.set_state(payload["noise_gen"])
        if "torch_rng" in payload:  # absent in checkpoints written before it was saved
            torch.set_rng_state(payload["torch_rng"])
        perm = payload["perm"] if payload["perm"].numel() else None
        return _State(epoch=payload["epoch"], step=payload["step"], perm=perm, sums=payload["sums"],
                      history=payload["history"], seconds=payload["seconds"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ConfigError(f"{path}: expected a checkpoint of this run's model and settings, found one that does "
                          f"not fit ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                          "resume with the run's own settings, or start again without --resume") from None


def fit(model: Autoencoder, x_train: torch.Tensor, x_val: torch.Tensor | None = None,
        config: TrainConfig | None = None, run_dir: str | os.PathLike | None = None,
        resume: bool = False, stop_after_steps: int | None = None,
        on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``model`` in place and return its history.

    ``x_train`` (and ``x_val``) are float32 NCHW in [0, 1]. Each step corrupts a batch with
    the configured noise and minimises ``model.loss(x_noisy, x)["loss"]`` with Adam. After
    each epoch the validation terms are computed on ``x_val`` corrupted by the fixed
    evaluation noise, and (with ``run_dir``) a checkpoint is written atomically.
    ``stop_after_steps`` stops early as Ctrl-C would (used by tests of resume).
    ``on_epoch_end(epoch, history)`` is called after each epoch's checkpoint (benchmarks use it).
    """
    config = (config or TrainConfig()).check()
    x_train = check_images(x_train, "training images")
    if x_val is not None:
        x_val = check_images(x_val, "validation images")
    device = distributed.local_device(resolve_device(config.device))
    if device.type == "cpu":
        torch.set_num_threads(config.threads or default_threads())
    world, rank = distributed.world_size(), distributed.rank()
    main = rank == 0
    noise = parse_noise(config.noise if config.noise is not None else model.default_noise)
    model.to(device).train()
    _sanity_check(model, x_train.to(device), noise)
    memory_format = torch.channels_last if config.channels_last and _has_conv(model) else torch.contiguous_format
    model.to(memory_format=memory_format)
    amp = _autocast(config.amp, device)

    optimizer = _adam(model, config.lr, device)
    perm_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed + 1_000_003)
    ckpt = Path(run_dir) / runs.CHECKPOINT if run_dir is not None else None
    state = _State()
    if resume and ckpt is not None and not ckpt.exists():  # killed before its first checkpoint
        warnings.warn(f"no checkpoint in {run_dir} yet; training from the start", AelabWarning, stacklevel=2)
        resume = False
    if resume:
        if ckpt is None:
            raise ConfigError("resume needs a run directory holding checkpoint.pt; pass --out DIR")
        state = _load_checkpoint(ckpt, model, optimizer, perm_gen, noise_gen)
        model.to(device)
        if state.perm is not None and len(state.perm) != len(x_train):
            raise ConfigError(f"{ckpt} was written for {len(state.perm)} training images, found {len(x_train)}; "
                              "resume with the same --data and --limit")
    trainer = _LossModule(model)
    if world > 1:  # gradients averaged over ranks by DDP
        trainer = torch.nn.parallel.DistributedDataParallel(
            trainer, device_ids=[device.index] if device.type == "cuda" else None)

    n = len(x_train)
    global_batch = config.batch_size * world
    steps_per_epoch = math.ceil(n / global_batch)
    total_steps = config.epochs * steps_per_epoch
    x_train_dev = x_train.to(device).contiguous(memory_format=memory_format)
    val_in = val_target = None
    if x_val is not None:  # each rank validates its shard; the sums are all-reduced
        val_target = x_val.to(device)
        val_in = noise(val_target, torch.Generator().manual_seed(0))  # fixed evaluation noise
        val_target, val_in = val_target[rank::world], val_in[rank::world]

    bar = None
    if config.progress and main:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs * steps_per_epoch, initial=state.epoch * steps_per_epoch + state.step,
                   unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)

    steps_done = 0
    with _Interrupt() as interrupt:
        while state.epoch < config.epochs:
            t0 = time.perf_counter()
            if state.perm is None:
                state.perm = torch.randperm(n, generator=perm_gen)
                state.step, state.sums, state.seconds = 0, {}, 0.0
            sums = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in state.sums.items()}
            if bar is not None:
                bar.set_description(f"epoch {state.epoch + 1}/{config.epochs}")
            while state.step < steps_per_epoch:
                idx = state.perm[state.step * global_batch:(state.step + 1) * global_batch]
                x = x_train_dev[idx.to(device)]
                x_in = noise(x, noise_gen)  # the whole global batch's noise, identical on every rank
                if world > 1:
                    lo, hi = _shard(len(idx), world, rank)
                    x, x_in = x[lo:hi], x_in[lo:hi]
                with amp:
                    terms = trainer(x_in, x)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    bad = [k for k, v in terms.items() if not torch.isfinite(v)]
                    raise TrainingError(
                        f"expected a finite loss, found {float(loss.detach())} in term(s) {', '.join(bad)} at epoch "
                        f"{state.epoch + 1} step {state.step + 1}; lower the learning rate (--lr) or check "
                        f"the data; the last good checkpoint is kept" + (f" in {ckpt}" if ckpt else ""))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.schedule != "constant":
                    lr = learning_rate(config, state.epoch * steps_per_epoch + state.step, total_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                optimizer.step()
                k = len(x)
                with torch.no_grad():  # running sums stay on the device: no sync per step
                    for name, value in terms.items():
                        acc = value.detach().double() * k
                        sums[name] = sums[name] + acc if name in sums else acc
                state.step += 1
                steps_done += 1
                if bar is not None:
                    bar.update(1)
                    if state.step % 50 == 0 or state.step == steps_per_epoch:
                        bar.set_postfix(loss=f"{float(sums['loss']) / min(n, state.step * global_batch) * world:.4f}")
                if interrupt.hit or (stop_after_steps is not None and steps_done >= stop_after_steps):
                    state.seconds += time.perf_counter() - t0
                    state.sums = {k: float(v) for k, v in sums.items()}
                    if ckpt is not None and main:
                        _save_checkpoint(ckpt, model, optimizer, state, perm_gen, noise_gen)
                    if bar is not None:
                        bar.close()
                    if interrupt.hit:
                        where = f"; resume with --resume --out {run_dir}" if run_dir else ""
                        raise KeyboardInterrupt(f"stopped at epoch {state.epoch + 1} step {state.step}, "
                                                f"checkpoint written{where}")
                    model.to(memory_format=torch.contiguous_format)
                    return state.history
            # end of epoch: log the terms, validate, checkpoint
            epoch_sums = distributed.all_reduce_sum({k: float(v) for k, v in sums.items()}, device)
            for name, s in epoch_sums.items():
                state.history["train"].setdefault(name, []).append(s / n)
            if val_in is not None:
                val_sums = distributed.all_reduce_sum(
                    _validate(model, val_in, val_target, config.val_batch_size, amp), device)
                for name, v in val_sums.items():
                    state.history["val"].setdefault(name, []).append(v / len(x_val))
            state.seconds += time.perf_counter() - t0
            state.history["seconds"].append(state.seconds)
            state.epoch += 1
            state.perm, state.step, state.sums, state.seconds = None, 0, {}, 0.0
            if bar is not None:
                val = state.history["val"].get("loss")
                bar.set_postfix(loss=f"{state.history['train']['loss'][-1]:.4f}",
                                **({"val": f"{val[-1]:.4f}"} if val else {}))
            if run_dir is not None and main:
                runs.save_weights(model, Path(run_dir) / runs.WEIGHTS)
                runs.write_json(Path(run_dir) / runs.HISTORY, state.history)
                _save_checkpoint(ckpt, model, optimizer, state, perm_gen, noise_gen)
            if on_epoch_end is not None:
                on_epoch_end(state.epoch, state.history)
    if bar is not None:
        bar.close()
    distributed.barrier()
    # hand back the model in the layout a loaded one has, so both give bit-identical outputs
    model.to(memory_format=torch.contiguous_format)
    return state.history


class _LossModule(torch.nn.Module):
    """``forward(x_in, x) = model.loss(x_in, x)``: what DDP wraps, so its hooks see the loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x_in, x_target):
        return self.model.loss(x_in, x_target)


def _shard(batch: int, world: int, rank: int) -> tuple[int, int]:
    """This rank's slice [lo, hi) of a global batch (the last batch may be short)."""
    per = math.ceil(batch / world)
    return min(rank * per, batch), min((rank + 1) * per, batch)


def default_threads() -> int:
    """CPU threads when not told: 1 on machines of up to 4 cores (measured: small convolutional
    steps gain little from a second thread and slow down badly when another process takes
    the core), else half the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if cores <= 4 else cores // 2


def _has_conv(model) -> bool:
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def _adam(model, lr, device):
    """Adam with the fused kernel where this torch has it (one kernel for all parameters)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def _autocast(amp: str, device: torch.device):
    """bf16 autocast on CUDA by default ("auto"); off on CPU, where it measured slower for these
    small convolutions. "bf16" forces it, "off" disables it."""
    import contextlib

    use = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


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
        runs.check_keys(saved.get("train", {}), [f.name for f in fields(TrainConfig)] + ["data", "limit"],
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
    record = asdict(config)
    record.pop("progress", None)
    record.update({"data": None if data is None else str(data), "limit": limit})
    return record
