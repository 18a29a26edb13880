"""The model contract and the registry of kinds.

An autoencoder is a network (an encoder/decoder pair from :mod:`aelab.nets`) plus a kind:
the objective, i.e. the terms of its loss. A kind is one subclass registered with
:func:`register_model`; it overrides :meth:`Autoencoder.loss` (and whatever else its
formula needs) and nothing else anywhere has to know about it.

Contract: ``encode`` (N, C, H, W) -> codes, ``decode`` codes -> (N, C, H, W)
in [0, 1], ``forward`` = decode(encode(x)), ``loss(x_in, x_target)`` -> a dict of named
terms plus ``"loss"``, their weighted sum, which the trainer minimises and logs.
"""

from __future__ import annotations

import difflib
import inspect
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..losses import RECONSTRUCTION_LOSSES, reconstruction_loss
from ..nets import build_net
from ..registry import registrar

MODELS: dict[str, type["Autoencoder"]] = {}
_STRUCTURAL = ("input_shape", "net", "net_options")


register_model = registrar(MODELS, "kind")  # @register_model(name): a kind for the CLI, loading and tests


class Autoencoder(nn.Module):
    """A plain autoencoder: reconstruction loss only (``reconstruction`` = l1, mse or bce)."""

    kind: ClassVar[str] = "autoencoder"
    default_noise: ClassVar[str] = "none"        # corruption used in training unless told otherwise
    net_defaults: ClassVar[dict] = {}            # options a kind needs from its network
    sized: ClassVar[bool] = False                # the kind itself needs its built size (a prior over a grid)

    def __init__(self, input_shape, net: str = "conv", net_options: dict | None = None,
                 reconstruction: str = "l1"):
        super().__init__()
        if reconstruction not in RECONSTRUCTION_LOSSES:
            raise ConfigError(f"unknown reconstruction loss {reconstruction!r}; expected one of "
                              f"{', '.join(RECONSTRUCTION_LOSSES)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.net = net
        self.net_options = dict(net_options or {})
        self.reconstruction = reconstruction
        pair = build_net(net, self.input_shape, **{**self.net_defaults, **self.net_options})
        self.encoder, self.decoder = pair.encoder, pair.decoder
        self.code_shape = pair.code_shape
        self.any_size = pair.any_size and not self.sized  # takes any H, W of its channels (fully convolutional)
        self.field, self.align = pair.field, pair.align     # what tiles need (aelab.tiling)

    # -- the contract ------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = self.decode(self.encode(x))
        if x_hat.shape[-2:] != x.shape[-2:]:  # a fully convolutional net's rows past another size: cropped back
            x_hat = x_hat[..., :x.shape[-2], :x.shape[-1]]
        return x_hat

    def loss(self, x_in: torch.Tensor, x_target: torch.Tensor) -> dict[str, torch.Tensor]:
        x_hat = self(x_in)
        rec = reconstruction_loss(x_hat, x_target, self.reconstruction)
        return {"reconstruction": rec, "loss": rec}

    # -- helpers -----------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Type, dtype and shape of a batch (cheap checks only: no pass over the values)."""
        if not isinstance(x, torch.Tensor):
            raise DataError(f"expected images as a torch.Tensor, found {type(x).__name__}; "
                            "use torch.from_numpy(x) or aelab.check_images(x)")
        c, h, w = self.input_shape
        if self.any_size:  # any H, W of its channels
            if x.ndim != 4 or x.shape[1] != c or min(x.shape[2:]) < 1:
                raise DataError(f"expected images of shape (N, {c}, H, W) for this model, found {tuple(x.shape)}"
                                + ("; it looks channels last, use x.permute(0, 3, 1, 2)"
                                   if x.ndim == 4 and x.shape[-1] == c else ""))
        elif x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            hint = ("; it looks channels last, use x.permute(0, 3, 1, 2)"
                    if x.ndim == 4 and tuple(x.shape[1:]) == (h, w, c) else
                    "; resize the images or train a model for this shape")
            raise DataError(f"expected images of shape (N, {', '.join(map(str, self.input_shape))}) for this "
                            f"model, found {tuple(x.shape)}{hint}")
        if not torch.is_floating_point(x):
            raise DataError(f"expected images as floats in [0, 1], found dtype {str(x.dtype).replace('torch.', '')}; "
                            "scale 8-bit images with x.float() / 255")

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Codes flattened to (N, D) (docs/protocols.md); a VAE overrides this with its posterior mean."""
        return self.encode(x).flatten(1)

    # buffers a kind derives from its weights (finalise), whose size the saved file decides
    # and which an older file may lack; runs.load_weights does not hold them to the config's shapes
    derived_keys: ClassVar[tuple[str, ...]] = ()

    def finalise(self) -> None:
        """Called once when training ends, before the weights are saved: a kind that derives
        fixed data from its weights (the codec's integer coding tables) computes it here."""

    def adapt_initial_state(self, state: dict) -> dict:
        """Another run's weights, made to fit this model before ``train(init=...)`` loads them
        (a kind whose options reshape some weights overrides this); by default unchanged."""
        return state

    @classmethod
    def option_names(cls) -> list[str]:
        names = []
        for klass in cls.__mro__:
            if klass is nn.Module or not issubclass(klass, Autoencoder):
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name not in ("self", *_STRUCTURAL) and p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in names:
                    names.append(p.name)
        return names

    def options(self) -> dict:
        """The kind's hyper-parameters, enough to rebuild it with :func:`build_model`."""
        return {name: getattr(self, name) for name in self.option_names()}

    def config(self) -> dict:
        return {"kind": self.kind, "net": self.net, "input_shape": list(self.input_shape),
                "net_options": self.net_options, "options": self.options()}


def build_model(kind: str, input_shape, net: str = "conv", net_options: dict | None = None,
                **options) -> Autoencoder:
    """Build the autoencoder of kind ``kind`` on network ``net`` for ``input_shape`` (C, H, W)."""
    if kind not in MODELS:
        raise ConfigError(f"unknown kind {kind!r}; expected one of {', '.join(sorted(MODELS))}")
    cls = MODELS[kind]
    valid = cls.option_names()
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid options: {', '.join(valid) or 'none'}"
            raise ConfigError(f"kind {kind!r} has no option {key!r}; {hint}")
    return cls(input_shape, net=net, net_options=net_options, **options)
