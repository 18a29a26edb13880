"""The training state on disk: ``checkpoint.pt``, written atomically and read back so that a
resumed run ends bit-identical to one that was never interrupted.

A checkpoint holds the model, the optimizer, both generators (batch order, noise), torch's
global generator and the position inside the epoch. It is read with ``weights_only=True``.
The best validation loss and its epoch (``--keep best``, ``--patience``) follow from the history
it holds (:meth:`TrainState.best`), so a checkpoint written before they existed resumes with them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import runs
from .errors import ConfigError


@dataclass
class TrainState:
    """Where a training stands: what a checkpoint saves besides the model and the optimizer."""

    epoch: int = 0                      # epochs finished
    step: int = 0                       # steps finished inside the current epoch
    perm: torch.Tensor | None = None    # the current epoch's batch order
    sums: dict = field(default_factory=dict)  # running sums of the terms in the current epoch
    history: dict = field(default_factory=lambda: {"train": {}, "val": {}, "seconds": []})
    seconds: float = 0.0                # time spent in the current epoch so far

    def best(self) -> tuple[float | None, int]:
        """The lowest validation loss so far and its epoch (1-based; the first epoch that reached it):
        (None, 0) before a validated epoch. A NaN loss never counts as an improvement."""
        best, epoch = None, 0
        for i, value in enumerate(self.history.get("val", {}).get("loss", []), 1):
            if value is not None and value == value and (best is None or value < best):
                best, epoch = value, i
        return best, epoch


def save_checkpoint(path: Path, model, optimizer, state: TrainState, perm_gen, noise_gen) -> None:
    payload = {
        "model": runs.plain_state_dict(model),
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


def load_checkpoint(path: Path, model, optimizer, perm_gen, noise_gen) -> TrainState:
    """Restore ``model``, ``optimizer``, both generators and torch's generator from ``path``;
    return the position. A missing, damaged or foreign file, or a link out of the run, is a one-line
    :class:`ConfigError`."""
    path = runs.own_file(path)
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
        return TrainState(epoch=payload["epoch"], step=payload["step"], perm=perm, sums=payload["sums"],
                          history=payload["history"], seconds=payload["seconds"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ConfigError(f"{path}: expected a checkpoint of this run's model and settings, found one that does "
                          f"not fit ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                          "resume with the run's own settings, or start again without --resume") from None
