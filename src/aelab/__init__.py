"""aelab: autoencoders on images.

The public API mirrors the command line: ``reproduce``, ``train``, ``denoise``,
``show_data``, ``write_report``; the building blocks (data loaders, noise models,
networks, kinds, the fit loop, metrics) are importable from their modules.
"""

__version__ = "0.1.0"

from .data import Dataset, check_images, load_dataset, load_fashion_mnist, load_image_folder, load_npz
from .use import denoise, show_data
from .errors import AelabError, ConfigError, DataError, DataNotFoundError, TrainingError
from .embed import embed, reduce as embed_codes
from .baselines import BASELINES, make_baseline
from .evaluate import apply_model, denoising_quality, evaluate
from .metrics import knn_accuracy, knn_cv_accuracy, psnr, ssim, trustworthiness
from .models import MODELS, Autoencoder, build_model, register_model
from .noise import add_evaluation_noise, evaluation_noise, parse_noise
from .report import write_report
from .reproduce import reproduce
from .runs import load_model, save_model
from .compare import compare
from .estimator import AutoencoderEstimator
from .generate import sample
from .train import TrainConfig, fit, train, train_run

__all__ = [
    "__version__", "Dataset", "check_images", "load_dataset", "load_fashion_mnist", "load_image_folder",
    "load_npz", "denoise", "show_data", "AelabError", "ConfigError", "DataError", "DataNotFoundError",
    "TrainingError", "apply_model", "denoising_quality", "psnr", "ssim", "MODELS", "Autoencoder",
    "build_model", "register_model", "add_evaluation_noise", "evaluation_noise", "parse_noise",
    "write_report", "reproduce", "load_model", "save_model", "TrainConfig", "fit", "train", "train_run",
    "embed", "embed_codes", "trustworthiness", "knn_cv_accuracy",
    "compare", "AutoencoderEstimator", "sample", "knn_accuracy",
    "evaluate", "BASELINES", "make_baseline",
]
