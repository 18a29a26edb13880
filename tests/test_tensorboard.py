"""--tensorboard: the loop's TensorBoard callback (read back from the event files) and embed's projector files."""

import importlib.util

import pytest
import torch

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

import aelab.tensorboard  # noqa: E402
from aelab import runs  # noqa: E402
from aelab.cli import main  # noqa: E402
from aelab.embed import embed  # noqa: E402
from aelab.errors import ConfigError  # noqa: E402
from aelab.models import build_model  # noqa: E402
from aelab.train import TrainConfig, fit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:the trained model's output is worse")  # a few steps on noise


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(96, 1, 12, 12, generator=g), torch.rand(32, 1, 12, 12, generator=g)


def _model():
    torch.manual_seed(0)
    return build_model("denoising", (1, 12, 12), net="conv")


def _events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _steps(acc, tag) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


CFG = dict(epochs=2, batch_size=8, progress=False, seed=4)  # 96 images: 12 steps an epoch, 24 in all


def test_a_run_logs_terms_per_step_and_epoch_the_lr_an_image_grid_and_hparams(tmp_path):
    x, xv = _data()
    history = fit(_model(), x, xv, TrainConfig(**CFG, tensorboard=True, optimizer="adamw"), run_dir=tmp_path)
    acc = _events(tmp_path)
    scalars = set(acc.Tags()["scalars"])
    assert {"step/loss", "step/reconstruction", "step/lr", "train/loss", "train/reconstruction", "val/loss",
            "val/reconstruction", "hparam/output_psnr", "hparam/input_psnr", "hparam/best_val_loss"} <= scalars
    every = aelab.tensorboard.EVERY
    assert _steps(acc, "step/loss") == list(range(every, 25, every))  # every EVERY steps: 10, 20
    assert _steps(acc, "train/loss") == _steps(acc, "val/loss") == [12, 24]  # each epoch's end
    assert [e.value for e in acc.Scalars("val/loss")] == pytest.approx(history["val"]["loss"])
    assert [e.value for e in acc.Scalars("step/lr")] == pytest.approx([1e-3, 1e-3])
    assert acc.Scalars("hparam/output_psnr")[0].value == pytest.approx(history["quality"]["output_psnr"], abs=1e-3)
    images = acc.Images("images/noisy_output_clean")
    assert [e.step for e in images] == [12, 24]
    pad = 2  # 8 images of 12x12 in a row, three rows (noisy, output, clean)
    assert (images[0].width, images[0].height) == (pad + 8 * (12 + pad), pad + 3 * (12 + pad))
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optimizer"].string_value == "adamw" and hparams["epochs"].number_value == 2
    assert hparams["kind"].string_value == "denoising"


def test_tensorboard_leaves_the_weights_alone_and_a_resumed_run_logs_each_step_once(tmp_path):
    x, xv = _data()
    plain = _model()
    fit(plain, x, xv, TrainConfig(**CFG), run_dir=tmp_path / "plain")
    cut = _model()
    cfg = TrainConfig(**CFG, tensorboard=True)
    fit(cut, x, xv, cfg, run_dir=tmp_path / "cut", stop_after_steps=15)  # inside epoch 2, past step 10
    checkpoint = (tmp_path / "cut" / "checkpoint.pt").read_bytes()
    fit(_model(), x, xv, cfg, run_dir=tmp_path / "cut", resume=True)  # logs steps 20 and 24 ...
    (tmp_path / "cut" / "checkpoint.pt").write_bytes(checkpoint)  # ... then is "killed" before its checkpoint
    resumed = _model()
    fit(resumed, x, xv, cfg, run_dir=tmp_path / "cut", resume=True)
    for (k, a), b in zip(plain.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    acc = _events(tmp_path / "cut")  # what was logged past the checkpoint is hidden: each step once
    assert _steps(acc, "step/loss") == [10, 20] and _steps(acc, "train/loss") == [12, 24]
    assert _steps(acc, "hparam/output_psnr") == [24]
    assert len(list((tmp_path / "cut" / "tensorboard").glob("events.out.tfevents.*"))) == 3


def test_the_command_line_writes_events_and_overwrite_removes_only_aelabs(fake_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(fake_fashion), "--epochs", "1", "--batch-size", "16", "--out", str(out),
            "--no-progress", "--tensorboard"]
    assert main(argv) == 0
    assert runs.read_config(out)["train"]["tensorboard"] is True
    first = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(first) == 1 and _steps(_events(out), "train/loss") == [4]
    (out / "tensorboard" / "notes.txt").write_text("mine")
    assert main(argv + ["--overwrite"]) == 0
    assert not first[0].exists() and (out / "tensorboard" / "notes.txt").read_text() == "mine"
    assert main(argv[:-1] + ["--overwrite", "--no-tensorboard"]) == 0  # no events now; the user's file stays
    assert not list((out / "tensorboard").glob("events.*")) and (out / "tensorboard" / "notes.txt").exists()


def test_embed_writes_the_codes_labels_and_thumbnails_for_the_projector(fake_fashion, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(fake_fashion), "--epochs", "1", "--batch-size", "16", "--out", str(run),
                 "--no-progress", "--net", "dense", "--net-option", "latent_dim=6"]) == 0
    entry = embed(run=str(run), method="pca", tensorboard=True, progress=False)
    folder = run / "tensorboard" / "embedding_pca"
    assert "tensorboard/embedding_pca" in entry["files"]
    config = (folder / "projector_config.pbtxt").read_text()
    assert "tensor_path" in config and "metadata.tsv" in config and "sprite.png" in config
    tensors = next(folder.glob("*/*/tensors.tsv")).read_text().splitlines()
    assert len(tensors) == 32 and len(tensors[0].split("\t")) == 6  # the 32 test images' 6-d codes
    metadata = next(folder.glob("*/*/metadata.tsv")).read_text().splitlines()
    assert metadata[0] == "class\tindex" and len(metadata) == 33 and metadata[1].split("\t")[1] == "0"
    from PIL import Image  # the thumbnails: a 6 x 6 grid of 28 px images
    assert Image.open(next(folder.glob("*/*/sprite.png"))).size == (6 * 28, 6 * 28)
    embed(run=str(run), method="pca", tensorboard=True, progress=False)  # again: replaced, not refused
    assert main(["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(run), "--no-progress",
                 "--overwrite"]) == 0
    assert not (run / "tensorboard").exists()  # aelab's projector files went, and the folders they were in


def test_without_the_package_the_flag_is_refused_in_one_line(monkeypatch, fake_fashion, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'aelab\[tensorboard\]'"):
        TrainConfig(tensorboard=True).check()
    assert main(["train", "--data", str(fake_fashion), "--out", str(tmp_path / "r"), "--tensorboard"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tensorboard" in err and not (tmp_path / "r").exists()


def test_reproduce_passes_tensorboard_through(fake_fashion, tmp_path):
    out = tmp_path / "rep"
    assert main(["reproduce", "--data", str(fake_fashion), "--epochs", "1", "--out", str(out), "--no-progress",
                 "--tensorboard", "--threads", "1"]) == 0
    assert _steps(_events(out), "val/loss") == [2]  # 64 images in batches of 32
