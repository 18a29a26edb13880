import pytest
import torch

from aelab.errors import ConfigError
from aelab.nets import NETS, build_net, count_parameters


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 30, 22), (3, 32, 32), (1, 9, 13)])
@pytest.mark.parametrize("net", sorted(NETS))
def test_shapes_come_back(net, shape):
    pair = build_net(net, shape)
    x = torch.rand((2,) + shape)
    z = pair.encoder(x)
    assert tuple(z.shape[1:]) == pair.code_shape
    assert pair.decoder(z).shape == x.shape


def test_tutorial_network_exactly():
    pair = build_net("conv", (1, 28, 28))
    enc = [m for m in pair.encoder if isinstance(m, torch.nn.Conv2d)]
    dec = [m for m in pair.decoder if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding) for m in enc] == [
        (1, 16, (3, 3), (2, 2), (1, 1)), (16, 8, (3, 3), (2, 2), (1, 1))]
    assert [(type(m).__name__, m.in_channels, m.out_channels, m.stride) for m in dec] == [
        ("ConvTranspose2d", 8, 8, (2, 2)), ("ConvTranspose2d", 8, 16, (2, 2)), ("Conv2d", 16, 1, (1, 1))]
    assert isinstance(pair.decoder[-1], torch.nn.Sigmoid)
    assert pair.code_shape == (8, 7, 7)
    # Keras' summary of the tutorial's model: 160 + 1160 + 584 + 1168 + 145 parameters
    assert count_parameters(pair.encoder) + count_parameters(pair.decoder) == 3217


def test_latent_dim_and_errors():
    assert build_net("conv", (1, 28, 28), latent_dim=32).code_shape == (32,)
    assert build_net("dense", (3, 8, 8), hidden=(64, 32), latent_dim=4).code_shape == (4,)
    with pytest.raises(ConfigError, match="unknown network 'cnn'.*conv, dense"):
        build_net("cnn", (1, 28, 28))
    with pytest.raises(ConfigError, match="did you mean 'latent_dim'"):
        build_net("dense", (1, 28, 28), latent_dims=3)


def test_dense_decoder_mirrors_the_encoder_unless_told_otherwise():
    from torch import nn

    def widths(seq):
        return [(m.in_features, m.out_features) for m in seq if isinstance(m, nn.Linear)]

    mirrored = build_net("dense", (1, 8, 8), hidden=(64, 32), latent_dim=4)
    assert widths(mirrored.encoder) == [(64, 64), (64, 32), (32, 4)]
    assert widths(mirrored.decoder) == [(4, 32), (32, 64), (64, 64)]
    small = build_net("dense", (1, 8, 8), hidden=(64, 32), latent_dim=4, decoder_hidden=[16])
    assert widths(small.encoder) == widths(mirrored.encoder)
    assert widths(small.decoder) == [(4, 16), (16, 64)]
    assert small.decoder(torch.zeros(2, 4)).shape == (2, 1, 8, 8)
