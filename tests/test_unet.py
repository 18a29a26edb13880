"""The U-Net denoiser (nets.unet): any input size, the residual output starts as the
identity and stays in [0, 1], its gradient passes the clamp, the denoising kind trains on
it, and `aelab train --net unet` / `aelab denoise` use it."""

import numpy as np
import pytest
import torch

from aelab import runs
from aelab.cli import main
from aelab.errors import ConfigError
from aelab.models import build_model
from aelab.nets import build_net, count_parameters
from aelab.train import TrainConfig, fit


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 9, 13), (3, 30, 22)])
@pytest.mark.parametrize("widths", [(8, 16, 32), (8,), (4, 8, 16, 32)])
def test_any_size_and_depth(shape, widths):
    pair = build_net("unet", shape, widths=widths)
    x = torch.rand((2,) + shape)
    z = pair.encoder(x)
    assert tuple(z.shape[1:]) == pair.code_shape
    assert pair.decoder(z).shape == x.shape


def test_residual_starts_as_the_identity_and_stays_in_range():
    torch.manual_seed(0)
    pair = build_net("unet", (1, 28, 28))
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(pair.decoder(pair.encoder(x)), x), "zero-initialised head: x_hat = x_noisy"
    with torch.no_grad():
        pair.decoder.head.bias.fill_(-0.7)  # predict noise -0.7: x + 0.7 leaves the range
    out = pair.decoder(pair.encoder(x))
    assert float(out.detach().min()) >= 0 and float(out.detach().max()) == 1.0
    plain = build_net("unet", (1, 28, 28), residual=False)
    y = plain.decoder(plain.encoder(x)).detach()
    assert 0 < float(y.min()) and float(y.max()) < 1  # sigmoid output


def test_the_gradient_passes_the_clamp():
    """Straight-through clamp: a pixel pushed past 1 still gets the gradient that brings it back."""
    pair = build_net("unet", (1, 8, 8), widths=(4, 8))
    with torch.no_grad():
        pair.decoder.head.bias.fill_(-2.0)  # every output clamped at 1
    x = torch.rand(1, 1, 8, 8)
    out = pair.decoder(pair.encoder(x))
    assert torch.all(out == 1)
    ((out - 0.5) ** 2).sum().backward()
    assert float(pair.decoder.head.bias.grad) < 0  # descent raises the predicted noise: the output comes down


def test_options_and_errors():
    small = build_net("unet", (1, 28, 28), widths=(8, 16))
    big = build_net("unet", (1, 28, 28))
    assert count_parameters(small.encoder) + count_parameters(small.decoder) < \
        count_parameters(big.encoder) + count_parameters(big.decoder)
    assert big.code_shape == (1 * 16 + 32 * 16 + 64 * 4 + 128, 7, 7)
    with pytest.raises(ConfigError, match="unet network has no latent_dim"):
        build_net("unet", (1, 28, 28), latent_dim=32)
    with pytest.raises(ConfigError, match="widths"):
        build_net("unet", (1, 28, 28), widths=[])


def test_denoising_kind_trains_and_saves(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(96, 1, 16, 16)
    for i in range(96):  # bright squares on black, like Fashion-MNIST's background
        a, b = torch.randint(0, 8, (2,), generator=g).tolist()
        x[i, 0, a:a + 7, b:b + 7] = 0.8
    torch.manual_seed(0)
    model = build_model("denoising", (1, 16, 16), net="unet", net_options={"widths": [8, 16]})
    hist = fit(model, x[:64], x[64:], TrainConfig(epochs=6, batch_size=8, lr=3e-3, noise="gaussian:0-0.5",
                                                  progress=False))
    val = hist["val"]["reconstruction"]
    assert val[-1] < 0.7 * val[0], val
    runs.save_model(model, tmp_path)
    again = runs.load_model(tmp_path)
    model.eval()
    assert torch.equal(model(x[:4]), again(x[:4]))


def test_train_and_denoise_from_the_command_line(tmp_path, fake_fashion):
    out = tmp_path / "unet"
    assert main(["train", "--net", "unet", "--net-option", "widths=[4,8]", "--noise", "gaussian:0-0.5",
                 "--data", str(fake_fashion), "--epochs", "1", "--batch-size", "16", "--out", str(out),
                 "--no-progress"]) == 0
    assert runs.read_config(out)["model"]["net"] == "unet"
    x = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "noisy.npz", x=x)
    assert main(["denoise", "--run", str(out), str(tmp_path / "noisy.npz"), "--out", str(tmp_path / "clean")]) == 0
    assert np.load(tmp_path / "clean" / "denoised.npz")["x"].shape == (3, 1, 28, 28)
