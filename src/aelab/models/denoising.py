"""Denoising autoencoder (Vincent et al. 2008, "Extracting and composing robust features
with denoising autoencoders"): corrupt the input, reconstruct the *clean* image.

L = mean (x - g(f(x_noisy)))^2, with x_noisy = clip(x + 0.2 * N(0, 1), 0, 1) by default,
as in the Keras tutorial. The trainer applies the corruption; this kind only sets its
default and the MSE loss.
"""

from __future__ import annotations

from .base import Autoencoder, register_model


@register_model("denoising")
class DenoisingAutoencoder(Autoencoder):
    default_noise = "gaussian:0.2"

    def __init__(self, input_shape, net="conv", net_options=None, reconstruction: str = "mse"):
        super().__init__(input_shape, net=net, net_options=net_options, reconstruction=reconstruction)
