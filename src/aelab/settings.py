"""Settings: the dataclasses whose commented defaults the command line, the Python API and the saved configs share.

This module imports nothing heavy (no torch), so ``aelab --help`` can show the defaults at
once. A default is written here, once; the CLI's help and the library's keyword defaults
read it from here.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
from dataclasses import asdict, dataclass, fields

from .errors import ConfigError

SCHEDULES = ("constant", "onecycle")
OPTIMIZERS = ("adam", "adamw", "sgd")  # aelab.device.optimizer builds them
KEEP = ("last", "best")  # which weights a run loads: the last epoch's, or the best validation epoch's
# A seed goes to torch (manual_seed and Generator: 0..2**64 - 1, the training's noise generator adds
# 1,000,003 to it), to NumPy's RandomState and scikit-learn's random_state (t-SNE, UMAP, PCA, kNN
# folds: 0..2**32 - 1): every seed in 0..2**32 - 1 works for all of them.
SEED_MAX = 2 ** 32 - 1


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _found(value) -> str:
    """``value`` for a message: its repr, with its type when that is not a number."""
    text = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return text if _is_number(value) else f"{text} (a {type(value).__name__})"


def check_seed(seed, flag: str = "--seed"):
    """``seed`` when it is a whole number every user of a seed accepts (0..:data:`SEED_MAX`), else a
    one-line :class:`ConfigError` that says the range."""
    if not _is_int(seed) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"expected a seed from 0 to {SEED_MAX} (2**32 - 1, what torch, NumPy and scikit-learn "
                          f"all accept), found {_found(seed)}; pass a whole number in that range, e.g. {flag} 0")
    return seed


_EXAMPLES = {"noise": "gaussian:0.2", "threads": 1, "exaggeration": 2.0}  # where the default is None


def check_types(settings, expected: dict) -> None:
    """Refuse a field of the dataclass ``settings`` whose value is not of the kind ``expected``
    names: ``{"epochs": "int", "lr": "number", "noise": "str?", ...}`` (``?``: None too)."""
    tests = {"int": _is_int, "number": _is_number, "str": lambda v: isinstance(v, str),
             "bool": lambda v: isinstance(v, bool)}
    words = {"int": "a whole number", "number": "a number", "str": "a string", "bool": "True or False"}
    for name, kind in expected.items():
        value = getattr(settings, name)
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        if value is None and optional:
            continue
        if tests[kind](value):
            if kind == "int" and type(value) is not int:  # numpy's integers: plain ints, as JSON writes them
                setattr(settings, name, int(value))
            elif kind == "number" and type(value) not in (int, float):
                setattr(settings, name, float(value))
            continue
        example = _EXAMPLES.get(name, getattr(type(settings), name, None))
        hint = f"e.g. {name}={example!r}"
        raise ConfigError(f"expected {name} to be {words[kind]}{' or None' if optional else ''}, found "
                          f"{_found(value)}; {hint}")


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
    freeze_encoder: bool = False  # train the rest only: the encoder (the codes) stays as it starts (with an init)
    tensorboard: bool = False   # event files under RUN/tensorboard/ (pip install 'aelab[tensorboard]')
    keep: str = "last"          # "best": also keep the best validation epoch's weights, which the run then loads
    patience: int | None = None  # stop when the validation loss has not improved for this many epochs; None = never
    optimizer: str = "adam"     # "adam" (the tutorial), "adamw" (decoupled weight decay) or "sgd" (momentum 0.9)
    weight_decay: float = 0.0   # L2 penalty (adam, sgd) or decoupled decay (adamw); 0 = none
    workers: int = 0            # processes reading streamed images (a folder, an .npz); 0 = read in the loop
    progress: bool = True       # a progress bar on stderr

    TYPES = {"epochs": "int", "batch_size": "int", "lr": "number", "seed": "int", "threads": "int?",
             "channels_last": "bool", "amp": "str", "schedule": "str", "val_batch_size": "int",
             "freeze_encoder": "bool", "tensorboard": "bool", "keep": "str", "patience": "int?",
             "optimizer": "str", "weight_decay": "number", "workers": "int", "progress": "bool"}

    def check(self) -> "TrainConfig":
        check_types(self, self.TYPES)
        check_seed(self.seed)
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"expected epochs >= 1, found {self.epochs}; e.g. --epochs 10")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"expected batch size >= 1, found {self.batch_size}; e.g. --batch-size 32")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"expected a learning rate > 0, found {self.lr}; e.g. --lr 1e-3")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"expected threads >= 1, found {self.threads}")
        if self.workers < 0:
            raise ConfigError(f"expected workers >= 0, found {self.workers}; e.g. --workers 2 (0 reads in the loop)")
        if self.val_batch_size < 1:
            raise ConfigError(f"expected val_batch_size >= 1, found {self.val_batch_size}; e.g. val_batch_size=1000")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"expected schedule one of {', '.join(SCHEDULES)}, found {self.schedule!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"expected amp auto, bf16 or off, found {self.amp!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"expected optimizer one of {', '.join(OPTIMIZERS)}, found {self.optimizer!r}; "
                              "e.g. --optimizer adamw")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"expected weight decay >= 0, found {self.weight_decay}; e.g. --weight-decay 0.01")
        if self.keep not in KEEP:
            raise ConfigError(f"expected keep one of {', '.join(KEEP)}, found {self.keep!r}; e.g. --keep best")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"expected patience >= 1 epoch, found {self.patience}; e.g. --patience 3 "
                              "(leave it out to train every epoch)")
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("expected the tensorboard package for --tensorboard, found it not installed; "
                              "pip install 'aelab[tensorboard]', or leave --tensorboard out")
        # heavy: the noise models and the device check need torch, which this module never imports at load
        from .device import resolve_device
        from .noise import Noise, parse_noise

        if self.noise is not None and not isinstance(self.noise, (str, Noise)):
            raise ConfigError(f"expected noise to be a string or None (or an aelab.noise.Noise), found "
                              f"{_found(self.noise)}; e.g. noise='gaussian:0.2'")
        parse_noise(self.noise)  # raises on a bad spec
        resolve_device(self.device)
        return self

    def check_needs(self, validation: bool, run_dir: bool) -> "TrainConfig":
        """Refuse a control the training lacks something for: ``keep="best"`` and ``patience`` follow
        the validation loss (``validation``: there are validation images); ``keep="best"`` and
        ``tensorboard`` write files into the run (``run_dir``: there is one)."""
        follow = [flag for flag, on in (("--keep best", self.keep == "best"), ("--patience", self.patience is not None))
                  if on]
        if follow and not validation:
            raise ConfigError(f"expected validation images for {' and '.join(follow)} (it follows the validation "
                              f"loss), found none; train on data with a test split (a folder's test/), or leave "
                              f"{follow[0]} out")
        write = [flag for flag, on in (("--keep best", self.keep == "best"), ("--tensorboard", self.tensorboard)) if on]
        if write and not run_dir:
            raise ConfigError(f"expected a run directory for {' and '.join(write)} (its files go there), found none; "
                              "pass run_dir=, or leave it out")
        return self

    @classmethod
    def names(cls) -> list[str]:
        """The settings' names, in order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = set(cls.names())
        return cls(**{k: v for k, v in d.items() if k in names})

    def record(self, data=None, limit: int | None = None, crop=None, crops_per_image: int = 1) -> dict:
        """The ``train`` section of a run's ``config.json``: these settings (less ``progress``)
        and the data they were trained on (``--data``, ``--limit``, ``--crop`` and
        ``--crops-per-image``, what ``--resume`` reuses)."""
        record = asdict(self)
        record.pop("progress", None)
        record.update({"data": None if data is None else str(data), "limit": limit})
        if crop is not None:
            record["crop"] = list(crop)
        if crops_per_image != 1:
            record["crops_per_image"] = crops_per_image
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


