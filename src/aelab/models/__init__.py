"""The registry of kinds. Importing this package registers every kind in it."""

from .base import MODELS, Autoencoder, build_model, register_model
from . import codec, contractive, denoising, sparse, undercomplete, variational  # noqa: F401  (register the kinds)

__all__ = ["MODELS", "Autoencoder", "build_model", "register_model"]
