"""TensorBoard: the training loop's callback that writes event files under RUN/tensorboard/, and the projector files of a map.

:class:`Board` is one callback of :func:`aelab.loop.fit` (``--tensorboard``, the optional extra
``aelab[tensorboard]``), on rank 0 only. It writes, all against the global optimizer step (so a
step's and an epoch's curves share one axis):

- ``step/<term>`` (each loss term of that step's batch) and ``step/lr`` every :data:`EVERY` steps;
- ``train/<term>`` and ``val/<term>``: each epoch's mean terms, at the epoch's last step;
- ``images/noisy_output_clean``: a grid of the first :data:`IMAGES` validation images (rows:
  the noisy input, the model's output, the clean image), each epoch;
- at the end, the run's settings as hparams with its final figures (``hparam/...``: the PSNR of
  the output and of the input from ``history["quality"]``, the last and the best validation loss).

A resumed run opens its writer with ``purge_step`` at the step it resumes after, so whatever an
interrupted run logged past its checkpoint is hidden: the curves have each step once.
:func:`write_projector` (``aelab embed --tensorboard``) writes the codes with their labels and
thumbnails for TensorBoard's projector.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
from pathlib import Path

import torch

from .errors import ConfigError

FOLDER = "tensorboard"  # RUN/tensorboard/ (aelab.ownership removes only its event and projector files)
EVERY = 10              # the steps between two step/... points
IMAGES = 8              # validation images in the grid
SPRITE = 8192           # TensorBoard's projector reads sprites up to this many pixels a side
INSTALL = "pip install 'aelab[tensorboard]'"


def check_installed() -> None:
    """A one-line :class:`ConfigError` when the tensorboard package is missing (before any work)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"expected the tensorboard package for --tensorboard, found it not installed; {INSTALL}, "
                          "or leave --tensorboard out")


def _writer(log_dir: Path, purge_step: int | None = None):
    check_installed()
    from torch.utils.tensorboard import SummaryWriter  # optional: aelab[tensorboard]

    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def grid(rows, pad: int = 2) -> torch.Tensor:
    """Images ``rows`` (a list of (N, C, H, W) in [0, 1], one per row) as one (C, H', W') image,
    ``pad`` grey pixels between and around them."""
    n, c, h, w = rows[0].shape
    out = torch.full((c, pad + len(rows) * (h + pad), pad + n * (w + pad)), 0.5)
    for r, images in enumerate(rows):
        for i, image in enumerate(images.float().clamp(0, 1).cpu()):
            top, left = pad + r * (h + pad), pad + i * (w + pad)
            out[:, top:top + h, left:left + w] = image
    return out


class Board:
    """The loop's TensorBoard callback: ``step`` after each optimizer step, ``epoch`` after each
    epoch's checkpoint, ``close`` at the end (with the history when the training finished)."""

    def __init__(self, loop, state, run_dir):
        self.loop = loop
        start = loop.global_step(state)
        # resumed (or restarted without a checkpoint): what the run logged past this step is hidden
        self.writer = _writer(Path(run_dir) / FOLDER, purge_step=start + 1)
        if loop.val_in is not None:  # rank 0's share of the fixed validation draw: the first images
            self.noisy, self.clean = loop.val_in[:IMAGES], loop.val_target[:IMAGES]
        else:  # no validation set: the first training images under the same fixed noise
            clean = (loop.data.items(range(min(IMAGES, loop.n))) if loop.x is None else loop.x[:IMAGES]).float()
            clean = clean.to(loop.device).contiguous()
            self.noisy, self.clean = loop.noise(clean, torch.Generator().manual_seed(0)), clean

    def step(self, state, terms: dict) -> None:
        step = self.loop.global_step(state)
        if step % EVERY:
            return
        for name, value in terms.items():
            self.writer.add_scalar(f"step/{name}", float(value), step)
        self.writer.add_scalar("step/lr", float(self.loop.optimizer.param_groups[0]["lr"]), step)

    def epoch(self, state) -> None:
        step, epoch = self.loop.global_step(state), state.epoch
        for section in ("train", "val"):
            for name, values in state.history[section].items():
                if len(values) >= epoch:
                    self.writer.add_scalar(f"{section}/{name}", values[epoch - 1], step)
        self.writer.add_image("images/noisy_output_clean", grid([self.noisy, self._output(), self.clean]), step)
        self.writer.flush()

    @torch.no_grad()
    def _output(self) -> torch.Tensor:
        model, device = self.loop.model, self.loop.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the training's draws stay
            model.eval()
            try:
                with self.loop.amp:
                    return model(self.noisy).float()
            finally:
                model.train()

    def close(self, history: dict | None, state=None) -> None:
        """Write the hparams with the final figures (a finished training), then close the files."""
        try:
            if history is not None:
                self._hparams(history, state)
        finally:
            self.writer.close()

    def _hparams(self, history: dict, state) -> None:
        from torch.utils.tensorboard.summary import hparams  # optional: aelab[tensorboard]

        config, model = self.loop.config, self.loop.model
        settings = {"kind": model.kind, "net": model.net, **{k: getattr(config, k) for k in (
            "epochs", "batch_size", "lr", "seed", "noise", "schedule", "optimizer", "weight_decay", "keep",
            "patience", "amp", "freeze_encoder")}}
        settings = {k: v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else str(v).lower()
                    for k, v in settings.items()}  # a bool as true/false (TensorBoard would show 0/1), None as none
        quality, val = history.get("quality", {}), history.get("val", {}).get("loss", [])
        best, _ = state.best() if state is not None else (None, 0)
        metrics = {"hparam/output_psnr": quality.get("output_psnr"), "hparam/input_psnr": quality.get("input_psnr"),
                   "hparam/val_loss": val[-1] if val else None, "hparam/best_val_loss": best,
                   "hparam/epochs_trained": len(history.get("train", {}).get("loss", []))}
        metrics = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
        for summary in hparams(settings, metrics):
            self.writer.file_writer.add_summary(summary)
        step = self.loop.global_step(state) if state is not None else 0
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)


def write_projector(folder, codes, labels, class_names, images, tag: str) -> Path:
    """The codes ``codes`` (N, D) of ``images`` (N, C, H, W in [0, 1]) with their class (a name
    from ``class_names`` per label) and index, and the images as thumbnails, for TensorBoard's
    projector: ``folder`` becomes a run of its own (``tensorboard --logdir`` above it shows it)."""
    codes = torch.as_tensor(codes).float()
    images = torch.as_tensor(images).float()
    side = SPRITE // math.ceil(math.sqrt(len(images)))  # the sprite holds every thumbnail
    if max(images.shape[2:]) > side:
        scale = side / max(images.shape[2:])
        size = [max(1, int(images.shape[2] * scale)), max(1, int(images.shape[3] * scale))]
        images = torch.nn.functional.interpolate(images, size=size, mode="area")
    metadata = [[str(class_names[int(y)]) if int(y) < len(class_names) else str(int(y)), str(i)]
                for i, y in enumerate(labels)]
    folder = Path(folder)
    writer = _writer(folder)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torch prints a warning when the map is written again
            writer.add_embedding(codes, metadata=metadata, label_img=images.clamp(0, 1), global_step=0, tag=tag,
                                 metadata_header=["class", "index"])
    finally:
        writer.close()
    return folder
