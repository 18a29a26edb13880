"""Every kind as a scikit-learn estimator: ``fit`` trains, ``transform`` gives the codes,
``inverse_transform`` decodes them, ``score`` is the reconstruction PSNR, and
``get_params`` / ``set_params`` / ``clone`` work, so a kind drops into a ``Pipeline`` or
``GridSearchCV``::

    from sklearn.pipeline import make_pipeline
    from sklearn.neighbors import KNeighborsClassifier
    pipe = make_pipeline(AutoencoderEstimator("sparse", net="dense", epochs=5, penalty="kl"),
                         KNeighborsClassifier(5))
    pipe.fit(x_train, y_train).score(x_test, y_test)

Conventions (scikit-learn's): ``__init__`` only stores its arguments, ``fit``
returns ``self``, learned attributes end in ``_``, randomness comes from ``random_state``.
The kind's hyper-parameters (``penalty=``, ``beta=``, ...) are keyword arguments too, and
``get_params`` lists every one of the current kind's, so a grid can search them.

Input: images (N, C, H, W) or (N, H, W) in [0, 1], or flat rows (N, D) as scikit-learn
usually passes them, with ``input_shape=(C, H, W)`` (a square grey image is assumed when
D is a square number and ``input_shape`` is None). ``inverse_transform`` returns the
layout ``fit`` was given.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .data import check_images
from .errors import DataError
from .inference import apply_model
from .metrics import psnr
from .loop import fit
from .models import MODELS, build_model
from .settings import TrainConfig


def _kind_defaults(kind: str) -> dict:
    """{option: default} for the kind's hyper-parameters (empty for an unknown kind)."""
    cls = MODELS.get(kind)
    if cls is None:
        return {}
    defaults = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.name in cls.option_names() and p.name not in defaults:
                defaults[p.name] = p.default
    return defaults


class AutoencoderEstimator(TransformerMixin, BaseEstimator):
    """A kind of autoencoder (``kind``, on network ``net``) as a scikit-learn transformer.

    The training arguments mirror :class:`aelab.TrainConfig`; ``random_state`` is its seed
    (initial weights, batch order and noise). ``**options`` are the kind's hyper-parameters.
    """

    def __init__(self, kind: str = "undercomplete", net: str = "dense", net_options: dict | None = None,
                 epochs: int = TrainConfig.epochs, batch_size: int = 128, lr: float = TrainConfig.lr, noise: str | None = None,
                 input_shape: tuple | None = None, random_state: int = 0, device: str = "cpu",
                 threads: int | None = None, **options):
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
        for name, value in options.items():
            setattr(self, name, value)

    # -- parameters: the signature's plus the kind's options ------------------------------
    def get_params(self, deep: bool = True) -> dict:
        params = super().get_params(deep=deep)
        for name, default in _kind_defaults(self.kind).items():
            params[name] = getattr(self, name, default)
        return params

    def set_params(self, **params):
        if "kind" in params:  # a new kind: drop the old kind's options, accept the new one's in this call
            old = _kind_defaults(self.kind)
            self.kind = params.pop("kind")
            for name in set(old) - set(_kind_defaults(self.kind)):
                vars(self).pop(name, None)
        return super().set_params(**params)

    def _options(self) -> dict:
        """The kind's options set on this estimator, and any unknown ones (build_model rejects those)."""
        own = set(inspect.signature(type(self).__init__).parameters)
        return {name: value for name, value in vars(self).items()
                if name not in own and not name.endswith("_") and not name.startswith("_")}

    # -- data ---------------------------------------------------------------------------
    def _images(self, X, shape=None) -> torch.Tensor:
        x = X.detach().cpu() if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X))
        if x.ndim == 2:
            shape = shape or (tuple(self.input_shape) if self.input_shape is not None else None)
            if shape is None:
                side = math.isqrt(x.shape[1])
                if side * side != x.shape[1]:
                    raise DataError(f"expected rows of a square grey image or input_shape=(C, H, W), found {x.shape[1]} "
                                    "values per row; pass input_shape to AutoencoderEstimator")
                shape = (1, side, side)
            if math.prod(shape) != x.shape[1]:
                raise DataError(f"expected {math.prod(shape)} values per row for input_shape {tuple(shape)}, "
                                f"found {x.shape[1]}; fix input_shape")
            x = x.reshape((len(x),) + tuple(shape))
        elif x.ndim == 3:
            x = x[:, None]
        return check_images(x.float() if torch.is_floating_point(x) else x, "X")

    # -- the estimator --------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train a fresh model on ``X`` (``y`` is ignored) and return ``self``."""
        x = self._images(X)
        config = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.random_state,
                             noise=self.noise, device=self.device, threads=self.threads, progress=False).check()
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
            torch.manual_seed(self.random_state)
            model = build_model(self.kind, x.shape[1:], net=self.net, net_options=self.net_options, **self._options())
            self.history_ = fit(model, x, None, config)
        self.model_ = model.eval()
        self.input_shape_ = tuple(x.shape[1:])
        self.n_features_in_ = math.prod(self.input_shape_)
        self.flat_input_ = np.ndim(X) == 2
        return self

    def _device(self):
        return next(self.model_.parameters()).device

    @torch.no_grad()
    def transform(self, X, batch_size: int = 1000) -> np.ndarray:
        """The codes of ``X``, (N, D) float32 (for the variational kind, the posterior mean)."""
        check_is_fitted(self, "model_")
        x = self._images(X, self.input_shape_)
        if tuple(x.shape[1:]) != self.input_shape_:
            raise DataError(f"expected images of shape {self.input_shape_} as in fit, found {tuple(x.shape[1:])}")
        codes = [self.model_.codes(x[i:i + batch_size].to(self._device())).cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(codes).numpy()

    @torch.no_grad()
    def inverse_transform(self, Z, batch_size: int = 1000) -> np.ndarray:
        """Decode codes (N, D) back to images, in the layout ``fit`` was given."""
        check_is_fitted(self, "model_")
        z = torch.as_tensor(np.asarray(Z, dtype=np.float32))
        code_shape = tuple(self.model_.code_shape)  # (D,) or a feature map (C', H', W')
        if z.ndim != 2 or z.shape[1] != math.prod(code_shape):
            raise DataError(f"expected codes of shape (N, {math.prod(code_shape)}), found {tuple(z.shape)}; "
                            "pass the output of transform")
        z = z.reshape((len(z),) + code_shape)
        x = torch.cat([self.model_.decode(z[i:i + batch_size].to(self._device())).cpu()
                       for i in range(0, len(z), batch_size)])
        return (x.reshape(len(x), -1) if self.flat_input_ else x).numpy()

    def score(self, X, y=None) -> float:
        """The mean reconstruction PSNR on ``X`` in dB (docs/protocols.md): greater is better."""

        check_is_fitted(self, "model_")
        x = self._images(X, self.input_shape_)
        return psnr(x, apply_model(self.model_, x))
