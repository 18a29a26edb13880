"""Bad input (issue 7): every case of the list gets a one-line message saying what was
expected, what was found and how to fix it, as a specific exception from Python and as
``aelab: error: ...`` with exit status 2 from the command line; nothing half-written.

Each test asserts the message's content, not just that something raised."""

from __future__ import annotations

import gzip
import json
import os
import pickle

import numpy as np
import pytest
import torch

from aelab import data, runs
from aelab.cli import main
from aelab.errors import AelabError, ConfigError, DataError, DataNotFoundError, DataWarning, TrainingError
from aelab.evaluate import denoising_quality
from aelab.inference import apply_model
from aelab.models import build_model
from aelab.noise import add_evaluation_noise
from aelab.train import TrainConfig, fit

from conftest import write_idx
from imagefiles import RGB, RGBA, write_palette_png, write_png


def raises(exc_type, fn, *parts):
    """Call ``fn``, expect ``exc_type`` with a one-line message holding every ``part``."""
    with pytest.raises(exc_type) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def cli_error(capsys, argv, *parts) -> str:
    """Run the command line, expect exit 2 and one line ``aelab: error: ...`` holding every part."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message"
    last = err[-1]
    assert last.startswith("aelab: error: "), err
    assert not any("Traceback" in line for line in err)
    for part in parts:
        assert part in last, f"{part!r} not in {last!r}"
    return last


# ================================================================== data files: IDX

def test_missing_idx_file(tmp_path):
    raises(DataNotFoundError, lambda: data.read_idx(tmp_path / "nope.gz"),
           "expected an IDX file at", "found nothing", "check the path")


def test_missing_data_folder_from_cli(tmp_path, capsys):
    cli_error(capsys, ["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")],
              "expected a folder, an .npz or Fashion-MNIST files at", "nowhere", "found nothing there",
              "check the path")
    (tmp_path / "empty").mkdir()  # a folder that is there but lacks the files: which ones
    cli_error(capsys, ["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")],
              "expected PNG or JPEG images in", "or the four Fashion-MNIST IDX files")


def test_truncated_gzip(tmp_path):
    p = write_idx(tmp_path / "t.gz", np.ones((4, 28, 28)))
    p.write_bytes(p.read_bytes()[:-30])
    raises(DataError, lambda: data.read_idx(p), str(p), "truncated or corrupt gzip", "download it again")


def test_corrupt_gzip_crc(tmp_path):
    p = write_idx(tmp_path / "c.gz", np.arange(4 * 28 * 28).reshape(4, 28, 28) % 251)
    raw = bytearray(p.read_bytes())
    raw[-6] ^= 0xFF  # inside the CRC32 trailer: the data decompresses, the check fails
    p.write_bytes(bytes(raw))
    raises(DataError, lambda: data.read_idx(p), "corrupt gzip", "CRC", "download it again")


def test_not_gzip_not_idx(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(b"<html>404 Not Found</html>")  # what a failed download often leaves
    raises(DataError, lambda: data.read_idx(p, expected_ndim=3),
           "expected an IDX file of unsigned bytes", "found magic 0x3c68746d", "is this really an IDX file?")


def test_wrong_idx_magic(tmp_path):
    p = write_idx(tmp_path / "bad.gz", np.zeros((2, 2, 2)), magic=0x00000D03)  # int32 type code
    raises(DataError, lambda: data.read_idx(p), "expected an IDX file of unsigned bytes (magic 0x00000801 or "
           "0x00000803)", "found magic 0x00000d03")


def test_images_and_labels_swapped(tmp_path):
    p = write_idx(tmp_path / "labels.gz", np.zeros(5))
    raises(DataError, lambda: data.read_idx(p, expected_ndim=3), "expected an IDX file with 3 dimension(s)",
           "found 1", "images and labels swapped?")


def test_idx_header_promises_more_than_the_file_holds(tmp_path):
    # a header claiming 4e9 x 4e9 x 4e9 bytes must not be believed (nor allocated)
    p = tmp_path / "huge"
    p.write_bytes(b"\x00\x00\x08\x03" + b"\xee\x6b\x28\x00" * 3 + b"\x00" * 100)
    raises(DataError, lambda: data.read_idx(p), "more than the file can hold", "truncated or corrupt")
    p.write_bytes(gzip.compress(p.read_bytes()))
    raises(DataError, lambda: data.read_idx(p), "more than the file can hold")


def test_idx_trailing_bytes(tmp_path):
    p = write_idx(tmp_path / "extra", np.zeros((2, 3, 3)), gz=False)
    p.write_bytes(p.read_bytes() + b"\x00\x01")
    raises(DataError, lambda: data.read_idx(p), "promises 18 bytes", "found more", "corrupt")


def test_image_and_label_counts_disagree(tmp_path):
    imgs = write_idx(tmp_path / "i.gz", np.zeros((3, 28, 28)))
    lbls = write_idx(tmp_path / "l.gz", np.zeros(4))
    raises(DataError, lambda: data.load_idx_pair(imgs, lbls), "holds 3 images but", "holds 4 labels",
           "expected the same count", "do not belong together")


def test_label_out_of_range(tmp_path):
    imgs = write_idx(tmp_path / "i.gz", np.zeros((3, 28, 28)))
    lbls = write_idx(tmp_path / "l.gz", np.array([1, 12, 3]))
    raises(DataError, lambda: data.load_idx_pair(imgs, lbls), "expected labels 0..9", "found 12 at index 1",
           "download it again")


def test_corrupt_fashion_file_from_cli(fake_fashion, tmp_path, capsys):
    p = fake_fashion / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:15])
    cli_error(capsys, ["train", "--data", str(fake_fashion), "--out", str(tmp_path / "r"), "--no-progress"],
              "t10k-labels-idx1-ubyte.gz", "truncated or corrupt", "download it again")
    assert not (tmp_path / "r").exists()  # nothing half-written


# ================================================================== data files: image folders

def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    raises(DataError, lambda: data.load_image_folder(tmp_path / "empty"),
           "expected PNG or JPEG images in", "found none", "put the images there")
    cli_error(capsys, ["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")], "found none")


def test_images_of_different_sizes_without_size(tmp_path):
    write_png(tmp_path / "a" / "0.png", np.zeros((12, 10), np.uint8))
    write_png(tmp_path / "a" / "1.png", np.zeros((8, 8), np.uint8))
    raises(DataError, lambda: data.load_image_folder(tmp_path), "expected images of one size", "found 2 sizes",
           "a/0.png is 12x10", "a/1.png is 8x8", "pass --crop H,W", "or --size H,W")
    assert data.load_image_folder(tmp_path, size=(6, 5)).x.shape == (2, 1, 6, 5)


def test_non_image_files_are_skipped_with_a_warning_naming_them(tmp_path):
    write_png(tmp_path / "cats" / "0.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "cats" / "scan.bmp").write_bytes(b"BM")
    (tmp_path / "cats" / ".DS_Store").write_bytes(b"\x00")  # hidden: skipped silently
    (tmp_path / ".ipynb_checkpoints").mkdir()                 # hidden folder: not a class
    with pytest.warns(DataWarning, match=r"skipped 2 item\(s\).*cats/notes.txt, cats/scan.bmp") as rec:
        ds = data.load_image_folder(tmp_path)
    assert ".DS_Store" not in str(rec[0].message)
    assert ds.class_names == ["cats"] and len(ds) == 1


def test_undecodable_file_with_an_image_suffix_is_refused(tmp_path):
    write_png(tmp_path / "dogs" / "0.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "dogs" / "1.png").write_text("this is not a PNG")
    raises(DataError, lambda: data.load_image_folder(tmp_path), "1.png", "expected a PNG or JPEG image",
           "found a file that is neither", "remove it")


def test_truncated_png_is_refused(tmp_path):
    p = write_png(tmp_path / "t.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    p.write_bytes(p.read_bytes()[:40])
    raises(DataError, lambda: data.load_image(p), "t.png", "expected a readable PNG or JPEG image",
           "remove or replace it")


def test_sixteen_bit_grey_png_is_read_at_full_precision(tmp_path):
    pixels = np.array([[0, 1, 257, 65535], [1000, 30000, 40000, 65534]], np.uint16)
    p = write_png(tmp_path / "g16.png", pixels)
    np.testing.assert_allclose(data.load_image(p), pixels / 65535.0, rtol=0, atol=1e-7)
    assert data.load_image(p)[0, 1] > 0  # 1/65535 survives: nothing rounded to 8 bits


def test_sixteen_bit_colour_png_is_refused(tmp_path):
    p = write_png(tmp_path / "rgb16.png", np.full((4, 4, 3), 1000, np.uint16), RGB)
    raises(DataError, lambda: data.load_image(p), "rgb16.png", "expected an 8-bit image or a 16-bit grey one",
           "found a 16-bit colour PNG", "convert it to 8 bits")


def test_palette_png_is_expanded(tmp_path):
    grey = write_palette_png(tmp_path / "grey.png", [[0, 1], [2, 1]], [(0, 0, 0), (128, 128, 128), (255, 255, 255)])
    colour = write_palette_png(tmp_path / "colour.png", [[0, 1], [1, 0]], [(255, 0, 0), (0, 0, 255)])
    g, c = data.load_image(grey), data.load_image(colour)
    assert g.shape == (2, 2) and c.shape == (2, 2, 3)  # a grey palette stays grey
    np.testing.assert_allclose(g, np.array([[0, 128], [255, 128]]) / 255.0)
    np.testing.assert_allclose(c[0, 0], [1, 0, 0])
    np.testing.assert_allclose(c[0, 1], [0, 0, 1])


def test_alpha_channel(tmp_path):
    opaque = np.dstack([np.full((3, 3, 3), 90, np.uint8), np.full((3, 3), 255, np.uint8)])
    np.testing.assert_allclose(data.load_image(write_png(tmp_path / "o.png", opaque, RGBA)), 90 / 255.0)
    seethrough = opaque.copy()
    seethrough[0, 0, 3] = 0
    raises(DataError, lambda: data.load_image(write_png(tmp_path / "t.png", seethrough, RGBA)), "t.png",
           "expected an opaque image", "1 transparent pixel(s)", "flatten it onto a background")


def test_bad_size_option(tmp_path):
    write_png(tmp_path / "0.png", np.zeros((4, 4), np.uint8))
    raises(ConfigError, lambda: data.load_image_folder(tmp_path, size=(0, 5)),
           "expected a size H,W of two positive integers", "found 0,5", "--size 28,28")


def test_data_that_is_a_stray_file(tmp_path, capsys):
    p = write_png(tmp_path / "one.png", np.zeros((4, 4), np.uint8))
    cli_error(capsys, ["data", "show", "--data", str(p), "--out", str(tmp_path / "o")],
              "expected --data to be a folder", "found the file", "pass its folder instead")


# ================================================================== data files: .npz

def test_npz_problems(tmp_path):
    np.savez(tmp_path / "noimages.npz", y=np.arange(3))
    raises(DataError, lambda: data.load_npz(tmp_path / "noimages.npz"), "expected an array named 'x' or 'images'",
           "found ['y']", "np.savez(path, x=images, y=labels)")
    np.save(tmp_path / "single.npy", np.zeros((2, 4, 4)))
    os.replace(tmp_path / "single.npy", tmp_path / "single.npz")
    raises(DataError, lambda: data.load_npz(tmp_path / "single.npz"), "found a single .npy array", "np.savez")
    np.savez(tmp_path / "labels.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.arange(4))
    raises(DataError, lambda: data.load_npz(tmp_path / "labels.npz"), "expected 3 labels", "found shape (4,)")
    np.savez(tmp_path / "names.npz", x=np.zeros((2, 4, 4), np.uint8), y=[0, 5], class_names=["a", "b"])
    raises(DataError, lambda: data.load_npz(tmp_path / "names.npz"), "expected labels 0..1", "found 5 at index 1")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 broken zip")
    raises(DataError, lambda: data.load_npz(tmp_path / "broken.npz"), "expected a NumPy .npz archive",
           "save it again")
    np.savez(tmp_path / "text.npz", x=np.array([["a", "b"]]))
    raises(DataError, lambda: data.load_npz(tmp_path / "text.npz"), "expected", "numeric array", "found dtype <U1")


# ================================================================== arrays

@pytest.mark.parametrize("x, parts", [
    (torch.zeros(2, 28, 28), ["expected images of rank 4 (N, C, H, W)", "found shape (2, 28, 28)", "x[:, None]"]),
    (torch.zeros(2, 28, 28, 1), ["expected images channels first", "looks channels last", "x.permute(0, 3, 1, 2)"]),
    (torch.full((2, 1, 4, 4), 200, dtype=torch.uint8), ["expected images as floats in [0, 1]", "found dtype uint8",
                                                        "x.float() / 255"]),
    (torch.full((2, 1, 4, 4), 200.0), ["expected images in [0, 1]", "found values in [200, 200]", "x / 255"]),
    (torch.tensor([[[[0.5, float("nan")]]]]), ["expected finite values", "found 1 NaN or infinite", "clean or drop"]),
    (torch.tensor([[[[0.5, float("inf")]]]]), ["expected finite values", "found 1 NaN or infinite"]),
    (torch.zeros(0, 1, 4, 4), ["expected at least one image", "found an empty array of shape (0, 1, 4, 4)"]),
    (np.zeros((2, 1, 4, 4), dtype=object), ["expected images as a numeric array", "found dtype object"]),
    ([[0.5]], ["expected images as a torch.Tensor or numpy array", "found list"]),
])
def test_bad_arrays(x, parts):
    raises(DataError, lambda: data.check_images(x), *parts)


def test_bad_arrays_reach_no_torch_internals():
    """The public functions that take images check them before torch does."""
    model = build_model("denoising", (1, 28, 28))
    u8 = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    raises(DataError, lambda: model(u8), "expected images as floats in [0, 1]", "found dtype uint8")
    raises(DataError, lambda: model(np.zeros((2, 1, 28, 28), np.float32)), "expected images as a torch.Tensor")
    raises(DataError, lambda: model(torch.zeros(2, 28, 28, 1)), "found (2, 28, 28, 1)", "channels last")
    raises(DataError, lambda: apply_model(model, u8), "found dtype uint8")
    raises(DataError, lambda: denoising_quality(model, torch.full((2, 1, 28, 28), 255.0)), "x / 255")
    raises(DataError, lambda: fit(model, torch.zeros(0, 1, 28, 28), config=TrainConfig(epochs=1, progress=False)),
           "expected at least one image in training images")


# ================================================================== models and run directories

@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    model = build_model("denoising", (1, 12, 12))
    return runs.save_model(model, tmp_path / "run", train_config={"epochs": 1})


def test_run_directory_missing_a_file(run_dir, capsys):
    (run_dir / "model.safetensors").unlink()
    raises(ConfigError, lambda: runs.load_model(run_dir), "expected weights at", "model.safetensors",
           "found nothing", "--resume")
    (run_dir / "config.json").unlink()
    raises(ConfigError, lambda: runs.load_model(run_dir), "expected config.json in", "found nothing",
           "aelab train")
    cli_error(capsys, ["report", "--run", str(run_dir)], "expected config.json")
    cli_error(capsys, ["denoise", "--run", str(run_dir), "x.png"], "expected config.json")


def test_weights_that_do_not_match_the_config(run_dir, tmp_path):
    other = runs.save_model(build_model("denoising", (1, 12, 12), net="dense"), tmp_path / "other")
    os.replace(other / "model.safetensors", run_dir / "model.safetensors")
    raises(ConfigError, lambda: runs.load_model(run_dir), "the weights do not match the model in config.json",
           "missing", "come from different runs")
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["model"]["net"] = "dense"
    cfg["model"]["net_options"] = {"latent_dim": 16}
    (run_dir / "config.json").write_text(json.dumps(cfg))
    raises(ConfigError, lambda: runs.load_model(run_dir), "has shape (32, 256)", "the config builds (16, 256)")


def test_damaged_weights_and_config(run_dir):
    (run_dir / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    raises(ConfigError, lambda: runs.load_model(run_dir), "expected a safetensors file", "damaged")
    (run_dir / "config.json").write_text('{"format_version": 1, "model": ')
    raises(ConfigError, lambda: runs.read_config(run_dir), "expected valid JSON", "line 1", "retrain or restore")
    (run_dir / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    raises(ConfigError, lambda: runs.read_config(run_dir), "expected a UTF-8 JSON file")
    (run_dir / "config.json").write_text("[1, 2]")
    raises(ConfigError, lambda: runs.read_config(run_dir), "expected a JSON object", "found a list")


def test_weights_with_nan_are_refused(run_dir):
    from safetensors.torch import load_file, save_file
    state = load_file(run_dir / "model.safetensors")
    state["encoder.0.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, run_dir / "model.safetensors")
    raises(ConfigError, lambda: runs.load_model(run_dir), "expected finite weights", "'encoder.0.weight'")


def test_input_of_a_shape_the_model_was_not_built_for(run_dir, tmp_path, capsys):
    model = runs.load_model(run_dir)  # fully convolutional: any H, W of its one channel
    assert model(torch.rand(2, 1, 28, 30)).shape == (2, 1, 28, 30)
    raises(DataError, lambda: model(torch.rand(2, 3, 28, 28)), "expected images of shape (N, 1, H, W)",
           "found (2, 3, 28, 28)")
    dense_model = build_model("denoising", (1, 12, 12), net="dense")
    raises(DataError, lambda: dense_model(torch.rand(2, 1, 28, 28)), "expected images of shape (N, 1, 12, 12)",
           "found (2, 1, 28, 28)", "resize the images or train a model for this shape")
    np.savez(tmp_path / "big.npz", x=np.zeros((2, 1, 28, 28), np.float32))
    # `aelab denoise` cleans a convolutional model's images at their own size; a dense one refuses
    dense = runs.save_model(build_model("denoising", (1, 12, 12), net="dense"), tmp_path / "dense")
    cli_error(capsys, ["denoise", "--run", str(dense), str(tmp_path / "big.npz"), "--out", str(tmp_path / "d")],
              "expected 12x12 images for this dense model", "found 28x28")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("section, key, closest", [
    ("model", "net_option", "net_options"),
    ("model", "kindd", "kind"),
])
def test_config_with_an_unknown_key_names_the_closest(run_dir, section, key, closest):
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg[section][key] = cfg[section].pop(closest)
    (run_dir / "config.json").write_text(json.dumps(cfg))
    raises(ConfigError, lambda: runs.load_model(run_dir), f"unknown key {key!r}", f"did you mean {closest!r}?")


def test_config_with_an_unknown_option_or_net_option(run_dir):
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["model"]["options"] = {"reconstrution": "mse"}
    (run_dir / "config.json").write_text(json.dumps(cfg))
    raises(ConfigError, lambda: runs.load_model(run_dir), "no option 'reconstrution'", "did you mean 'reconstruction'")
    cfg["model"]["options"] = {}
    cfg["model"]["net_options"] = {"chanels": [4, 2]}
    (run_dir / "config.json").write_text(json.dumps(cfg))
    raises(ConfigError, lambda: runs.load_model(run_dir), "no option 'chanels'", "did you mean 'channels'")


def test_config_with_a_misspelt_section_and_wrong_types(run_dir):
    cfg = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**cfg, "model": None, "modle": cfg["model"]}))
    raises(ConfigError, lambda: runs.read_config(run_dir), "expected a 'model' section", "'modle'")
    cfg["model"]["input_shape"] = [1, -12, 12]
    (run_dir / "config.json").write_text(json.dumps(cfg))
    raises(ConfigError, lambda: runs.read_config(run_dir), "expected 'input_shape' [C, H, W] of three positive",
           "[1, -12, 12]")
    cfg["model"]["input_shape"], cfg["model"]["options"] = [1, 12, 12], "mse"
    (run_dir / "config.json").write_text(json.dumps(cfg))
    raises(ConfigError, lambda: runs.read_config(run_dir), "expected 'options' to be a dict", "'mse'")


def test_train_section_with_an_unknown_key_on_resume(fake_fashion, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", str(fake_fashion), "--epochs", "1", "--batch-size", "32", "--out", str(out),
                 "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    cfg["train"]["batchsize"] = cfg["train"].pop("batch_size")
    (out / "config.json").write_text(json.dumps(cfg))
    cli_error(capsys, ["train", "--resume", "--epochs", "2", "--out", str(out), "--no-progress"],
              "unknown key 'batchsize'", "did you mean 'batch_size'?")


def test_run_written_by_a_newer_format(run_dir, capsys):
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["format_version"] = runs.FORMAT_VERSION + 1
    (run_dir / "config.json").write_text(json.dumps(cfg))
    raises(ConfigError, lambda: runs.load_model(run_dir), "written by a newer aelab",
           f"format {runs.FORMAT_VERSION + 1}", f"reads up to {runs.FORMAT_VERSION}", "pip install -U aelab")
    cli_error(capsys, ["report", "--run", str(run_dir)], "written by a newer aelab")


def test_resume_with_a_checkpoint_of_another_model(fake_fashion, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    other = tmp_path / "other"
    assert main(["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(other), "--no-progress",
                 "--net", "dense"]) == 0
    os.replace(other / "checkpoint.pt", out / "checkpoint.pt")
    cli_error(capsys, ["train", "--resume", "--epochs", "2", "--out", str(out), "--no-progress"],
              "expected a checkpoint of this run's model and settings", "does not fit", "without --resume")


# ================================================================== options

@pytest.mark.parametrize("argv, parts", [
    (["train", "--epochs", "0"], ["expected epochs >= 1, found 0", "--epochs 10"]),
    (["train", "--epochs", "-3"], ["expected epochs >= 1, found -3"]),
    (["train", "--batch-size", "0"], ["expected batch size >= 1, found 0", "--batch-size 32"]),
    (["train", "--noise", "gaussian:7"], ["expected a Gaussian noise factor in [0, 5]", "found 7", "0.2"]),
    (["train", "--noise", "gaussian:-0.1"], ["noise factor in [0, 5]", "found -0.1"]),
    (["train", "--noise", "saltpepper:1.5"], ["expected a salt-and-pepper fraction in [0, 1]", "found 1.5"]),
    (["train", "--noise", "blur:2"], ["expected a noise of the form NAME:VALUE", "gaussian, saltpepper, masking"]),
    (["reproduce", "--noise-factor", "9"], ["expected a Gaussian noise factor in [0, 5]", "found 9"]),
    (["data", "show", "--noise-factor", "-1"], ["expected a Gaussian noise factor in [0, 5]", "found -1"]),
    (["train", "--kind", "denoize"], ["unknown kind 'denoize'", "expected one of", "denoising"]),
    (["train", "--net", "convv"], ["unknown network 'convv'", "expected one of", "conv, dense"]),
    (["train", "--limit", "0"], ["expected a limit of at least 1 image, found 0", "--limit 1000"]),
    (["train", "--limit", "-5"], ["found -5"]),
    (["train", "--lr", "-1"], ["expected a learning rate > 0, found -1.0"]),
    (["train", "--net-option", "latent_dim=0"], ["network 'conv': expected latent_dim of positive integers",
                                                 "found 0", "--net-option latent_dim=32"]),
    (["train", "--net", "dense", "--net-option", "hidden=[64,-1]"], ["expected hidden of positive integers",
                                                                    "found [64, -1]"]),
    (["train", "--net-option", "channels=[]"], ["network 'conv' cannot be built", "channels=[]",
                                                "check the --net-option values"]),
    (["train", "--net-option", "latnet_dim=8"], ["has no option 'latnet_dim'", "did you mean 'latent_dim'?"]),
    (["train", "--option", "reconstruction=l3"], ["unknown reconstruction loss 'l3'", "expected one of"]),
    (["train", "--device", "tpu9"], ["expected a device like auto, cpu or cuda", "'tpu9'"]),
])
def test_bad_options_from_the_command_line(fake_fashion, tmp_path, capsys, argv, parts):
    out = tmp_path / "r"
    extra = ["--data", str(fake_fashion), "--out", str(out)] + (["--no-progress"] if argv[0] != "data" else [])
    cli_error(capsys, argv + extra, *parts)
    assert not out.exists() or not (out / "model.safetensors").exists()  # nothing half-written


def test_noise_factor_out_of_range_from_python():
    raises(ConfigError, lambda: add_evaluation_noise(torch.zeros(1, 1, 2, 2), float("nan")),
           "expected a Gaussian noise factor in [0, 5]")


# ================================================================== training that goes bad

def test_nan_loss_names_the_term_and_step_and_keeps_the_last_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("denoising", (1, 12, 12))
    x = torch.rand(64, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(epochs=1, batch_size=16, progress=False)
    fit(model, x, None, cfg, run_dir=tmp_path)  # one good epoch: checkpoint + weights on disk
    good = {f: (tmp_path / f).read_bytes() for f in ("checkpoint.pt", "model.safetensors")}
    calls = {"n": 0}
    plain_loss = model.loss

    def loss_going_bad(x_in, x_target):  # a penalty that overflows at the 3rd step
        calls["n"] += 1
        terms = plain_loss(x_in, x_target)
        penalty = terms["loss"] * (float("inf") if calls["n"] == 3 else 0.0)
        return {**terms, "penalty": penalty, "loss": terms["loss"] + penalty}

    model.loss = loss_going_bad
    msg = raises(TrainingError, lambda: fit(model, x, None, TrainConfig(epochs=2, batch_size=16, progress=False),
                                            run_dir=tmp_path, resume=True),
                 "expected a finite loss", "found inf", "penalty", "epoch 2 step 3", "lower the learning rate",
                 "the last good checkpoint is kept")
    assert "reconstruction" not in msg.split("term(s)")[1].split(" at ")[0]  # only the term that went bad
    for f, before in good.items():
        assert (tmp_path / f).read_bytes() == before, f


# ================================================================== hostile files

class _Trap:
    """Unpickling this creates ``path``: proof that a pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_with_a_pickled_object_is_not_executed(fake_fashion, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "trap": _Trap(marker)}, out / "checkpoint.pt")
    cli_error(capsys, ["train", "--resume", "--epochs", "2", "--out", str(out), "--no-progress"],
              "expected a training checkpoint, could not read it", "UnpicklingError")
    assert not marker.exists()


