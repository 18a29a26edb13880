import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aelab.metrics import psnr, psnr_per_image, ssim, ssim_per_image


def test_psnr_ssim_agree_with_skimage():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ours_p = psnr_per_image(x, y).numpy()
    ours_s = ssim_per_image(x, y).numpy()
    for i in range(len(x)):
        a, b = x[i, 0].numpy().astype(np.float64), y[i, 0].numpy().astype(np.float64)
        assert ours_p[i] == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1), abs=1e-6)
        assert ours_s[i] == pytest.approx(structural_similarity(a, b, data_range=1), abs=1e-6)
    assert psnr(x, y) == pytest.approx(float(np.mean(ours_p)))
    assert ssim(x, y) == pytest.approx(float(np.mean(ours_s)))


def test_ssim_colour_matches_skimage_channel_axis():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 20, 24, generator=g)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ours = ssim_per_image(x, y).numpy()
    for i in range(2):
        ref = structural_similarity(x[i].numpy().astype(np.float64), y[i].numpy().astype(np.float64),
                                    data_range=1, channel_axis=0)
        assert ours[i] == pytest.approx(ref, abs=1e-6)


def test_psnr_loss_is_minus_the_mean_per_image_psnr_and_trains_on_it():
    """--loss psnr: mean over images of 10 log10(MSE_i) = -mean PSNR_i (skimage's PSNR, peak 1),
    which weighs each image's error by its size: unlike the MSE, halving a small error pays
    as much as halving a large one."""
    from aelab.errors import ConfigError
    from aelab.losses import reconstruction_loss
    from aelab.models import build_model

    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 6, 6, generator=g, dtype=torch.float64)
    x_hat = (x + 0.1 * torch.randn(5, 1, 6, 6, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = -np.mean([peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=1.0) for a, b in zip(x, x_hat)])
    assert reconstruction_loss(x_hat, x, "psnr").item() == pytest.approx(ref, rel=1e-9)
    assert reconstruction_loss(x, x, "psnr").item() == pytest.approx(-100.0), "a perfect image: the floor, not -inf"
    x_hat[1] = x[1] + 10 * (x_hat[1] - x[1])  # image 1's error 10x image 0's; halve one or the other
    small, large = x_hat.clone(), x_hat.clone()
    small[0] = x[0] + (x_hat[0] - x[0]) / 2
    large[1] = x[1] + (x_hat[1] - x[1]) / 2
    assert reconstruction_loss(small, x, "psnr").item() == pytest.approx(reconstruction_loss(large, x, "psnr").item())
    assert reconstruction_loss(small, x, "mse") > reconstruction_loss(large, x, "mse")
    model = build_model("denoising", (1, 8, 8), net="dense", reconstruction="psnr")
    x8 = torch.rand(3, 1, 8, 8, generator=g)
    assert model.loss(x8, x8)["loss"].item() == pytest.approx(reconstruction_loss(model(x8), x8, "psnr").item())
    for kind, message in (("variational", "the variational kind needs a likelihood"),
                          ("codec", "the codec weighs a distortion against bits")):
        with pytest.raises(ConfigError, match=message):
            build_model(kind, (1, 8, 8), net="dense", reconstruction="psnr")
