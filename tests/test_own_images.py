"""The user's own colour images end to end (issue 28, item 5): a run trained on windows of a folder
of colour photos of mixed sizes works with evaluate, report, explore and denoise, each saying on
the page what it cannot show (the model saw windows: the page shows the centre windows)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from aelab import runs
from aelab.cli import main


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 8)):
        (root / "photos" / split).mkdir(parents=True)
        for i in range(n):
            h, w = (40 + 7 * i, 48 + 5 * i)
            ramp = np.linspace(0, 1, w)[None, :, None] * np.ones((h, 1, 3)) * np.array([1.0, 0.6, 0.3])
            a = np.clip(ramp + rng.normal(0, 0.05, (h, w, 3)), 0, 1)
            Image.fromarray((a * 255).astype(np.uint8), mode="RGB").save(root / "photos" / split / f"{i}.png")
    run = root / "run"
    assert main(["train", "--data", str(root / "photos"), "--crop", "24,24", "--crops-per-image", "3", "--net", "unet",
                 "--net-option", "widths=[4,8]", "--epochs", "1", "--batch-size", "8", "--out", str(run),
                 "--no-progress"]) == 0
    return root, run


def test_the_run_records_its_windows_and_validates_on_the_test_folder(photo_run):
    _, run = photo_run
    config = runs.read_config(run)
    assert config["model"]["input_shape"] == [3, 24, 24]
    assert config["train"]["crop"] == [24, 24] and config["train"]["crops_per_image"] == 3
    history = runs.load_history(run)
    assert len(history["val"]["loss"]) == 1  # validated on the test folder's centre windows
    assert "8 validation images" in history["quality"]["text"]


def test_evaluate_report_and_explore_work_on_it(photo_run, capsys):
    root, run = photo_run
    assert main(["evaluate", "--run", str(run), "--baselines", "gaussian,median", "--noise-factors", "0.1",
                 "--no-progress"]) == 0
    assert json.loads((run / "evaluation.json").read_text())
    assert main(["report", "--run", str(run)]) == 0
    assert (run / "report.html").stat().st_size > 0
    assert main(["explore", "--run", str(run)]) == 0
    page = (run / "explore.html").read_text()
    assert "trained on 24x24 windows of larger images" in page


def test_denoise_cleans_the_whole_photos_at_their_own_size(photo_run):
    root, run = photo_run
    photo = root / "photos" / "test" / "7.png"
    assert main(["denoise", "--run", str(run), str(photo), "--out", str(root / "clean")]) == 0
    with Image.open(root / "clean" / "7.denoised.png") as im, Image.open(photo) as original:
        assert (im.size, im.mode) == (original.size, "RGB")


def test_the_photo_profile_measures_psnr_as_scikit_image_does(tmp_path):
    import torch
    from skimage.metrics import peak_signal_noise_ratio

    from aelab import photos, zoo
    from aelab.inference import clean
    from aelab.models import build_model

    torch.manual_seed(0)
    run = runs.save_model(build_model("denoising", (3, 32, 32), net="unet", net_options={"widths": [4, 8]}),
                          tmp_path / "tiny")
    card = {"profile": "photo-denoiser", "settings": {"sigmas": [15, 50], "grey": False}}
    measured = zoo.measure(run, card)
    assert set(measured) == {"psnr@15", "psnr@50"}
    model = runs.load_model(run)
    ref = []
    for name in photos.TEST:
        c, noisy = photos.noisy_photo(name, 50)
        assert c.shape[0] == 3 or name in ("camera", "moon")
        out = clean(model, torch.from_numpy(noisy)[None])[0].numpy()
        ref.append(peak_signal_noise_ratio(c, np.clip(out, 0, 1), data_range=1.0))
    assert abs(measured["psnr@50"] - np.mean(ref)) < 1e-3
    assert zoo.measure(run, card, quick=True).keys() == measured.keys()  # the same figures on two photos
    # the same draw every time, another for another sigma
    assert np.array_equal(photos.noisy_photo("moon", 25)[1], photos.noisy_photo("moon", 25)[1])
    assert not np.array_equal(photos.noisy_photo("moon", 25)[1], photos.noisy_photo("moon", 15)[1])
