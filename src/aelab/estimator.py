"""Every kind as a scikit-learn estimator: ``fit`` trains, ``transform`` gives the codes,
``inverse_transform`` decodes them, ``score`` is the reconstruction PSNR, and
``get_params`` / ``set_params`` / ``clone`` work, so a kind drops into a ``Pipeline`` or
``GridSearchCV``; ``sklearn.utils.estimator_checks.check_estimator`` passes for every kind::

    from sklearn.pipeline import make_pipeline
    from sklearn.neighbors import KNeighborsClassifier
    pipe = make_pipeline(AutoencoderEstimator("sparse", net="dense", epochs=5, penalty="kl"),
                         KNeighborsClassifier(5))
    pipe.fit(x_train, y_train).score(x_test, y_test)

Conventions (scikit-learn's): ``__init__`` only stores its arguments, ``fit``
returns ``self``, learned attributes end in ``_``, randomness comes from ``random_state``,
input is checked by scikit-learn's own ``validate_data`` / ``check_array`` (its messages for
NaN, inf, empty, sparse, complex and object input). Every kind's hyper-parameters
(``penalty=``, ``beta=``, ...) are explicit keyword arguments, ``None`` meaning the kind's
default; one the kind does not have is refused by ``fit``.

Two ways in, chosen by the shape of ``X`` in ``fit``:

- **rows** (N, D) of any real values (a scikit-learn table), with ``input_shape`` None: each
  feature is standardised with the mean and standard deviation ``fit`` saw (``mean_``,
  ``scale_``), then squashed into (0, 1) by the logistic function, and the network trains on
  those rows as (N, 1, 1, D) images. The map is invertible: ``inverse_transform`` takes the
  logit of the decoder's output and undoes the standardising, so values outside the range
  ``fit`` saw are neither refused nor clipped. ``score`` is the PSNR in the squashed space.
- **images** (N, C, H, W) or (N, H, W) in [0, 1], or flat rows with ``input_shape=(C, H, W)``
  (for a convolutional net on flattened images): trained as they are, exactly as
  :func:`aelab.loop.fit` trains them; ``transform`` then also takes the images as flat rows,
  and ``inverse_transform`` returns the layout ``fit`` was given.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6: the estimator method it replaced
    def validate_data(estimator, X, **check_params):
        return estimator._validate_data(X, **check_params)

from .data import check_images
from .errors import ConfigError, DataError
from .inference import apply_model
from .loop import fit
from .metrics import psnr_per_image
from .models import MODELS, build_model
from .models.undercomplete import UndercompleteAutoencoder
from .settings import SEED_MAX, TrainConfig

# Every kind's hyper-parameters (the union of ``MODELS[kind].option_names()``; a test keeps
# this list equal to it): each is a keyword argument of the estimator, None = the kind's default.
KIND_OPTIONS = ("reconstruction",                                            # every kind
                "penalty", "sparsity_weight", "sparsity_target",             # sparse
                "contractive_weight", "jacobian", "projections",             # contractive
                "beta", "likelihood_scale", "binarize", "train_samples",     # variational
                "kl_warmup", "prior", "pseudo_inputs", "autoregressive",
                "lmbda", "straight_through", "slices")                       # codec (prior too)

_UNSQUASH_EPS = 1e-6  # the decoder's output is clamped to [eps, 1 - eps] before the logit: +-13.8 sd


class AutoencoderEstimator(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A kind of autoencoder (``kind``, on network ``net``) as a scikit-learn transformer.

    The training arguments mirror :class:`aelab.TrainConfig`; ``random_state`` (an int, a
    ``RandomState`` or None) is its seed: initial weights, batch order and noise.
    ``latent_dim`` is the code size (the network option of that name; None: the kind's
    default). The kind's hyper-parameters are the keyword arguments after it (see
    :data:`KIND_OPTIONS`); None leaves the kind's default.
    """

    def __init__(self, kind: str = "undercomplete", net: str = "dense", net_options: dict | None = None,
                 epochs: int = TrainConfig.epochs, batch_size: int = 128, lr: float = TrainConfig.lr,
                 noise: str | None = None, input_shape: tuple | None = None, random_state=0,
                 device: str = "cpu", threads: int | None = None, *, latent_dim: int | None = None,
                 reconstruction=None, penalty=None, sparsity_weight=None, sparsity_target=None,
                 contractive_weight=None, jacobian=None, projections=None,
                 beta=None, likelihood_scale=None, binarize=None, train_samples=None,
                 kl_warmup=None, prior=None, pseudo_inputs=None, autoregressive=None,
                 lmbda=None, straight_through=None, slices=None):
        self.kind = kind
        self.net = net
        self.net_options = net_options
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.noise = noise
        self.input_shape = input_shape
        self.random_state = random_state
        self.device = device
        self.threads = threads
        self.latent_dim = latent_dim
        self.reconstruction = reconstruction
        self.penalty = penalty
        self.sparsity_weight = sparsity_weight
        self.sparsity_target = sparsity_target
        self.contractive_weight = contractive_weight
        self.jacobian = jacobian
        self.projections = projections
        self.beta = beta
        self.likelihood_scale = likelihood_scale
        self.binarize = binarize
        self.train_samples = train_samples
        self.kl_warmup = kl_warmup
        self.prior = prior
        self.pseudo_inputs = pseudo_inputs
        self.autoregressive = autoregressive
        self.lmbda = lmbda
        self.straight_through = straight_through
        self.slices = slices

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # codes are float32, whatever came in
        return tags

    # -- what fit builds from the parameters ----------------------------------------------
    def _options(self) -> dict:
        """The kind's hyper-parameters that were set (build_model refuses those the kind lacks)."""
        return {name: getattr(self, name) for name in KIND_OPTIONS if getattr(self, name) is not None}

    def _net_options(self, n_features: int) -> dict:
        """``net_options`` with ``latent_dim``; on rows with neither set, the undercomplete kind's
        default code is cut to ``n_features - 1`` units (its code must be smaller than the input)."""
        options = dict(self.net_options or {})
        if self.latent_dim is not None:
            if options.get("latent_dim", self.latent_dim) != self.latent_dim:
                raise ConfigError(f"latent_dim={self.latent_dim!r} and net_options latent_dim="
                                  f"{options['latent_dim']!r} disagree; give it once")
            options["latent_dim"] = self.latent_dim
        elif self.tabular_ and "latent_dim" not in options and _undercomplete(self.kind):
            options["latent_dim"] = min(MODELS[self.kind].net_defaults["latent_dim"], n_features - 1)
        return options

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            return int(self.random_state)  # TrainConfig.check refuses one outside 0..2**32 - 1
        return int(check_random_state(self.random_state).randint(0, SEED_MAX, dtype=np.int64))

    # -- data -----------------------------------------------------------------------------
    def _rows(self, X, reset: bool) -> torch.Tensor:
        """Rows (N, D) of any real values, checked by scikit-learn, as (N, 1, 1, D) in (0, 1)."""
        # an undercomplete code (at least one unit, fewer than the features) needs two features
        least = 2 if reset and _undercomplete(self.kind) else 1
        x = validate_data(self, X, reset=reset, dtype=np.float64, ensure_min_features=least)
        if reset:
            self.mean_ = x.mean(axis=0)
            scale = x.std(axis=0)  # a constant feature (a spread of rounding error at most) keeps scale 1
            self.scale_ = np.where(scale > 10 * np.finfo(np.float64).eps * np.maximum(np.abs(self.mean_), 1.0),
                                   scale, 1.0)
        squashed = expit((x - self.mean_) / self.scale_).astype(np.float32)
        return torch.from_numpy(squashed).reshape(len(x), 1, 1, x.shape[1])

    def _images(self, X, reset: bool) -> torch.Tensor:
        """Images (N, C, H, W), (N, H, W), or flat rows of ``input_shape``, in [0, 1], as float32 NCHW."""
        ndim = _ndim(X)
        if ndim <= 2:  # flat rows of images: scikit-learn checks them (and the width) first
            shape = tuple(self.input_shape) if reset else self.input_shape_
            x = validate_data(self, X, reset=reset, dtype="numeric")
            if x.shape[1] != math.prod(shape):
                raise DataError(f"expected {math.prod(shape)} values per row for input_shape {tuple(shape)}, "
                                f"found {x.shape[1]}; fix input_shape")
            x = x.reshape((len(x),) + shape)
        else:
            x = check_array(X, allow_nd=True, dtype="numeric", input_name="X")
            if ndim == 3:
                x = x[:, None]
            if not reset and tuple(x.shape[1:]) != self.input_shape_:
                raise DataError(f"expected images of shape {self.input_shape_} as in fit, found {tuple(x.shape[1:])}")
        return check_images(x, "X")

    def _input(self, X, reset: bool) -> torch.Tensor:
        X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X
        if reset:
            for name in ("mean_", "scale_", "n_features_in_", "feature_names_in_"):  # a previous fit's
                vars(self).pop(name, None)
            self.tabular_ = self.input_shape is None and _ndim(X) <= 2
        return self._rows(X, reset) if self.tabular_ else self._images(X, reset)

    # -- the estimator --------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train a fresh model on ``X`` (``y`` is ignored) and return ``self``."""
        x = self._input(X, reset=True)
        seed = self._seed()
        config = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=seed,
                             noise=self.noise, device=self.device, threads=self.threads, progress=False).check()
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
            torch.manual_seed(seed)
            model = build_model(self.kind, x.shape[1:], net=self.net, net_options=self._net_options(math.prod(x.shape[1:])),
                                **self._options())
            self.history_ = fit(model, x, None, config)
        # rows: the trained network kept in float64, so that a row's code and score do not depend on
        # the rows batched with it (scikit-learn's subset invariance; a float32 matrix product differs
        # in the last bits between batch sizes); tabular networks are small
        self.model_ = model.double().eval() if self.tabular_ else model.eval()
        self.input_shape_ = tuple(x.shape[1:])
        if not self.tabular_ and _ndim(X) > 2:  # flat rows set it in validate_data
            self.n_features_in_ = math.prod(self.input_shape_)
        self.flat_input_ = _ndim(X) <= 2
        self._n_features_out = math.prod(model.code_shape)
        return self

    def _device(self):
        return next(self.model_.parameters()).device

    def _dtype(self):
        return next(self.model_.parameters()).dtype

    @torch.no_grad()
    def transform(self, X, batch_size: int = 1000) -> np.ndarray:
        """The codes of ``X``, (N, D) float32 (for the variational kind, the posterior mean)."""
        check_is_fitted(self, "model_")
        x = self._input(X, reset=False).to(self._dtype())
        codes = [self.model_.codes(x[i:i + batch_size].to(self._device())).cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(codes).float().numpy()

    @torch.no_grad()
    def inverse_transform(self, Z, batch_size: int = 1000) -> np.ndarray:
        """Decode codes (N, D) back to the layout ``fit`` was given (rows: in the units of ``X``)."""
        check_is_fitted(self, "model_")
        z = torch.from_numpy(check_array(Z, dtype=np.float32, input_name="Z")).to(self._dtype())
        code_shape = tuple(self.model_.code_shape)  # (D,) or a feature map (C', H', W')
        if z.shape[1] != math.prod(code_shape):
            raise DataError(f"expected codes of shape (N, {math.prod(code_shape)}), found {tuple(z.shape)}; "
                            "pass the output of transform")
        z = z.reshape((len(z),) + code_shape)
        x = torch.cat([self.model_.decode(z[i:i + batch_size].to(self._device())).cpu()
                       for i in range(0, len(z), batch_size)])
        if self.tabular_:
            rows = logit(x.reshape(len(x), -1).double().clamp(_UNSQUASH_EPS, 1 - _UNSQUASH_EPS).numpy())
            return (rows * self.scale_ + self.mean_).astype(np.float32)
        return (x.reshape(len(x), -1) if self.flat_input_ else x).float().numpy()

    @torch.no_grad()
    def score_samples(self, X, batch_size: int = 1000) -> np.ndarray:
        """Each sample's reconstruction PSNR in dB (rows: in the squashed space), (N,) float64:
        the lower, the worse the model reconstructs it (an anomaly score, as scikit-learn's
        outlier detectors' ``score_samples``)."""
        check_is_fitted(self, "model_")
        x = self._input(X, reset=False)
        if not self.tabular_:
            return psnr_per_image(x, apply_model(self.model_, x)).numpy()
        rows = x.double()
        x_hat = torch.cat([self.model_(rows[i:i + batch_size].to(self._device())).cpu()
                           for i in range(0, len(rows), batch_size)])
        return psnr_per_image(rows, x_hat).numpy()

    def score(self, X, y=None) -> float:
        """The mean reconstruction PSNR on ``X`` in dB (docs/protocols.md): greater is better."""
        return float(self.score_samples(X).mean())


def _undercomplete(kind: str) -> bool:
    return issubclass(MODELS.get(kind, object), UndercompleteAutoencoder)


def _ndim(X) -> int:
    """The number of axes of ``X`` (an array, a frame, a list of lists); 2 when it has no clear shape
    (scikit-learn's check then says what is wrong with it)."""
    ndim = getattr(X, "ndim", None)
    if ndim is None:
        try:
            ndim = np.asarray(X).ndim
        except (ValueError, TypeError):  # ragged nested lists, say
            ndim = 2
    return int(ndim)
