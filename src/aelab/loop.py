"""The fit loop: train a model in place on in-memory images, with Adam, fresh seeded noise per
batch, validation each epoch, every loss term logged, atomic checkpoints and exact resume.
Controls (:class:`TrainConfig`): optimizer, weight decay, ``keep="best"`` (the model ends with the best
validation epoch's weights), ``patience`` (early stopping), callbacks (``tensorboard``: :mod:`aelab.tensorboard`).

Reproducibility: ``seed`` drives the initial weights (``torch.manual_seed``, by the caller),
the batch order and the noise (two ``torch.Generator`` seeded from it). A checkpoint
(:mod:`aelab.checkpoint`) holds the model, the optimizer, both generators and the position
inside the epoch, so a resumed run ends bit-identical (on CPU) to one that was never
interrupted. Under ``torchrun`` each rank takes its slice of every global batch
(:mod:`aelab.distributed`) and only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from . import distributed, runs, streaming, tensorboard
from .checkpoint import TrainState, load_checkpoint, save_checkpoint
from .data import check_images
from .device import autocast, default_threads, memory_format, optimizer, resolve_device
from .errors import AelabWarning, ConfigError, DataError, TrainingError
from .metrics import psnr
from .models import Autoencoder
from .noise import Noise, parse_noise
from .settings import TrainConfig, learning_rate


def fit(model: Autoencoder, x_train: torch.Tensor, x_val: torch.Tensor | None = None,
        config: TrainConfig | None = None, run_dir: str | os.PathLike | None = None,
        resume: bool = False, stop_after_steps: int | None = None,
        on_epoch_end: Callable[[int, dict], None] | None = None, resume_command: str | None = None) -> dict:
    """Train ``model`` in place and return its history.

    ``x_train`` (and ``x_val``) are float32 NCHW in [0, 1], or a streamed data set
    (:mod:`aelab.streaming`: a folder or an .npz read batch by batch, by ``config.workers``
    processes; a validation set's fixed crops are read once). Each step corrupts a batch with
    the configured noise and minimises ``model.loss(x_noisy, x)["loss"]`` with Adam. After
    each epoch the validation terms are computed on ``x_val`` corrupted by the fixed
    evaluation noise, and (with ``run_dir``) a checkpoint is written atomically.
    ``stop_after_steps`` stops early as Ctrl-C would (used by tests of resume).
    ``on_epoch_end(epoch, history)`` is called after each epoch's checkpoint (benchmarks use it).
    ``resume_command``: the command an interrupt message tells the user to run (default
    ``--resume --out RUN_DIR``).

    A finished training ends with one line of quality on the validation images (on stderr
    with ``progress``; in ``history["quality"]`` and history.json, see :func:`quality`) and an
    :class:`AelabWarning` when the model's output is worse than its input. With
    ``config.keep == "best"`` that is of the best epoch's weights, which the model then holds.
    """
    config = (config or TrainConfig()).check().check_needs(x_val is not None, run_dir is not None)
    x_train = _images(x_train, "training images")
    if x_val is not None:  # a streamed validation set: its fixed crops, read once
        x_val = check_images(x_val.items(range(len(x_val))) if _streamed(x_val) else x_val, "validation images")
    loop = _Loop(model, x_train, config, run_dir)
    state = loop.restore(resume)
    loop.begin(x_train, x_val)
    steps_done, history = 0, None  # the callbacks: step(state, terms), epoch(state), close(history, state); rank 0
    callbacks = [tensorboard.Board(loop, state, run_dir)] if config.tensorboard and loop.main else []
    try:
        with _Progress(loop, state) as progress, _Interrupt() as interrupt:
            while state.epoch < config.epochs and not loop.stop_early(state):
                t0 = time.perf_counter()
                sums = loop.start_epoch(state)
                progress.start_epoch(state)
                while state.step < loop.steps_per_epoch:
                    terms = loop.step(state, sums)
                    for callback in callbacks:
                        callback.step(state, terms)
                    steps_done += 1
                    progress.step(state, sums)
                    if interrupt.hit or (stop_after_steps is not None and steps_done >= stop_after_steps):
                        loop.pause(state, sums, t0)
                        progress.close()
                        if interrupt.hit:
                            hint = resume_command or f"--resume --out {run_dir}"
                            where = f"; resume with `{hint}`" if run_dir else ""
                            raise KeyboardInterrupt(f"stopped at epoch {state.epoch + 1} step {state.step}, "
                                                    f"checkpoint written{where}")
                        return loop.finish(state)
                loop.end_epoch(state, sums, t0)
                progress.end_epoch(state)
                loop.save(state)
                for callback in callbacks:
                    callback.epoch(state)
                if on_epoch_end is not None:
                    on_epoch_end(state.epoch, state.history)
        distributed.barrier()
        loop.take_best(state)
        history = loop.finish(state)
        if loop.main:
            history["quality"] = q = quality(model, x_val if x_val is not None else x_train, loop.noise,
                                             "validation" if x_val is not None else "training")
            if loop.run_dir is not None:
                runs.write_json(Path(loop.run_dir) / runs.HISTORY, history)
            if config.progress:
                print(q["text"], file=sys.stderr)
            if q["worse"]:
                warnings.warn(q["warning"], AelabWarning, stacklevel=2)
        return history
    finally:
        for callback in callbacks:  # a finished training's hparams and figures; then the files are closed
            callback.close(history, state)


QUALITY_IMAGES = 1000  # enough for a stable mean PSNR, and about a second of CPU


@torch.no_grad()
def quality(model: Autoencoder, x: torch.Tensor, noise: Noise, name: str = "validation") -> dict:
    """How good the trained model is on the first images of ``x`` (fixed evaluation noise, seed 0).

    A kind trained with noise (a denoiser): PSNR of the noisy input and of the cleaned output
    against the clean image; ``worse`` when cleaning lowers it. Otherwise: reconstruction PSNR,
    and ``worse`` when it is below that of the flat mean image (a model that learned nothing).
    """
    x = x.items(range(min(len(x), QUALITY_IMAGES))) if _streamed(x) else x[:QUALITY_IMAGES]  # streamed: centre crops
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        target = x.to(device)
        x_in = noise(target, torch.Generator().manual_seed(0))
        out = torch.cat([model(x_in[i:i + 250]).float() for i in range(0, len(x_in), 250)])
    finally:
        model.train(was_training)
    n = len(x)
    output = psnr(target, out)
    if type(noise) is not Noise:  # a denoiser
        given, what = psnr(target, x_in), "noisy"
        text = f"quality on {n} {name} images: PSNR noisy {given:.2f} dB -> cleaned {output:.2f} dB"
    else:
        given, what = psnr(target, target.mean(0, keepdim=True).expand_as(target)), "the mean image"
        text = f"quality on {n} {name} images: reconstruction PSNR {output:.2f} dB (the mean image: {given:.2f} dB)"
    worse = output < given
    warning = None if not worse else (
        f"the trained model's output is worse than {what} on the {name} images (PSNR {output:.2f} dB against "
        f"{given:.2f} dB): it has not learned yet; train longer (--epochs), on more images (--limit), or with "
        "--schedule onecycle")
    return {"images": n, "kind": "denoising" if what == "noisy" else "reconstruction", "input_psnr": round(given, 3),
            "output_psnr": round(output, 3), "worse": worse, "text": text, "warning": warning}


def freeze_encoder(model: Autoencoder) -> None:
    """Keep the encoder's weights as they are (``--freeze-encoder``): only the rest trains."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, torch.nn.Module) or not any(True for _ in encoder.parameters()):
        raise ConfigError(f"--freeze-encoder: expected a model with an encoder, found the {model.kind} kind on the "
                          f"{model.net} network without one; leave --freeze-encoder out")
    encoder.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("--freeze-encoder: expected weights outside the encoder to train, found none; "
                          "leave --freeze-encoder out")


class _Loop:
    """One training's fixed parts (device, noise, optimizer, generators, data on the device)
    and the moves of the loop: restore, step, end of epoch, pause, save."""

    def __init__(self, model: Autoencoder, x_train: torch.Tensor, config: TrainConfig, run_dir):
        self.model, self.config = model, config
        self.device = device = distributed.local_device(resolve_device(config.device))
        if device.type == "cpu":
            torch.set_num_threads(config.threads or default_threads())
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.main = self.rank == 0
        self.noise = parse_noise(config.noise if config.noise is not None else model.default_noise)
        if config.freeze_encoder:
            freeze_encoder(model)
        model.to(device).train()
        _sanity_check(model, (x_train.items([0, 1][:len(x_train)]) if _streamed(x_train) else x_train).to(device),
                      self.noise)
        self.memory_format = memory_format(model, config.channels_last)
        model.to(memory_format=self.memory_format)
        self.amp = autocast(config.amp, device)
        self.optimizer = optimizer(model, config.optimizer, config.lr, config.weight_decay)
        self.perm_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator().manual_seed(config.seed + 1_000_003)
        self.run_dir = run_dir
        self.ckpt = Path(run_dir) / runs.CHECKPOINT if run_dir is not None else None
        self.n = len(x_train)
        self.global_batch = config.batch_size * self.world
        self.steps_per_epoch = math.ceil(self.n / self.global_batch)
        self.total_steps = config.epochs * self.steps_per_epoch

    def restore(self, resume: bool) -> TrainState:
        """The state to start from: the run's checkpoint with ``resume``, else a fresh one."""
        if resume and self.ckpt is not None and not self.ckpt.exists():  # killed before its first checkpoint
            warnings.warn(f"no checkpoint in {self.run_dir} yet; training from the start", AelabWarning,
                          stacklevel=3)
            resume = False
        if not resume:
            return TrainState()
        if self.ckpt is None:
            raise ConfigError("resume needs a run directory holding checkpoint.pt; pass --out DIR")
        state = load_checkpoint(self.ckpt, self.model, self.optimizer, self.perm_gen, self.noise_gen)
        self.model.to(self.device)
        if state.perm is not None and len(state.perm) != self.n:
            raise ConfigError(f"{self.ckpt} was written for {len(state.perm)} training images, found {self.n}; "
                              "resume with the same --data and --limit")
        return state

    def begin(self, x_train: torch.Tensor, x_val: torch.Tensor | None) -> None:
        """Wrap the loss for DDP, put the images on the device, draw the fixed validation noise."""
        self.loss_module = _LossModule(self.model)
        if self.world > 1:  # gradients averaged over ranks by DDP
            self.loss_module = torch.nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.data, self.batches = (x_train, None) if _streamed(x_train) else (None, None)
        self.x = None if self.data is not None else x_train.to(self.device).contiguous(
            memory_format=self.memory_format)
        self.val_in = self.val_target = None
        if x_val is not None:  # each rank validates its shard; the sums are all-reduced
            self.n_val = len(x_val)
            val_target = x_val.to(self.device)
            val_in = self.noise(val_target, torch.Generator().manual_seed(0))  # fixed evaluation noise
            self.val_target, self.val_in = val_target[self.rank::self.world], val_in[self.rank::self.world]

    def start_epoch(self, state: TrainState) -> dict:
        """Draw the epoch's batch order (unless resuming inside it); the running sums on the device."""
        if state.perm is None:
            state.perm = torch.randperm(self.n, generator=self.perm_gen)
            state.step, state.sums, state.seconds = 0, {}, 0.0
        return {k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in state.sums.items()}

    def global_step(self, state: TrainState) -> int:
        """Optimizer steps done since the start (the x axis of TensorBoard's curves)."""
        return state.epoch * self.steps_per_epoch + state.step

    def step(self, state: TrainState, sums: dict) -> dict:
        """One optimizer step on the next batch: noise, forward, finite check, backward, schedule;
        the batch's loss terms (detached, on the device)."""
        idx = state.perm[state.step * self.global_batch:(state.step + 1) * self.global_batch]
        lo, hi = streaming.share(len(idx), self.world, self.rank)
        if self.data is None:  # in memory: the global batch, then this rank's share
            x = self.x[idx.to(self.device)]
            x_in = self.noise(x, self.noise_gen)  # the whole global batch's noise, identical on every rank
            x, x_in = (x[lo:hi], x_in[lo:hi]) if self.world > 1 else (x, x_in)
        else:  # streamed: this rank reads its share only, and draws the global batch's noise
            if self.batches is None:
                self.batches = streaming.loader(self.data, state.perm, self.global_batch, state.step, state.epoch,
                                                self.config.workers, self.world, self.rank)
            x = next(self.batches).to(self.device).contiguous(memory_format=self.memory_format)
            whole = x.new_zeros((len(idx), *x.shape[1:])) if self.world > 1 else x
            if self.world > 1:
                whole[lo:hi] = x
            x_in = self.noise(whole, self.noise_gen)[lo:hi] if self.world > 1 else self.noise(x, self.noise_gen)
        with self.amp:
            terms = self.loss_module(x_in, x)
        self._check_finite(terms, state)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self._schedule(state)
        self.optimizer.step()
        with torch.no_grad():  # running sums stay on the device: no sync per step
            for name, value in terms.items():
                acc = value.detach().double() * len(x)
                sums[name] = sums[name] + acc if name in sums else acc
        state.step += 1
        return {name: value.detach() for name, value in terms.items()}

    def _check_finite(self, terms: dict, state: TrainState) -> None:
        loss = terms["loss"]
        if not torch.isfinite(loss):
            bad = [k for k, v in terms.items() if not torch.isfinite(v)]
            raise TrainingError(
                f"expected a finite loss, found {float(loss.detach())} in term(s) {', '.join(bad)} at epoch "
                f"{state.epoch + 1} step {state.step + 1}; lower the learning rate (--lr) or check "
                f"the data; the last good checkpoint is kept" + (f" in {self.ckpt}" if self.ckpt else ""))

    def _schedule(self, state: TrainState) -> None:
        """Set this step's learning rate (a constant schedule leaves Adam's as it is)."""
        if self.config.schedule != "constant":
            lr = learning_rate(self.config, state.epoch * self.steps_per_epoch + state.step, self.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def end_epoch(self, state: TrainState, sums: dict, t0: float) -> None:
        """Log the epoch's mean terms and its validation terms; move the state to the next epoch."""
        history = state.history
        epoch_sums = distributed.all_reduce_sum({k: float(v) for k, v in sums.items()}, self.device)
        for name, s in epoch_sums.items():
            history["train"].setdefault(name, []).append(s / self.n)
        if self.val_in is not None:
            val_sums = distributed.all_reduce_sum(
                _validate(self.model, self.val_in, self.val_target, self.config.val_batch_size, self.amp),
                self.device)
            for name, v in val_sums.items():
                history["val"].setdefault(name, []).append(v / self.n_val)
        state.seconds += time.perf_counter() - t0
        history["seconds"].append(state.seconds)
        state.epoch += 1
        state.perm, state.step, state.sums, state.seconds = None, 0, {}, 0.0
        self.batches = None

    def save(self, state: TrainState) -> None:
        """After an epoch (rank 0, with a run directory): the weights (with ``keep="best"`` those of a
        new best validation loss too), the history, the checkpoint."""
        if self.run_dir is not None and self.main:
            runs.save_weights(self.model, Path(self.run_dir) / runs.WEIGHTS)
            if self.config.keep == "best" and state.best()[1] == state.epoch:
                runs.save_weights(self.model, Path(self.run_dir) / runs.BEST_WEIGHTS)
            runs.write_json(Path(self.run_dir) / runs.HISTORY, state.history)
            self._checkpoint(state)

    def pause(self, state: TrainState, sums: dict, t0: float) -> None:
        """Stop inside an epoch: keep its time and running sums and write the checkpoint."""
        state.seconds += time.perf_counter() - t0
        state.sums = {k: float(v) for k, v in sums.items()}
        self.batches = None
        if self.ckpt is not None and self.main:
            self._checkpoint(state)

    def stop_early(self, state: TrainState) -> bool:
        """``patience`` epochs without a better validation loss (said, and in ``history["stopped_early"]``)?"""
        (best, best_epoch), patience = state.best(), self.config.patience
        if patience is None or best is None or state.perm is not None or state.epoch - best_epoch < patience:
            state.history.pop("stopped_early", None)  # a resume with a larger patience trains on
            return False
        state.history["stopped_early"] = {"epoch": state.epoch, "best_epoch": best_epoch, "best_val_loss": best,
                                          "patience": patience}
        if self.main:
            print(f"stopped early after epoch {state.epoch}/{self.config.epochs}: no better validation loss for "
                  f"{patience} epochs (best {best:.6g} at epoch {best_epoch})", file=sys.stderr, flush=True)
        return True

    def take_best(self, state: TrainState) -> None:
        """``keep="best"``: the model takes the best epoch's weights (the last stay in model.safetensors)."""
        epoch, path = state.best()[1], Path(self.run_dir or ".") / runs.BEST_WEIGHTS
        if self.config.keep != "best" or epoch == state.epoch:
            return
        if not path.exists():  # resumed with --keep best after its best epoch: those weights were never kept
            return warnings.warn(f"no weights of the best epoch ({epoch}) in {self.run_dir}; it keeps the last epoch's",
                                 AelabWarning, stacklevel=3)
        runs.load_weights(self.model, path)

    def _checkpoint(self, state: TrainState) -> None:
        save_checkpoint(self.ckpt, self.model, self.optimizer, state, self.perm_gen, self.noise_gen)

    def finish(self, state: TrainState) -> dict:
        # hand back the model in the layout a loaded one has, so both give bit-identical outputs
        self.model.to(memory_format=torch.contiguous_format)
        return state.history


class _Progress:
    """Progress on stderr (rank 0, when ``config.progress``): a bar of steps on a terminal, one
    line per epoch otherwise (a log file, CI, ``nohup``; as Keras' ``verbose=2``); else a no-op."""

    def __init__(self, loop: _Loop, state: TrainState):
        self.loop, self.bar, self.lines = loop, None, False
        if loop.config.progress and loop.main:
            if not _is_terminal(sys.stderr):
                self.lines = True
                return
            from tqdm.auto import tqdm  # imported only when a bar is shown (tqdm.auto probes for notebooks)

            per_epoch = loop.steps_per_epoch
            self.bar = tqdm(total=loop.config.epochs * per_epoch, initial=state.epoch * per_epoch + state.step,
                            unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start_epoch(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {state.epoch + 1}/{self.loop.config.epochs}")

    def step(self, state: TrainState, sums: dict) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        loop = self.loop
        if state.step % 50 == 0 or state.step == loop.steps_per_epoch:
            seen = min(loop.n, state.step * loop.global_batch)
            self.bar.set_postfix(loss=f"{float(sums['loss']) / seen * loop.world:.4f}")

    def end_epoch(self, state: TrainState) -> None:
        history = state.history
        val = history["val"].get("loss")
        if self.lines:
            line = f"epoch {state.epoch}/{self.loop.config.epochs}: loss {history['train']['loss'][-1]:.4f}"
            line += (f", val {val[-1]:.4f}" if val else "") + f", {history['seconds'][-1]:.1f} s"
            print(line, file=sys.stderr, flush=True)
        elif self.bar is not None:
            self.bar.set_postfix(loss=f"{history['train']['loss'][-1]:.4f}",
                                 **({"val": f"{val[-1]:.4f}"} if val else {}))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _Interrupt:
    """Turn SIGINT/SIGTERM into a flag checked between steps, so the loop can checkpoint."""

    def __init__(self):
        self.hit = False
        self._old = {}

    def __enter__(self):
        if hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread():
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


def _validate(model, x_in, x_target, batch_size, amp) -> dict[str, float]:
    """Sums over images of each loss term (the caller divides by the number of images)."""
    model.eval()
    sums: dict[str, float] = {}
    n = len(x_in)
    with torch.no_grad(), amp:
        for i in range(0, n, batch_size):
            terms = model.loss(x_in[i:i + batch_size], x_target[i:i + batch_size])
            k = len(x_in[i:i + batch_size])
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value) * k
    model.train()
    return sums


def check_training_shape(model: Autoencoder, x: torch.Tensor, name: str = "training images") -> None:
    """Training images must have the shape the model was built for (a fully convolutional model
    takes any size at inference; it trains at its own, which its config records)."""
    model.check_input(x[:1])
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise DataError(f"expected {name} of shape (N, {', '.join(map(str, model.input_shape))}) for this model, "
                        f"found {tuple(x.shape)}; build the model for this shape, or pass --crop H,W")


def _sanity_check(model: Autoencoder, x: torch.Tensor, noise: Noise) -> None:
    """One forward pass on a tiny batch, failing early with likely causes."""
    batch = x[:2]
    check_training_shape(model, batch)
    try:
        x_hat = model(noise(batch, torch.Generator().manual_seed(0)))
    except RuntimeError as exc:
        raise ConfigError(f"the model cannot process images of shape {tuple(batch.shape[1:])} ({exc}); "
                          "check the network options against the image size") from None
    if x_hat.shape != batch.shape:
        raise ConfigError(f"expected the network to reconstruct shape {tuple(batch.shape)}, it gives "
                          f"{tuple(x_hat.shape)}; check the network options")


class _LossModule(torch.nn.Module):
    """``forward(x_in, x) = model.loss(x_in, x)``: what DDP wraps, so its hooks see the loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x_in, x_target):
        return self.model.loss(x_in, x_target)


def _streamed(x) -> bool:
    return isinstance(x, streaming.Streamed)


def _images(x, name: str):
    """In-memory images checked (float32 NCHW in [0, 1]); a streamed data set as it is (its items are checked
    as they are read)."""
    if _streamed(x):
        if len(x) == 0:
            raise ConfigError(f"expected {name}, found an empty data set; check --data")
        return x
    return check_images(x, name)
