"""Training controls: --keep best, --patience, --optimizer with --weight-decay, --config replay; resume with each."""

import importlib
import json

import pytest
import torch
from safetensors.torch import load_file

import aelab.loop
from aelab import runs
from aelab.checkpoint import TrainState
from aelab.cli import main
from aelab.device import optimizer
from aelab.errors import ConfigError
from aelab.models import build_model
from aelab.train import TrainConfig, fit, train

pytestmark = pytest.mark.filterwarnings("ignore:the trained model's output is worse")  # a few steps on tiny data

TRAIN_MODULE = importlib.import_module("aelab.train")  # the module (the package's aelab.train is the function)
VAL = [0.5, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8]  # the validation loss each epoch reports: best at epoch 2


@pytest.fixture
def shaped(monkeypatch):
    """Each epoch's validation loss set to VAL (as a function of the epoch, so a resumed run sees the same)."""
    real = aelab.loop._Loop.end_epoch

    def end_epoch(self, state, sums, t0):
        real(self, state, sums, t0)
        state.history["val"]["loss"][-1] = VAL[state.epoch - 1]

    monkeypatch.setattr(aelab.loop._Loop, "end_epoch", end_epoch)


def _argv(fake_fashion, out, *extra, epochs=3):
    return ["train", "--data", str(fake_fashion), "--epochs", str(epochs), "--batch-size", "16", "--out", str(out),
            "--no-progress", *extra]


def _weights(path) -> dict:
    return load_file(str(path))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_keep_best_keeps_the_best_epochs_weights_which_the_run_loads(fake_fashion, tmp_path, shaped):
    out = tmp_path / "run"
    assert main(_argv(fake_fashion, out, "--keep", "best")) == 0
    config = runs.read_config(out)
    assert config["weights"] == "best" and config["train"]["keep"] == "best"
    best, last = _weights(out / "model.best.safetensors"), _weights(out / "model.safetensors")
    assert not _same(best, last)  # epoch 2's weights beside epoch 3's
    assert _same(runs.load_model(out).state_dict(), best)
    history = runs.load_history(out)
    # the quality line is of the weights the run loads; the same model as a run stopped at epoch 2
    model = train(data=str(fake_fashion), out=str(tmp_path / "two"), epochs=3, batch_size=16, keep="best",
                  progress=False)
    assert _same({k: v for k, v in model.state_dict().items()}, best) and history["quality"]["images"] == 32
    assert main(_argv(fake_fashion, out, "--overwrite")) == 0  # a run without it: the best file goes
    assert not (out / "model.best.safetensors").exists() and "weights" not in runs.read_config(out)


