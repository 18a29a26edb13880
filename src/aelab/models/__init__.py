"""The registry of kinds. Importing this package registers every kind in it."""

from .base import MODELS, Autoencoder, build_model, register_model
from . import denoising  # noqa: F401  (registers the kind)

__all__ = ["MODELS", "Autoencoder", "build_model", "register_model"]
