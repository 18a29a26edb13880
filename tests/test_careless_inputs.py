"""Careless and hostile use, round three (issue 27), the input items: labels checked against a
bound before class names are built (6); one line instead of a traceback for a seed out of range,
``evaluate --hardest 0``, images smaller than SSIM's window, a 5-channel run, a hand-edited
history.json or metrics.json and ``TrainConfig(lr='fast')`` (9); the EXIF orientation of a photo
(10); and messages that misled (12): a transparent PNG called broken, 16-bit grey + alpha called
colour, a uint16 array told to divide by 255, a text file said to hold pickled data, "labels
0..-1", ``embed`` on one image, a decompression bomb decoded for minutes, a 2048x2048 dense
config built before its weights were checked, unknown top-level keys of config.json.

The tests that would allocate gigabytes on code without the checks (items 6 and the dense config)
run under a cap on the address space, so that such code fails fast instead of taking the machine."""

from __future__ import annotations

import contextlib
import json
import resource
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from aelab import arrays, data, runs
from aelab.cli import main
from aelab.errors import ConfigError, DataError
from aelab.evaluate import denoising_quality
from aelab.noise import parse_noise
from aelab.settings import MapConfig, TrainConfig

from imagefiles import GREY_ALPHA, RGBA, write_png
from test_errors import cli_error, raises


