"""The user's own images at any size (issue 28, items 1 and 2): a fully convolutional model (the
tutorial's conv net, the U-Net) takes any H x W and grey or RGB, from Python and through the
command line, for runs and zoo models; an image too big for the memory budget is cleaned in
overlapping tiles whose output equals the whole image's; a model with a dense layer refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aelab import runs, tiling
from aelab.cli import main
from aelab.errors import DataError
from aelab.inference import clean
from aelab.models import build_model

from test_errors import cli_error


def _save(tmp_path, name, shape, net, **net_options):
    torch.manual_seed(0)
    model = build_model("denoising", shape, net=net, net_options=net_options)
    return runs.save_model(model, tmp_path / name)


def _photo(path, height, width, colour=True, seed=0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :] * np.ones((height, 1))
    grey = np.clip(ramp + rng.normal(0, 20, (height, width)), 0, 255).astype(np.uint8)
    if colour:
        Image.fromarray(np.stack([grey, grey[::-1], 255 - grey], -1), mode="RGB").save(path)
    else:
        Image.fromarray(grey, mode="L").save(path)
    return path


@pytest.mark.parametrize("net, options", [("conv", {}), ("unet", {"widths": [4, 8, 16]})])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["grey28", "rgb32"])
def test_a_fully_convolutional_model_takes_any_size(net, options, shape):
    torch.manual_seed(0)
    model = build_model("denoising", shape, net=net, net_options=options).eval()
    assert model.any_size
    for h, w in ((1, 1), (17, 33), (64, 45), (28, 28)):
        x = torch.rand(2, shape[0], h, w)
        assert model(x).shape == x.shape
        assert clean(model, x).shape == x.shape
    other = 3 if shape[0] == 1 else 1  # grey <-> RGB through clean
    assert clean(model, torch.rand(1, other, 40, 50)).shape == (1, other, 40, 50)


def test_the_built_size_is_unchanged_for_the_unet():
    """The code of the built size decodes to the built size (decode alone, as the explorer's sliders use it)."""
    model = build_model("denoising", (1, 30, 30), net="unet")  # padded to 32 inside
    z = model.encode(torch.rand(2, 1, 30, 30))
    assert model.decode(z).shape == (2, 1, 30, 30)
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 1, 64, 64)  # a multiple of 4 that is not the built size


def test_a_model_with_a_dense_layer_refuses_another_size():
    for net, options in (("dense", {}), ("conv", {"latent_dim": 16})):
        model = build_model("denoising", (1, 28, 28), net=net, net_options=options)
        assert not model.any_size
        with pytest.raises(DataError, match=f"expected 28x28 images for this {net} model, found 40x40"):
            clean(model, torch.rand(1, 1, 40, 40))


def test_the_unet_cleans_a_512_rgb_and_a_1000x700_grey_photo_through_the_command_line(tmp_path, capsys):
    run = _save(tmp_path, "unet", (1, 28, 28), "unet", widths=[4, 8, 16])
    rgb = _photo(tmp_path / "rgb.png", 512, 512)
    grey = _photo(tmp_path / "grey.png", 700, 1000, colour=False)
    out = tmp_path / "cleaned"
    assert main(["denoise", "--run", str(run), str(rgb), str(grey), "--out", str(out)]) == 0
    with Image.open(out / "rgb.denoised.png") as im:
        assert (im.size, im.mode) == ((512, 512), "RGB")
    with Image.open(out / "grey.denoised.png") as im:
        assert (im.size, im.mode) == ((1000, 700), "L")


def test_a_unet_trained_on_32x32_colour_crops_cleans_a_512x512_photo(tmp_path):
    run = _save(tmp_path, "crops", (3, 32, 32), "unet", widths=[4, 8])
    photo = _photo(tmp_path / "photo.png", 512, 512)
    assert main(["denoise", "--run", str(run), str(photo), "--out", str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "out" / "photo.denoised.png") as im:
        assert (im.size, im.mode) == ((512, 512), "RGB")


def test_the_zoo_unet_cleans_a_photo_through_the_command_line(tmp_path):
    photo = _photo(tmp_path / "photo.jpg", 96, 128)
    assert main(["denoise", "--run", "zoo:denoiser-unet", str(photo), "--out", str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "out" / "photo.denoised.png") as im:
        assert (im.size, im.mode) == ((128, 96), "RGB")


def test_explore_and_evaluate_paths_take_another_size_from_python():
    from aelab.inference import apply_model, model_codes

    model = runs.load_model("zoo:denoiser-tutorial")
    x = torch.rand(3, 1, 36, 44)
    assert apply_model(model, x).shape == x.shape
    assert model_codes(model, x).shape == (3, 8 * 9 * 11)


# -- tiles ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["zoo:denoiser-tutorial", "zoo:denoiser-unet"])
def test_tiled_output_equals_the_whole_image(name):
    model = runs.load_model(name)
    torch.manual_seed(1)
    x = (torch.rand(1, 1, 157, 131) * 0.4 + torch.linspace(0, 0.6, 131)).clamp(0, 1)
    whole = clean(model, x)
    budget = int(tiling.bytes_per_pixel(model) * 90 * 90)  # a window of about 90x90: many tiles
    core = tiling.core_size(model, budget)
    assert core < 90 and len(tiling.spans(157, core, tiling.margin(model))) >= 2
    tiled = clean(model, x, budget_bytes=budget)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max().item() <= 1e-5


def test_tiles_start_on_the_stride_and_cover_the_image_once():
    for size, core, pad in ((157, 40, 40), (28, 96, 12), (1, 4, 8), (64, 32, 8)):
        spans = tiling.spans(size, core, pad)
        covered = np.zeros(size, int)
        for w0, w1, c0, c1 in spans:
            assert 0 <= w0 <= c0 < c1 <= w1 <= size and c0 % core == 0
            assert c0 - w0 in (pad, c0) and w1 - c1 in (pad, size - c1)  # a full margin, or the image's edge
            covered[c0:c1] += 1
        assert (covered == 1).all()


def test_the_receptive_field_a_net_states_is_an_upper_bound():
    torch.manual_seed(0)
    for net, options in (("conv", {}), ("unet", {"residual": False}), ("unet", {"widths": [8, 16, 32, 64],
                                                                              "residual": False})):
        model = build_model("denoising", (1, 28, 28), net=net, net_options=options).eval()
        x = torch.rand(1, 1, 200, 200, requires_grad=True)
        model(x)[0, 0, 100, 100].backward()
        reached = (x.grad[0, 0].abs() > 0).nonzero()
        assert (reached - 100).abs().max().item() <= model.field
