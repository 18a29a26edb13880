"""aelab: autoencoders on images.

The public API mirrors the command line: ``reproduce``, ``train``, ``denoise``,
``show_data``, ``write_report``; the building blocks (data loaders, noise models,
networks, kinds, the fit loop, metrics) are importable from their modules.

Names are imported on first use (PEP 562), so ``import aelab`` and ``aelab --help`` do not
pay for torch until something needs it.
"""

from __future__ import annotations

import importlib
import sys
import types

from .version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "Dataset": "data", "check_images": "data", "load_dataset": "data", "load_fashion_mnist": "data",
    "load_image_folder": "data", "load_npz": "data",
    "denoise": "inference", "apply_model": "inference",
    "show_data": "show",
    "AelabError": "errors", "ConfigError": "errors", "DataError": "errors", "DataNotFoundError": "errors",
    "TrainingError": "errors",
    "embed": "embed",
    "BASELINES": "baselines", "make_baseline": "baselines",
    "denoising_quality": "evaluate", "evaluate": "evaluate",
    "knn_accuracy": "metrics", "knn_cv_accuracy": "metrics", "psnr": "metrics", "ssim": "metrics",
    "trustworthiness": "metrics",
    "MODELS": "models", "Autoencoder": "models", "build_model": "models", "register_model": "models",
    "add_evaluation_noise": "noise", "evaluation_noise": "noise", "parse_noise": "noise",
    "write_report": "report",
    "reproduce": "reproduce",
    "load_model": "runs", "save_model": "runs",
    "compare": "compare",
    "AutoencoderEstimator": "estimator",
    "sample": "generate",
    "TrainConfig": "settings",
    "fit": "loop", "train": "train", "train_run": "train",
}
_ALIASES = {"embed_codes": ("embed", "reduce")}

__all__ = ["__version__", *_EXPORTS, *_ALIASES]


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name], name
    elif name in _ALIASES:
        module, attr = _ALIASES[name]
    else:
        raise AttributeError(f"module 'aelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Five functions share their module's name (``embed``, ``evaluate``, ``reproduce``,
    ``compare``, ``train``). Importing such a submodule binds the package attribute to the
    module; keep the function there instead, as an eager ``from .embed import embed`` did."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name and \
                value.__name__ == f"{__name__}.{name}" and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
