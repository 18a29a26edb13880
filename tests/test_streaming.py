"""Data that streams (issue 28, item 3): folders and uncompressed .npz read through
torch.utils.data, uint8 until the batch is made; random crops of larger or mixed-size images,
fixed crops for validation; the same weights with 0 or 2 workers, after a resume, and as the
in-memory path on the same images; under torchrun each rank reads only its share; and the
Fashion-MNIST in-memory path trains the very weights it trained before streaming existed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aelab import runs, streaming
from aelab.cli import main
from aelab.models import build_model
from aelab.train import TrainConfig, fit

from test_errors import cli_error

WORKER = Path(__file__).with_name("ddp_stream_worker.py")


def _weights_digest(run) -> str:
    state = runs.load_model(run).state_dict()
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


# The weights `aelab train --data <fake_fashion> --epochs 2 --batch-size 16 --seed 3` gave before
# streaming existed (measured on the commit before it, a5a0190): the in-memory path must not move.
PINNED = {"conv": "237fe7445d1297f4c810e0065720de27067e058de670989e2afcc554856adfdb",
          "unet": "d5510447bacbf0d8b9361122d2340457fdd9eaa272a07a23b5e62e2eebc3841d"}


@pytest.mark.parametrize("net", ["conv", "unet"])
def test_the_fashion_mnist_in_memory_path_trains_the_same_weights_as_before(fake_fashion, tmp_path, net):
    out = tmp_path / net
    extra = ["--net-option", "widths=[4,8]"] if net == "unet" else []
    assert main(["train", "--data", str(fake_fashion), "--epochs", "2", "--batch-size", "16", "--seed", "3",
                 "--net", net, "--out", str(out), "--no-progress", *extra]) == 0
    assert _weights_digest(out) == PINNED[net]


def _folder(root: Path, n: int, sizes, colour=False, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        a = rng.integers(0, 256, (h, w, 3) if colour else (h, w), dtype=np.uint8)
        Image.fromarray(a, mode="RGB" if colour else "L").save(root / f"{i:04d}.png")
    return root


def _images(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def test_a_folder_streams_as_uint8_and_batches_as_float(tmp_path):
    folder = _folder(tmp_path / "f", 10, [(12, 12)])
    ds = streaming.image_folder(folder)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 10 and ds.input_shape == (1, 12, 12)
    item = ds[(3, 0)]
    assert item.dtype == np.uint8 and item.shape == (1, 12, 12)
    batch = ds.items([0, 3])
    assert batch.dtype == torch.float32
    expected = torch.from_numpy(_images(folder)[[0, 3]]).float()[:, None] / 255
    assert torch.equal(batch, expected)


def test_random_crops_depend_on_seed_epoch_and_index_only(tmp_path):
    folder = _folder(tmp_path / "f", 6, [(40, 50), (33, 70)], colour=True)
    cli = streaming.image_folder(folder, crop=(16, 20), seed=5)
    assert cli.input_shape == (3, 16, 20)
    a, b = cli[(2, 0)], cli[(2, 0)]
    assert np.array_equal(a, b) and a.shape == (3, 16, 20)
    assert not np.array_equal(cli[(2, 0)], cli[(2, 1)])  # another epoch, another window
    # the window is the image's own pixels
    top, left = streaming.crop_origin(5, 1, 2, 40, 50, (16, 20))
    img = np.asarray(Image.open(folder / "0002.png")).transpose(2, 0, 1)
    assert np.array_equal(cli[(2, 1)], img[:, top:top + 16, left:left + 20])
    centre = cli[(2, -1)]  # validation: the fixed centre
    assert np.array_equal(centre, img[:, 12:28, 15:35])


def test_mixed_sizes_need_a_crop_and_crops_need_big_enough_images(tmp_path, fake_fashion, capsys):
    folder = _folder(tmp_path / "f", 4, [(30, 30), (40, 36)])
    with pytest.raises(ValueError, match="pass --crop H,W"):
        streaming.image_folder(folder)
    with pytest.raises(ValueError, match="at least 32x32 for --crop 32,32, found 0000.png of 30x30"):
        streaming.image_folder(folder, crop=32)
    cli_error(capsys, ["train", "--data", str(folder), "--epochs", "1", "--out", str(tmp_path / "r"),
                       "--no-progress"], "--crop H,W")
    cli_error(capsys, ["train", "--data", str(fake_fashion), "--crop", "30,30", "--epochs", "1",
                       "--out", str(tmp_path / "r"), "--no-progress"], "at least 30x30 for --crop 30,30, found 28x28")
    # windows of Fashion-MNIST's 28x28 images are fine: the model is built for the window
    assert main(["train", "--data", str(fake_fashion), "--crop", "16,16", "--epochs", "1", "--out",
                 str(tmp_path / "c"), "--no-progress"]) == 0
    assert runs.read_config(tmp_path / "c")["model"]["input_shape"] == [1, 16, 16]


def _fit_digest(model, data, val, config, **kw) -> str:
    fit(model, data, val, config, **kw)
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def test_streamed_training_equals_in_memory_training_on_the_same_images(tmp_path):
    folder = _folder(tmp_path / "f", 40, [(12, 12)])
    x = torch.from_numpy(_images(folder)).float()[:, None] / 255
    cfg = TrainConfig(epochs=2, batch_size=8, progress=False, seed=1, noise="gaussian:0.2")
    torch.manual_seed(0)
    memory = _fit_digest(build_model("denoising", (1, 12, 12)), x, x[:8], cfg)
    torch.manual_seed(0)
    ds = streaming.image_folder(folder)
    streamed = _fit_digest(build_model("denoising", (1, 12, 12)), ds, x[:8], cfg)
    assert streamed == memory
    torch.manual_seed(0)
    workers = _fit_digest(build_model("denoising", (1, 12, 12)), ds, x[:8],
                          TrainConfig(epochs=2, batch_size=8, progress=False, seed=1, noise="gaussian:0.2", workers=2))
    assert workers == memory


def test_an_uncompressed_npz_is_memory_mapped_and_trains_the_same(tmp_path):
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (40, 1, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x8, y=np.arange(40) % 4)
    mapped = streaming.mapped_npz_member(tmp_path / "d.npz", "x")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, x8)
    ds = streaming.NpzImages(tmp_path / "d.npz", "x", list(np.arange(40) % 4), ["0", "1", "2", "3"])
    x = torch.from_numpy(x8).float() / 255
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, seed=2)
    torch.manual_seed(0)
    memory = _fit_digest(build_model("denoising", (1, 12, 12)), x, None, cfg)
    torch.manual_seed(0)
    assert _fit_digest(build_model("denoising", (1, 12, 12)), ds, None, cfg) == memory
    np.savez_compressed(tmp_path / "c.npz", x=x8)
    with pytest.raises(ValueError, match="stored uncompressed to stream it"):
        streaming.mapped_npz_member(tmp_path / "c.npz", "x")


def test_crops_train_and_resume_bit_identically_through_the_command_line(tmp_path):
    folder = _folder(tmp_path / "photos", 12, [(40, 52), (36, 44), (48, 48)], colour=True)
    argv = ["train", "--data", str(folder), "--crop", "16,16", "--epochs", "2", "--batch-size", "4", "--net", "unet",
            "--net-option", "widths=[4,8]", "--no-progress"]
    assert main(argv + ["--out", str(tmp_path / "whole")]) == 0
    config = runs.read_config(tmp_path / "whole")
    assert config["model"]["input_shape"] == [3, 16, 16] and config["train"]["crop"] == [16, 16]
    # interrupted after 4 steps (Ctrl-C's checkpoint), then resumed
    import aelab.loop
    real_fit = aelab.loop.fit

    def stopping_fit(*args, **kw):
        return real_fit(*args, **{**kw, "stop_after_steps": 4})

    aelab.train.fit = stopping_fit
    try:
        assert main(argv + ["--out", str(tmp_path / "cut")]) == 0
    finally:
        aelab.train.fit = real_fit
    assert main(["train", "--resume", "--out", str(tmp_path / "cut"), "--no-progress", "--workers", "2"]) == 0
    assert _weights_digest(tmp_path / "cut") == _weights_digest(tmp_path / "whole")


def test_under_torchrun_each_rank_reads_only_its_share(tmp_path):
    folder = _folder(tmp_path / "f", 24, [(12, 12)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(WORKER), str(folder), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    read = [json.loads((tmp_path / f"read{r}.json").read_text()) for r in (0, 1)]
    assert set(read[0]).isdisjoint(read[1]) and sorted(read[0] + read[1]) == list(range(24))
    # the same weights as the in-memory DDP run of the same images, on both ranks
    weights = [json.loads((tmp_path / f"weights{r}.json").read_text()) for r in (0, 1)]
    assert weights[0] == weights[1]
    assert weights[0]["streamed"] == weights[0]["memory"]


def test_crops_per_image_serves_each_image_in_several_windows(tmp_path):
    folder = _folder(tmp_path / "f", 3, [(40, 40)])
    ds = streaming.image_folder(folder, crop=(8, 8), repeats=5, seed=1)
    assert len(ds) == 15 and len(ds.labels) == 3
    windows = [ds[(i, 0)] for i in (1, 4, 7)]  # image 1, three times in one epoch
    img = np.asarray(Image.open(folder / "0001.png"))[None]
    for i, w in zip((1, 4, 7), windows):
        top, left = streaming.crop_origin(1, 0, i, 40, 40, (8, 8))
        assert np.array_equal(w, img[:, top:top + 8, left:left + 8])
    assert not np.array_equal(windows[0], windows[1])
    with pytest.raises(ValueError, match="--crops-per-image a whole number >= 1, with --crop"):
        from aelab.data import training_set
        training_set(folder, crops_per_image=3)


def test_the_photo_split_holds_whole_photos_apart(tmp_path, capsys):
    from aelab import photos

    assert set(photos.TRAIN).isdisjoint(photos.TEST) and set(photos.TRAIN) | set(photos.TEST) == set(photos.PHOTOS)
    assert main(["data", "photos", "--out", str(tmp_path / "p")]) == 0
    train = sorted(p.stem for p in (tmp_path / "p" / "train").iterdir())
    assert train == sorted(photos.TRAIN)
    with Image.open(tmp_path / "p" / "test" / "astronaut.png") as im:
        assert (im.size, im.mode) == ((512, 512), "RGB")  # neither shrunk nor recoloured
    assert main(["data", "photos", "--out", str(tmp_path / "p")]) == 0  # the same files again: left as they are
    (tmp_path / "q" / "test").mkdir(parents=True)
    (tmp_path / "q" / "test" / "moon.png").write_bytes(b"mine")
    cli_error(capsys, ["data", "photos", "--out", str(tmp_path / "q")], "moon.png", "does not write over it")
    assert (tmp_path / "q" / "test" / "moon.png").read_bytes() == b"mine"
    assert not (tmp_path / "q" / "train").exists()
