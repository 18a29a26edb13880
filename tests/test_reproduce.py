import json

import pytest

from aelab.cli import main

FILES = ["figures/samples.png", "figures/noisy_samples.png", "figures/denoised.png", "figures/history.png",
         "metrics.json", "config.json", "model.safetensors", "history.json", "report.html"]


def test_reproduce_on_fake_data(fake_fashion, tmp_path):
    out = tmp_path / "r"
    assert main(["reproduce", "--data", str(fake_fashion), "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    for f in FILES:
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["denoising"]) == {"0.1", "0.2", "0.3", "0.5"}
    assert m["model"]["parameters"] == 3217
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert (cfg["batch_size"], cfg["schedule"]) == (32, "constant")


def test_reproduce_fast_preset_and_overrides(fake_fashion, tmp_path):
    out = tmp_path / "fast"
    assert main(["reproduce", "--fast", "--epochs", "1", "--data", str(fake_fashion), "--out", str(out),
                 "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert (cfg["epochs"], cfg["batch_size"], cfg["lr"], cfg["schedule"]) == (1, 64, 1e-2, "onecycle")


@pytest.mark.slow
def test_reproduce_short_real_run(real_data, tmp_path):
    """A thousand real images, one epoch: every file is written and the model cleans.

    (At the tutorial's batch 32 one epoch of 1,000 images is 32 steps, too few to learn; batch 4
    gives 250 steps, enough for ~18 dB.)"""
    out = tmp_path / "r"
    assert main(["reproduce", "--data", str(real_data), "--epochs", "1", "--limit", "1000", "--batch-size", "4",
                 "--lr", "2e-3", "--out", str(out), "--no-progress"]) == 0
    for f in FILES:
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    at = m["denoising"]["0.2"]
    assert at["model"]["psnr"] > at["noisy"]["psnr"] + 1.0
    assert m["data"]["train"] == 1000 and m["timing"]["seconds_per_epoch"] > 0
    html = (out / "report.html").read_text()
    assert "<img" in html and "noise factor" in html
