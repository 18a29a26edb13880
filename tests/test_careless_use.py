"""Careless and hostile use, round two: denoise keeps each photo's size and colour, --resume
keeps the run's plan, a run is never trained over silently nor written by two processes, a
training that learned nothing says so, and a log file gets one line per epoch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from aelab import runlock, runs
from aelab.cli import main
from aelab.errors import AelabWarning


def _train(fake_fashion, out, *extra):
    argv = ["train", "--data", str(fake_fashion), "--epochs", "1", "--batch-size", "16", "--out", str(out),
            "--no-progress", *extra]
    assert main(argv) == 0


def _last_error(capsys):
    err = capsys.readouterr().err.strip()
    line = err.splitlines()[-1]
    assert line.startswith("aelab: error: "), err
    return line


# -- item 4: denoise at each image's own size and colour --------------------------------------

def test_denoise_keeps_each_images_size_and_colour(fake_fashion, tmp_path, capsys):
    run = tmp_path / "conv"
    _train(fake_fashion, run)
    capsys.readouterr()  # the training's own lines
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64), dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8), mode="RGB").save(tmp_path / "colour.jpg")
    Image.fromarray(rng.integers(0, 256, (27, 30), dtype=np.uint8), mode="L").save(tmp_path / "odd.png")  # padded
    out = tmp_path / "clean"
    assert main(["denoise", "--run", str(run), str(tmp_path / "grey.png"), str(tmp_path / "colour.jpg"),
                 str(tmp_path / "odd.png"), "--out", str(out)]) == 0
    for name, size, mode in (("grey", (64, 48), "L"), ("colour", (40, 32), "RGB"), ("odd", (30, 27), "L")):
        with Image.open(out / f"{name}.denoised.png") as im:
            assert (im.size, im.mode) == (size, mode), name
    with Image.open(out / "colour.denoised.png") as im:
        rgb = np.asarray(im).astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() > 0  # each channel cleaned on its own: still colour
    assert "warning" not in capsys.readouterr().err


def test_denoise_with_a_dense_model_refuses_another_size(fake_fashion, tmp_path, capsys):
    run = tmp_path / "dense"
    _train(fake_fashion, run, "--net", "dense")
    Image.fromarray(np.zeros((256, 256), np.uint8), mode="L").save(tmp_path / "photo.png")
    assert main(["denoise", "--run", str(run), str(tmp_path / "photo.png"), "--out", str(tmp_path / "d")]) == 2
    line = _last_error(capsys)
    assert "expected 28x28 images for this dense model, found 256x256; resize them first" in line
    assert "convolutional model" in line
    assert not (tmp_path / "d").exists()


# -- item 5: --resume keeps the plan -------------------------------------------------------------

def test_resume_keeps_the_runs_own_plan(fake_fashion, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    _train(fake_fashion, run, "--lr", "0.004", "--schedule", "onecycle", "--seed", "3")
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    saved = runs.read_config(run)["train"]
    assert (saved["epochs"], saved["batch_size"], saved["lr"], saved["schedule"], saved["seed"]) == (
        1, 16, 0.004, "onecycle", 3)
    assert len(runs.load_history(run)["train"]["loss"]) == 1  # not the default 10
    assert main(["train", "--resume", "--epochs", "2", "--out", str(run), "--no-progress"]) == 0  # told otherwise
    assert len(runs.load_history(run)["train"]["loss"]) == 2 and runs.read_config(run)["train"]["batch_size"] == 16

    # the interrupt names the exact command that resumes (which now keeps the plan)
    import aelab.loop

    class Hit(aelab.loop._Interrupt):
        hit = True

        def __init__(self):
            self._old = {}

    monkeypatch.setattr(aelab.loop, "_Interrupt", Hit)
    stopped = tmp_path / "stopped run"
    assert main(["train", "--data", str(fake_fashion), "--epochs", "3", "--out", str(stopped), "--no-progress"]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"resume with `aelab train --resume --out '{stopped}'`"), last


# -- item 6: no silent overwrite, one writer at a time --------------------------------------------

def test_training_into_an_existing_run_is_refused_unless_resume_or_overwrite(fake_fashion, tmp_path, capsys):
    run = tmp_path / "run"
    _train(fake_fashion, run)
    (run / "evaluation.json").write_text("{}")
    (run / "figures").mkdir()
    (run / "figures" / "old.png").write_bytes(b"old")
    (run / "report.html").write_text("old")
    (run / "notes.txt").write_text("mine")
    before = (run / "config.json").read_text()
    assert main(["train", "--kind", "undercomplete", "--data", str(fake_fashion), "--epochs", "1",
                 "--out", str(run), "--no-progress"]) == 2
    line = _last_error(capsys)
    assert f"found a trained run in {run}" in line and "--resume" in line and "--overwrite" in line
    assert (run / "config.json").read_text() == before and (run / "evaluation.json").exists()
    _train(fake_fashion, run, "--kind", "undercomplete", "--overwrite")
    assert runs.read_config(run)["model"]["kind"] == "undercomplete"
    assert not (run / "evaluation.json").exists() and not (run / "report.html").exists()
    # only aelab's own files go: the user's notes and a figure of their own in figures/ stay (round three)
    assert (run / "notes.txt").read_text() == "mine" and (run / "figures" / "old.png").read_bytes() == b"old"
    # reproduce follows the same rule, before any work
    assert main(["reproduce", "--data", str(fake_fashion), "--epochs", "1", "--out", str(run)]) == 2
    assert "found a trained run" in _last_error(capsys)
    assert sorted(p.name for p in (run / "figures").iterdir()) == ["old.png"]


def test_a_run_being_written_is_locked(fake_fashion, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.mkdir()
        (run / runlock.LOCK).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                                    "command": "aelab train --out x", "since": "2024-01-01 23:40:00"}))
        assert main(["train", "--data", str(fake_fashion), "--out", str(run), "--no-progress"]) == 2
        line = _last_error(capsys)
        host = os.uname().nodename
        assert line == (f"aelab: error: {run} is being written by process {holder.pid} (aelab train --out x) on host "
                        f"{host} since 2024-01-01 23:40:00 (lock file {run / runlock.LOCK}); wait for it or use "
                        "another --out (if that pid is no longer aelab's, pass --break-lock or remove the lock file)")
        assert not (run / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead: its lock is stale and taken over; released at the end
    _train(fake_fashion, run)
    assert not (run / runlock.LOCK).exists()


# -- item 7: a training that learned nothing says so ----------------------------------------------

def test_training_ends_with_a_quality_line_and_warns_when_worse(fake_fashion, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(fake_fashion), "--epochs", "1", "--lr", "1e-6", "--out", str(run)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    quality = [line for line in err.splitlines() if line.startswith("quality on 32 validation images: PSNR noisy")]
    assert len(quality) == 1, err
    assert "aelab: warning: the trained model's output is worse than noisy" in err
    assert "train longer (--epochs)" in err
    saved = runs.load_history(run)["quality"]
    assert saved["worse"] and saved["output_psnr"] < saved["input_psnr"]


def test_fit_warns_from_python_too(tmp_path):
    import torch

    from aelab.models import build_model
    from aelab.train import TrainConfig, fit

    torch.manual_seed(0)
    model = build_model("undercomplete", (1, 12, 12), net="conv")
    x = torch.rand(16, 1, 12, 12)
    with pytest.warns(AelabWarning, match="worse than the mean image"):
        hist = fit(model, x, x, TrainConfig(epochs=1, lr=1e-7, progress=False))
    assert hist["quality"]["kind"] == "reconstruction"


def test_a_model_that_learned_saves_no_warning():
    import torch

    from aelab.loop import quality
    from aelab.models import build_model
    from aelab.noise import Noise, parse_noise

    model = build_model("undercomplete", (1, 12, 12), net="conv")
    x = torch.rand(16, 1, 12, 12)
    model.forward = lambda batch: batch.clamp(0, 1)  # a perfect reconstruction
    q = quality(model, x, Noise())
    assert not q["worse"] and q["warning"] is None
    model.forward = lambda batch: torch.zeros_like(batch)  # worse than the mean image
    q = quality(model, x, Noise())
    assert q["worse"] and "worse than the mean image" in q["warning"]
    model.forward = lambda batch: batch  # a denoiser that returns the noisy input: not better
    q = quality(model, x, parse_noise("gaussian:0.2"))
    assert q["kind"] == "denoising" and q["warning"] is None and not q["worse"]


# -- item 11: one line per epoch in a log file ----------------------------------------------------

def test_progress_in_a_log_file_is_one_line_per_epoch(fake_fashion, tmp_path, capsys):
    assert main(["train", "--data", str(fake_fashion), "--epochs", "3", "--batch-size", "16",
                 "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], err
    assert all(", val " in line and line.endswith(" s") for line in epochs)