@contextlib.contextmanager
def address_space_cap(extra_gb: float):
    """Cap this process's address space at its size now plus ``extra_gb``: code that would
    allocate gigabytes fails fast with a MemoryError instead of taking the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status", encoding="ascii") as fh:
        size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    cap = size + int(extra_gb * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _train(data_path, out, *extra):
    argv = ["train", "--data", str(data_path), "--epochs", "1", "--batch-size", "16", "--out", str(out),
            "--no-progress", *extra]
    assert main(argv) == 0
    return out


# -- item 6: a label of 2**40 builds no list of 2**40 class names ---------------------------------

def test_a_huge_label_is_refused_before_class_names_are_built(tmp_path, capsys):
    path = tmp_path / "huge.npz"
    np.savez(path, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 2 ** 40, 3], np.int64))
    t = time.perf_counter()
    with address_space_cap(1.0):  # 2**40 names would need terabytes: fail fast, not in minutes
        raises(DataError, lambda: data.load_npz(path), "expected labels 0..99999", "without class_names",
               "found 1099511627776 at index 2", "renumber the classes", "class_names")
        cli_error(capsys, ["train", "--data", str(path), "--out", str(tmp_path / "r"), "--no-progress"],
                  "expected labels 0..99999", "found 1099511627776")
    assert time.perf_counter() - t < 10
    # labels up to the number of images (or 100,000) are still numbered without names
    np.savez(path, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 500, 3]))
    assert len(data.load_npz(path).class_names) == 501


# -- item 9: one line, not a traceback --------------------------------------------------------------

def test_a_seed_out_of_range_is_one_line(fake_fashion, tmp_path, capsys):
    for seed in (2 ** 70, -1, 2 ** 32):
        raises(ConfigError, lambda: TrainConfig(seed=seed).check(), "expected a seed from 0 to 4294967295",
               f"found {seed}", "e.g. --seed 0")
    raises(ConfigError, lambda: MapConfig(seed=2 ** 70).check(), "expected a seed from 0 to 4294967295")
    assert TrainConfig(seed=2 ** 32 - 1).check().seed == 2 ** 32 - 1
    huge = str(2 ** 70)
    cli_error(capsys, ["train", "--data", str(fake_fashion), "--out", str(tmp_path / "t"), "--seed", huge,
                       "--no-progress"], "expected a seed from 0 to 4294967295", f"found {huge}")
    assert not (tmp_path / "t").exists()
    cli_error(capsys, ["embed", "--baseline", "pixels", "--data", str(fake_fashion), "--out", str(tmp_path / "e"),
                       "--seed", huge, "--no-progress"], "expected a seed from 0 to 4294967295", f"found {huge}")
    vae = _train(fake_fashion, tmp_path / "vae", "--kind", "variational", "--net", "dense")
    capsys.readouterr()
    cli_error(capsys, ["sample", "--run", str(vae), "--seed", huge], "expected a seed from 0 to 4294967295",
              f"found {huge}")


def test_train_config_refuses_wrong_types_in_one_line():
    raises(ConfigError, lambda: TrainConfig(lr="fast").check(), "expected lr to be a number",
           "found 'fast' (a str)", "e.g. lr=0.001")
    raises(ConfigError, lambda: TrainConfig(epochs="3").check(), "expected epochs to be a whole number",
           "found '3' (a str)")
    raises(ConfigError, lambda: TrainConfig(noise=0.2).check(), "expected noise to be a string or None",
           "noise='gaussian:0.2'")
    raises(ConfigError, lambda: TrainConfig(channels_last="no").check(), "expected channels_last to be True or False")
    raises(ConfigError, lambda: MapConfig(perplexity="x").check(), "expected perplexity to be a number")
    assert TrainConfig(noise=parse_noise("gaussian:0.2")).check()  # a Noise object is a noise too
    config = TrainConfig(epochs=np.int64(2), lr=np.float32(0.01)).check()  # NumPy's numbers: plain ones, for JSON
    assert type(config.epochs) is int and type(config.lr) is float


def test_evaluate_hardest_zero(fake_fashion, tmp_path, capsys):
    run = _train(fake_fashion, tmp_path / "r")
    capsys.readouterr()
    cli_error(capsys, ["evaluate", "--run", str(run), "--hardest", "0", "--baselines", "gaussian", "--no-progress"],
              "expected hardest >= 1", "found 0", "e.g. --hardest 8")
    assert not (run / "evaluation.json").exists()


def test_evaluate_and_rd_on_images_smaller_than_the_ssim_window(tmp_path, capsys):
    folder = tmp_path / "tiny"
    rng = np.random.default_rng(0)
    for i in range(8):
        write_png(folder / f"{i}.png", rng.integers(0, 256, (5, 5), dtype=np.uint8))
    run = _train(folder, tmp_path / "r", "--net", "dense")
    capsys.readouterr()
    cli_error(capsys, ["evaluate", "--run", str(run), "--baselines", "gaussian", "--no-progress"],
              "expected images of at least 7x7 pixels (SSIM's 7x7 window)", "found 5x5")
    cli_error(capsys, ["rd", "--data", str(folder), "--out", str(tmp_path / "rd"), "--methods", "png",
                       "--no-progress"], "expected images of at least 7x7 pixels", "found 5x5")
    raises(DataError, lambda: denoising_quality(runs.load_model(run), torch.zeros(2, 1, 5, 5)),
           "expected images of at least 7x7 pixels", "found 5x5")


def test_evaluate_on_a_five_channel_run(tmp_path, capsys):
    path = tmp_path / "five.npz"
    np.savez(path, x=np.random.default_rng(0).random((16, 5, 8, 8), dtype=np.float32))
    run = _train(path, tmp_path / "r", "--net", "dense")
    capsys.readouterr()
    cli_error(capsys, ["evaluate", "--run", str(run), "--no-progress"],
              "expected grey (1 channel) or colour (3 channel) images", "found 5 channels",
              "aelab.evaluate.denoising_quality(model, x)")
    # the way out it names works
    x = torch.from_numpy(np.load(path)["x"])
    assert set(denoising_quality(runs.load_model(run), x, factors=(0.2,))["0.2"]) == {"noisy", "model"}


@pytest.mark.parametrize("name, edit, parts", [
    ("history.json", {"train": {"loss": ["a", "b"]}}, ["expected train.loss to be a list of numbers", '["a", "b"]']),
    ("history.json", {"train": {"loss": {"a": 1}}}, ["expected train.loss to be a list of numbers"]),
    ("history.json", {"train": [0.1, 0.2]}, ["expected 'train' to map each loss term", "[0.1, 0.2]"]),
    ("history.json", {"train": {"loss": []}}, ["expected train.loss to be a list of numbers", "found []"]),
    ("history.json", {"seconds": "fast"}, ["expected 'seconds' to be a list of numbers"]),
    ("history.json", {"val": [1.0]}, ["expected 'val' to map each loss term"]),
    ("metrics.json", {"denoising": {"0.2": {"noisy": {"psnr": 20, "ssim": 0.5}}}},
     ["expected the 'denoising' section of the run's metrics.json", "KeyError: 'model'"]),
    ("metrics.json", {"timing": [1, 2]}, ["expected 'timing' to be an object"]),
    ("metrics.json", {"embedding": {"tsne": [1]}}, ["expected embedding.tsne to be an object"]),
])
def test_report_on_a_hand_edited_file(fake_fashion, tmp_path, capsys, name, edit, parts):
    run = _train(fake_fashion, tmp_path / "r")
    path = run / name
    original = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**original, **edit}))
    capsys.readouterr()
    cli_error(capsys, ["report", "--run", str(run)], *parts, "restore")


# -- item 10: the EXIF orientation ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path, fmt):
    """A phone photo stored 24 wide x 16 high with orientation 6 ("rotate 90 degrees clockwise
    to view") is read upright: 16 wide x 24 high, its stored top rows on the right."""
    pixels = np.zeros((16, 24), np.uint8)
    pixels[:4] = 255  # the stored top rows are bright
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"phone.{fmt.lower()}"
    Image.fromarray(pixels, mode="L").save(path, format=fmt, exif=exif.tobytes(), quality=95)
    arr = data.load_image(path)
    assert arr.shape == (24, 16)
    assert arr[:, -4:].mean() > 0.9 and arr[:, :-4].mean() < 0.1  # the bright band is now on the right
    ds = data.load_image_folder(tmp_path)
    assert ds.input_shape == (1, 24, 16)
    if fmt == "JPEG":  # from the header alone
        assert data.image_shape(path) == (1, 24, 16)


# -- item 12: messages that misled ------------------------------------------------------------------

def test_transparent_png_says_transparent_not_broken(tmp_path):
    pixels = np.full((4, 4, 4), 200, np.uint8)
    pixels[..., 3] = 255
    pixels[0, 0, 3] = 0
    msg = raises(DataError, lambda: data.load_image(write_png(tmp_path / "t.png", pixels, RGBA)),
                 "expected an opaque image", "1 transparent pixel(s)", "flatten it onto a background")
    assert "broken" not in msg and "oversized" not in msg


def test_16_bit_grey_with_alpha_is_not_called_colour(tmp_path):
    pixels = np.zeros((4, 4, 2), np.uint16)
    pixels[..., 1] = 65535
    msg = raises(DataError, lambda: data.load_image(write_png(tmp_path / "la16.png", pixels, GREY_ALPHA)),
                 "found a 16-bit grey PNG with an alpha channel", "remove the alpha channel")
    assert "colour" not in msg and "broken" not in msg


def test_uint16_images_are_told_their_own_scale(tmp_path):
    np.savez(tmp_path / "u16.npz", x=np.full((3, 1, 8, 8), 40000, np.uint16))
    msg = raises(DataError, lambda: data.load_npz(tmp_path / "u16.npz"), "found dtype uint16",
                 "scale 16-bit images with x.astype(np.float32) / 65535")
    assert "/ 255" not in msg
    msg = raises(DataError, lambda: data.check_images(np.full((3, 1, 8, 8), 40000, np.uint16)),
                 "found dtype uint16", "x.float() / 65535")
    assert "/ 255" not in msg
    raises(DataError, lambda: data.check_images(torch.full((2, 1, 4, 4), 200, dtype=torch.uint8)),
           "x.float() / 255")


def test_a_text_file_named_npz_is_not_said_to_hold_pickles(tmp_path):
    (tmp_path / "notes.npz").write_text("hello, these are my notes\n")
    msg = raises(DataError, lambda: data.load_npz(tmp_path / "notes.npz"),
                 "expected a NumPy .npz archive (a zip file)", "b'hello, t", "which is not one", "np.savez")
    assert "pickle" not in msg
    (tmp_path / "empty.npz").write_bytes(b"")
    raises(DataError, lambda: data.load_npz(tmp_path / "empty.npz"), "found an empty file")


def test_labels_message_never_reads_minus_one(tmp_path):
    np.savez(tmp_path / "noname.npz", x=np.zeros((3, 1, 8, 8), np.float32), y=np.array([0, 1, 2]),
             class_names=np.array([], dtype=str))
    msg = raises(DataError, lambda: data.load_npz(tmp_path / "noname.npz"),
                 "expected one class name per class (labels 0..2)", "found an empty class_names")
    assert "-1" not in msg.split(": ", 1)[1]  # the message, not the path (pytest's folders are named pytest-1...)
    assert data.label_range(0) == "none" and data.label_range(1) == "0" and data.label_range(10) == "0..9"


def test_embed_on_too_few_images_says_how_many_and_how_to_fix(fake_fashion, tmp_path, capsys):
    one = tmp_path / "one.npz"
    np.savez(one, x=np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32))
    run = _train(one, tmp_path / "one", "--net", "dense")
    capsys.readouterr()
    cli_error(capsys, ["embed", "--run", str(run), "--method", "pca", "--no-progress"],
              "expected at least 7 images to map and score", "found 1", "embed a data set with more images")
    run = _train(fake_fashion, tmp_path / "r")
    capsys.readouterr()
    cli_error(capsys, ["embed", "--run", str(run), "--method", "pca", "--limit", "3", "--no-progress"],
              "found 3", "raise --limit to 7 or more, or drop it")