def test_keep_best_and_patience_need_validation_and_a_run_directory(tmp_path):
    x = torch.rand(16, 1, 12, 12)
    torch.manual_seed(0)
    model = build_model("denoising", (1, 12, 12))
    with pytest.raises(ConfigError, match="expected validation images for --patience"):
        fit(model, x, None, TrainConfig(epochs=1, patience=2, progress=False), run_dir=tmp_path)
    with pytest.raises(ConfigError, match="expected a run directory for --keep best"):
        fit(model, x, x, TrainConfig(epochs=1, keep="best", progress=False))
    for bad, message in (({"keep": "first"}, "keep one of last, best"), ({"patience": 0}, "patience >= 1"),
                         ({"optimizer": "lbfgs"}, "optimizer one of adam, adamw, sgd"),
                         ({"weight_decay": -1.0}, "weight decay >= 0")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig(**bad).check()


def test_the_best_epoch_follows_from_the_history():
    state = TrainState(history={"train": {}, "val": {"loss": [0.3, float("nan"), 0.2, 0.2, 0.4]}, "seconds": []})
    assert state.best() == (0.2, 3) and TrainState().best() == (None, 0)


def test_patience_stops_early_says_so_and_a_resume_keeps_it(fake_fashion, tmp_path, shaped, capsys):
    out = tmp_path / "run"
    assert main(_argv(fake_fashion, out, "--patience", "2", epochs=6)) == 0
    err = capsys.readouterr().err
    assert "stopped early after epoch 4/6: no better validation loss for 2 epochs (best 0.2 at epoch 2)" in err
    history = runs.load_history(out)
    assert len(history["train"]["loss"]) == 4
    assert history["stopped_early"] == {"epoch": 4, "best_epoch": 2, "best_val_loss": 0.2, "patience": 2}
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0  # still no better: nothing trains
    assert "stopped early after epoch 4/6" in capsys.readouterr().err
    assert len(runs.load_history(out)["train"]["loss"]) == 4
    assert main(["train", "--resume", "--out", str(out), "--no-progress", "--patience", "9"]) == 0
    history = runs.load_history(out)
    assert len(history["train"]["loss"]) == 6 and "stopped_early" not in history


def test_optimizers_and_weight_decay(fake_fashion, tmp_path):
    torch.manual_seed(0)
    model = build_model("denoising", (1, 12, 12))
    sgd = optimizer(model, "sgd", 0.01, 1e-4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    assert isinstance(optimizer(model, "adamw", 1e-3, 0.01), torch.optim.AdamW)
    digests = {}
    for name, extra in (("adam", []), ("adam-wd", ["--weight-decay", "0.1"]), ("adamw", ["--optimizer", "adamw"]),
                        ("adamw-wd", ["--optimizer", "adamw", "--weight-decay", "0.1"]), ("sgd", ["--optimizer", "sgd"])):
        assert main(_argv(fake_fashion, tmp_path / name, *extra, epochs=2)) == 0
        train_config = runs.read_config(tmp_path / name)["train"]
        assert train_config["optimizer"] == name.split("-")[0]
        assert train_config["weight_decay"] == (0.1 if name.endswith("-wd") else 0.0)
        history = runs.load_history(tmp_path / name)
        assert all(v == v for v in history["train"]["loss"])  # it trained (finite)
        digests[name] = _weights(tmp_path / name / "model.safetensors")
    assert not _same(digests["adam"], digests["adam-wd"])  # weight decay changes the weights
    assert not _same(digests["adamw"], digests["adamw-wd"])
    assert not _same(digests["adam"], digests["sgd"])


def test_config_replays_a_run_bit_identically(fake_fashion, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(_argv(fake_fashion, first, "--seed", "3", "--lr", "2e-3", "--optimizer", "adamw", "--weight-decay",
                      "0.01", "--net", "dense", "--net-option", "latent_dim=8", "--option", "reconstruction=mse",
                      "--limit", "48", epochs=2)) == 0
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "config.json"), "--out", str(again), "--no-progress"]) == 0
    assert _same(_weights(first / "model.safetensors"), _weights(again / "model.safetensors"))
    a, b = runs.read_config(first), runs.read_config(again)
    assert a["model"] == b["model"] and a["train"] == b["train"]
    shorter = tmp_path / "shorter"  # a flag given overrides the run's setting
    assert main(["train", "--config", str(first), "--out", str(shorter), "--epochs", "1", "--no-progress"]) == 0
    assert runs.read_config(shorter)["train"]["epochs"] == 1 and runs.read_config(shorter)["train"]["seed"] == 3
    assert runs.read_config(shorter)["model"] == a["model"]
    assert main(["train", "--config", str(first / "config.json"), "--resume", "--out", str(first)]) != 0
    assert "expected --resume or --config, found both" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--optimizer", "sgd"], ["--optimizer", "adamw", "--weight-decay", "0.05"],
                                   ["--keep", "best"], ["--patience", "1"], ["--tensorboard"]],
                         ids=lambda f: " ".join(f))
def test_resume_with_each_control_gives_the_weights_of_an_uninterrupted_run(fake_fashion, tmp_path, shaped, flags,
                                                                            monkeypatch):
    if "--tensorboard" in flags:
        pytest.importorskip("tensorboard")
    argv = _argv(fake_fashion, tmp_path / "whole", *flags, epochs=4)  # 4 steps an epoch
    assert main(argv) == 0
    real_fit = aelab.loop.fit
    monkeypatch.setattr(TRAIN_MODULE, "fit", lambda *a, **kw: real_fit(*a, **{**kw, "stop_after_steps": 6}))
    assert main(_argv(fake_fashion, tmp_path / "cut", *flags, epochs=4)) == 0
    monkeypatch.setattr(TRAIN_MODULE, "fit", real_fit)
    assert main(["train", "--resume", "--out", str(tmp_path / "cut"), "--no-progress"]) == 0
    for name in ("model.safetensors", "model.best.safetensors"):
        whole, cut = tmp_path / "whole" / name, tmp_path / "cut" / name
        assert whole.exists() == cut.exists()
        if whole.exists():
            assert _same(_weights(whole), _weights(cut)), name
    h_whole, h_cut = runs.load_history(tmp_path / "whole"), runs.load_history(tmp_path / "cut")
    assert h_whole["train"] == h_cut["train"] and h_whole.get("stopped_early") == h_cut.get("stopped_early")
    assert runs.read_config(tmp_path / "whole").get("weights") == runs.read_config(tmp_path / "cut").get("weights")
    if "--patience" in flags:
        assert h_cut["stopped_early"]["epoch"] == 3
    json.dumps(h_cut)  # history.json stays plain JSON
