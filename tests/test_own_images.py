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
