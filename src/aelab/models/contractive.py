"""Contractive autoencoder (Rifai, Vincent, Muller, Glorot & Bengio 2011, "Contractive
auto-encoders: explicit invariance during feature extraction", eq. 7)::

    L = mean_pixels |x - x_hat| + lambda * mean_batch ||J_f(x)||_F^2,   J_f(x) = dh / dx

the squared Frobenius norm of the encoder's Jacobian (code units x input values) at each
input, which makes the code insensitive to small moves of the input. Three ways to compute
it (``jacobian=``):

- ``"closed_form"``: a one-layer sigmoid encoder h = sigmoid(W x + b) (the paper's setting,
  ``--net dense --net-option hidden=[] --net-option code_activation=sigmoid``) has
  ||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2  (Rifai et al. eq. 8); exact and cheap;
- ``"autograd"``: the exact Jacobian by one batched backward pass per code unit (D passes),
  affordable for small codes;
- ``"projection"``: the unbiased estimate E_v ||v^T J||^2 = ||J||_F^2 for v ~ N(0, I_D),
  averaged over ``projections`` draws of v, one backward pass each (Hutchinson 1989's trick
  applied to J J^T), for deep and convolutional encoders;
- ``"auto"`` (default): closed_form when the encoder has that form, else projection.

The "contractive" term logged is the (estimated) mean ||J||_F^2, unweighted. Whatever trained
it, the figure to report is the exact norm on test images: :func:`jacobian_frobenius_sq`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..losses import reconstruction_loss
from .base import Autoencoder, register_model

JACOBIAN_METHODS = ("auto", "closed_form", "autograd", "projection")


def one_layer_sigmoid(encoder: nn.Module) -> nn.Linear | None:
    """The Linear layer of an encoder that is exactly [Flatten,] Linear, Sigmoid; else None."""
    layers = [m for m in encoder.children() if not isinstance(m, nn.Flatten)] if isinstance(encoder, nn.Sequential) else []
    if len(layers) == 2 and isinstance(layers[0], nn.Linear) and isinstance(layers[1], nn.Sigmoid):
        return layers[0]
    return None


def closed_form_sq(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """||J||_F^2 per input for h = sigmoid(W x + b): sum_j (h_j (1 - h_j))^2 sum_i W_ji^2. h: (N, D)."""
    return ((h * (1 - h)) ** 2 * (weight ** 2).sum(1)).sum(1)  # (N,)


def autograd_sq(h: torch.Tensor, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """Exact ||dh/dx||_F^2 per input, one batched backward pass per code unit.

    ``h`` (N, D) must be computed from ``x`` (which requires grad) image by image, with no
    mixing across the batch, so that row j of each image's Jacobian is the gradient of
    sum_n h[n, j] with respect to x[n].
    """
    n, d = h.shape
    basis = torch.eye(d, dtype=h.dtype, device=h.device).unsqueeze(1).expand(d, n, d)  # (D, N, D)
    rows, = torch.autograd.grad(h, x, grad_outputs=basis, is_grads_batched=True, create_graph=create_graph)
    return rows.pow(2).flatten(2).sum(2).sum(0)  # (D, N, ...) -> (N,)


def projection_sq(h: torch.Tensor, x: torch.Tensor, projections: int = 1, create_graph: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Unbiased estimate of ||dh/dx||_F^2 per input: mean over draws v ~ N(0, I_D) of ||v^T J||^2."""
    v = torch.randn((projections,) + tuple(h.shape), generator=generator, dtype=h.dtype,
                    device="cpu" if generator is None else generator.device).to(h.device)  # (P, N, D)
    vjp, = torch.autograd.grad(h, x, grad_outputs=v, is_grads_batched=True, create_graph=create_graph)
    return vjp.pow(2).flatten(2).sum(2).mean(0)  # (P, N, ...) -> (N,)


def jacobian_frobenius_sq(encode, x: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """The exact ||J_f(x)||_F^2 of ``encode`` (x -> codes) for each image of ``x``, on the CPU.

    Any encoder works (autograd, D backward passes per batch); for reporting, not training.
    """
    out = []
    with torch.enable_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].detach().clone().requires_grad_(True)
            h = encode(xb).flatten(1)
            out.append(autograd_sq(h, xb).detach().cpu())
    return torch.cat(out)


# method -> (model, codes (N, D), input x, create_graph) -> ||J||_F^2 per image (N,)
_PENALTY = {
    "closed_form": lambda m, h, x, cg: closed_form_sq(h, one_layer_sigmoid(m.encoder).weight),
    "autograd": lambda m, h, x, cg: autograd_sq(h, x, create_graph=cg),
    "projection": lambda m, h, x, cg: projection_sq(h, x, m.projections, create_graph=cg),
}


@register_model("contractive")
class ContractiveAutoencoder(Autoencoder):
    """Reconstruction plus lambda * ||J_f(x)||_F^2; see the module docstring."""

    net_defaults = {"latent_dim": 32, "code_activation": "none"}

    def __init__(self, input_shape, net="conv", net_options=None, reconstruction: str = "l1",
                 contractive_weight: float = 1e-3,  # lambda; with L1 reconstruction it divides ||J||_F by ~5
                 jacobian: str = "auto",            # auto, closed_form, autograd or projection
                 projections: int = 1):             # draws of v per image for the projection estimate
        super().__init__(input_shape, net=net, net_options=net_options, reconstruction=reconstruction)
        if jacobian not in JACOBIAN_METHODS:
            raise ConfigError(f"expected jacobian one of {', '.join(JACOBIAN_METHODS)}, found {jacobian!r}")
        if jacobian == "closed_form" and one_layer_sigmoid(self.encoder) is None:
            raise ConfigError("jacobian=closed_form needs a one-layer sigmoid encoder, found a deeper one; use "
                              "--net dense --net-option hidden=[] --net-option code_activation=sigmoid, "
                              "or jacobian=autograd / projection")
        if not contractive_weight >= 0:
            raise ConfigError(f"expected contractive_weight >= 0, found {contractive_weight}")
        if int(projections) < 1:
            raise ConfigError(f"expected projections >= 1, found {projections}")
        self.contractive_weight = float(contractive_weight)
        self.jacobian = jacobian
        self.projections = int(projections)

    @property
    def jacobian_method(self) -> str:
        """The method ``jacobian="auto"`` resolves to for this encoder."""
        if self.jacobian != "auto":
            return self.jacobian
        return "closed_form" if one_layer_sigmoid(self.encoder) is not None else "projection"

    def loss(self, x_in, x_target):
        method = self.jacobian_method
        create_graph = torch.is_grad_enabled()  # training: differentiate through the penalty
        with torch.enable_grad():               # validation runs under no_grad; the penalty needs grad
            x = x_in.detach().requires_grad_(method != "closed_form")
            h = self.encode(x)
            flat = h.flatten(1)  # (N, D)
            norm_sq = _PENALTY[method](self, flat, x, create_graph)  # (N,)
        x_hat = self.decode(h if create_graph else h.detach())
        rec = reconstruction_loss(x_hat, x_target, self.reconstruction)
        contractive = norm_sq.mean()
        if not create_graph:
            contractive = contractive.detach()
        return {"reconstruction": rec, "contractive": contractive, "loss": rec + self.contractive_weight * contractive}
