"""The training settings: :class:`TrainConfig`, the one place every training default is
written, and the learning-rate schedule it names.

The command line, :func:`aelab.train`, :func:`aelab.reproduce` and the estimator read their
defaults from here (``TrainConfig().epochs``, or ``TrainConfig.epochs`` on the class).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from .device import resolve_device
from .errors import ConfigError
from .noise import parse_noise

SCHEDULES = ("constant", "onecycle")


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
    def names(cls) -> list[str]:
        """The settings' names, in order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = set(cls.names())
        return cls(**{k: v for k, v in d.items() if k in names})

    def record(self, data=None, limit: int | None = None) -> dict:
        """The ``train`` section of a run's ``config.json``: these settings (less ``progress``)
        and the data they were trained on (``--data`` and ``--limit``, what ``--resume`` reuses)."""
        record = asdict(self)
        record.pop("progress", None)
        record.update({"data": None if data is None else str(data), "limit": limit})
        return record


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
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