def test_npz_with_a_pickled_object_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    arr = np.empty(1, dtype=object)
    arr[0] = _Trap(marker)
    np.savez(tmp_path / "evil.npz", x=arr)
    raises(DataError, lambda: data.load_npz(tmp_path / "evil.npz"), "without pickled objects")
    assert not marker.exists()
    assert pickle  # (the trap above is what pickle would run)


def test_paths_never_escape_the_run_directory(run_dir, tmp_path):
    for bad in ("../outside.json", "/etc/passwd", "figures/../../x"):
        raises(ConfigError, lambda: runs.inside(run_dir, bad), "expected a path inside", "which leads to",
               "may only refer to its own files")
    assert runs.inside(run_dir, "figures/a.png") == (run_dir / "figures/a.png").resolve()
    secret = tmp_path / "secret.txt"
    secret.write_text("private key")
    (run_dir / "figures").mkdir()
    (run_dir / "figures" / "samples.png").symlink_to(secret)
    raises(ConfigError, lambda: runs.inside(run_dir, "figures/samples.png"), "which leads to", "secret.txt")


def test_report_does_not_embed_a_linked_file(run_dir, tmp_path, capsys):
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN PRIVATE KEY-----")
    (run_dir / "figures").mkdir()
    (run_dir / "figures" / "evaluate_x.png").symlink_to(secret)
    cli_error(capsys, ["report", "--run", str(run_dir)], "evaluate_x.png", "which leads to", "id_rsa")
    assert not (run_dir / "report.html").exists()


def test_config_json_that_is_a_link_outside(run_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    os.replace(run_dir / "config.json", elsewhere)
    (run_dir / "config.json").symlink_to(elsewhere)
    raises(ConfigError, lambda: runs.read_config(run_dir), "config.json", "which leads to")


# ================================================================== outputs that cannot be written

def test_unwritable_output_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    raises(ConfigError, lambda: runs.write_json(blocker / "x.json", {}), "expected a writable folder",
           "choose another --out")
    target = tmp_path / "keep.json"
    runs.write_json(target, {"v": 1})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    raises(ConfigError, lambda: runs.write_json(target, {"v": 2}), "could not write", "No space left on device",
           "the previous file is kept")
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "keep.json"]  # no temporary file left behind


def test_output_folder_inside_a_file(fake_fashion, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    cli_error(capsys, ["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(tmp_path / "file" / "run"),
                       "--no-progress"], "expected a writable folder", "choose another --out")


def test_every_error_class_is_a_value_error():
    for cls in (ConfigError, DataError, DataNotFoundError, TrainingError):
        assert issubclass(cls, AelabError) and issubclass(cls, ValueError)