@dataclass(frozen=True)
class Schedule:
    """A training preset of ``aelab reproduce``: how long, how big the batches, how fast."""
    epochs: int
    batch_size: int
    lr: float
    schedule: str


# the tutorial's own schedule (TrainConfig's defaults)
TUTORIAL = Schedule(TrainConfig.epochs, TrainConfig.batch_size, TrainConfig.lr, TrainConfig.schedule)
# --fast: the same model to the tutorial's 10-epoch quality in a fraction of the CPU time
# (bigger batches are cheaper per image on a CPU; a one-cycle schedule lets the larger
# learning rate converge). Measured in benchmarks/train_speed.py --fast; see docs/speed.md.
FAST = Schedule(epochs=3, batch_size=64, lr=1e-2, schedule="onecycle")


@dataclass(frozen=True)
class EvaluateConfig:
    noise_factors: tuple = (0.1, 0.2, 0.3, 0.5)  # the protocol's four levels (docs/protocols.md)
    slow_limit: int = 1000      # slow baselines (BM3D, non-local means) on the first 1,000 test images
    hardest: int = 8            # images in the gallery of the hardest


@dataclass
class MapConfig:
    method: str = "tsne"              # one of aelab.embed.REDUCERS: pca, tsne, umap, ptsne
    perplexity: float = 30.0          # t-SNE's effective number of neighbours (the paper's and both libraries' default)
    exaggeration: float | None = None  # t-SNE attraction factor after the early phase; None = 1 (plain t-SNE)
    n_neighbors: int = 15             # UMAP's neighbourhood size (umap-learn's default)
    min_dist: float = 0.1             # UMAP's smallest distance between points in the map (umap-learn's default)
    seed: int = 0                     # random_state of every method: the same seed gives the same map
    threads: int = 1                  # n_jobs for the neighbour search and the gradient
    progress: bool = True             # a progress bar (or the library's own log) on stderr

    TYPES = {"method": "str", "perplexity": "number", "exaggeration": "number?", "n_neighbors": "int",
             "min_dist": "number", "seed": "int", "threads": "int", "progress": "bool"}

    def check(self, methods=None) -> "MapConfig":
        """Check the values; ``methods``: the registered map methods (aelab.embed passes them)."""
        check_types(self, self.TYPES)
        check_seed(self.seed)
        if methods is not None and self.method not in methods:
            raise ConfigError(f"unknown map method {self.method!r}; expected one of {', '.join(methods)}")
        if not self.perplexity > 0:
            raise ConfigError(f"expected perplexity > 0, found {self.perplexity}; e.g. --perplexity 30")
        if self.exaggeration is not None and not self.exaggeration > 0:
            raise ConfigError(f"expected exaggeration > 0, found {self.exaggeration}; e.g. --exaggeration 2")
        if not self.n_neighbors >= 2:
            raise ConfigError(f"expected n_neighbors >= 2 for UMAP, found {self.n_neighbors}; e.g. --n-neighbors 15")
        if not self.threads >= 1:
            raise ConfigError(f"expected threads >= 1, found {self.threads}")
        return self


@dataclass(frozen=True)
class CompareConfig:
    net: str = "dense"          # the network every kind shares
    latent_dim: int = 32        # the code size every kind shares (the sparse rows widen theirs)
    epochs: int = 20            # per kind
    batch_size: int = 128
    lr: float = 3e-3            # the peak of the one-cycle schedule
    schedule: str = "onecycle"
    seed: int = 0               # the same for every kind
    iw_samples: int = 1000      # K of the variational row's importance-weighted bound
    jacobian_images: int = 1000  # test images for the exact ||J||_F


TRAIN = TrainConfig()
REPRODUCE_FAST = FAST
EVALUATE = EvaluateConfig()
EMBED = MapConfig()
COMPARE = CompareConfig()