def _png_header_only(path, width: int, height: int):
    """A PNG that claims ``width`` x ``height`` grey pixels but holds a few bytes: what is
    refused from its header is refused before anything is decoded."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_refused_at_once(tmp_path, capsys):
    limit = Image.MAX_IMAGE_PIXELS
    for side in (13000, 20000):  # over the limit (Pillow warns), over twice the limit (Pillow refuses)
        path = _png_header_only(tmp_path / f"big{side}" / "huge.png", side, side)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no raw DecompressionBombWarning
            t = time.perf_counter()
            raises(DataError, lambda: data.load_image(path), f"expected an image of at most {limit:,} pixels",
                   f"found {side}x{side} = {side * side:,} pixels", "shrink or crop it")
            assert time.perf_counter() - t < 2
    cli_error(capsys, ["train", "--data", str(tmp_path / "big13000"), "--out", str(tmp_path / "r"), "--no-progress"],
              "huge.png", "13000x13000 = 169,000,000 pixels")


def test_a_dense_config_of_2048x2048_is_refused_before_it_is_built(fake_fashion, tmp_path, monkeypatch):
    run = _train(fake_fashion, tmp_path / "r", "--net", "dense")
    config = json.loads((run / "config.json").read_text())
    config["model"]["input_shape"] = [1, 2048, 2048]
    (run / "config.json").write_text(json.dumps(config))
    t = time.perf_counter()
    with address_space_cap(1.5):  # building it would take 8 GB and about half a minute
        raises(ConfigError, lambda: runs.load_model(run), "the weights do not match the model in config.json",
               "encoder.1.weight has shape (256, 784), the config builds (256, 4194304)")
        # a model that cannot fit in memory is refused before it is built, weights or not
        monkeypatch.setattr(arrays, "available_memory", lambda: 2 * 10 ** 9)
        raises(ConfigError, lambda: runs.model_from_config(config["model"]),
               "expected a model that fits in memory (2.0 GB available)", "2,151,694,880 values",
               "check 'input_shape' and 'net'")
    assert time.perf_counter() - t < 10


def test_unknown_top_level_config_keys_are_refused(fake_fashion, tmp_path):
    first = _train(fake_fashion, tmp_path / "a")
    second = _train(fake_fashion, tmp_path / "b", "--init", str(first))  # every key aelab writes still loads
    assert "initialised_from" in runs.read_config(second)
    runs.load_model(second)
    config = json.loads((first / "config.json").read_text())
    (first / "config.json").write_text(json.dumps({**config, "notes": "try a bigger lr"}))
    raises(ConfigError, lambda: runs.load_model(first), "expected only the keys aelab writes",
           "found unknown key 'notes'", "rename or remove it")
    config["clas_names"] = config.pop("class_names")
    (first / "config.json").write_text(json.dumps(config))
    raises(ConfigError, lambda: runs.read_config(first), "unknown key 'clas_names'", "did you mean 'class_names'?")
    config["class_names"] = config.pop("clas_names")
    config["train"] = ["a"]
    (first / "config.json").write_text(json.dumps(config))
    raises(ConfigError, lambda: runs.read_config(first), "expected 'train' to be a dict", '["a"]')
    model = runs.load_model(second)
    raises(ConfigError, lambda: runs.save_model(model, tmp_path / "c", extra={"notes": 1}), "unknown key 'notes'")
    assert not (tmp_path / "c").exists()
