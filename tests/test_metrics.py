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
