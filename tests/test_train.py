import json

import pytest
import torch

from aelab import runs
from aelab.errors import ConfigError, TrainingError
from aelab.models import build_model
from aelab.train import TrainConfig, fit, train


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 12, 12, generator=g), torch.rand(32, 1, 12, 12, generator=g)


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("denoising", (1, 12, 12), net="conv")


def test_fit_logs_terms_and_learns(tmp_path):
    x, xv = _data()
    model = _model()
    hist = fit(model, x, xv, TrainConfig(epochs=3, batch_size=16, progress=False), run_dir=tmp_path)
    assert set(hist["train"]) == {"loss", "reconstruction"} and len(hist["train"]["loss"]) == 3
    assert len(hist["val"]["loss"]) == 3 and len(hist["seconds"]) == 3
    assert hist["train"]["loss"][-1] < hist["train"]["loss"][0]
    assert json.loads((tmp_path / "history.json").read_text()) == hist
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "model.safetensors").exists()


def test_same_seed_same_weights_and_resume_is_exact(tmp_path):
    x, xv = _data()
    cfg = TrainConfig(epochs=3, batch_size=16, progress=False, seed=5)
    full = _model()
    fit(full, x, xv, cfg, run_dir=tmp_path / "full")
    # stop in the middle of epoch 2 (as Ctrl-C or a kill after a checkpoint would), then resume
    part = _model()
    fit(part, x, xv, cfg, run_dir=tmp_path / "part", stop_after_steps=9)
    resumed = _model(seed=99)  # whatever the fresh weights, the checkpoint replaces them
    hist = fit(resumed, x, xv, cfg, run_dir=tmp_path / "part", resume=True)
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert hist["train"] == runs.load_history(tmp_path / "full")["train"]
    assert runs.load_history(tmp_path / "part")["train"] == runs.load_history(tmp_path / "full")["train"]


def test_bad_options():
    for kwargs, msg in (({"epochs": 0}, "epochs >= 1"), ({"batch_size": -3}, "batch size >= 1"),
                        ({"noise": "gaussian:9"}, "noise factor in"), ({"lr": 0.0}, "learning rate")):
        with pytest.raises(ConfigError, match=msg):
            TrainConfig(**kwargs).check()


def test_nan_loss_stops_cleanly(tmp_path):
    x, xv = _data()
    model = _model()
    real_loss, calls = model.loss, {"n": 0}

    def poisoned(x_in, x_target):  # the 8th training step (epoch 2, step 2) goes bad
        terms = real_loss(x_in, x_target)
        if model.training:
            calls["n"] += 1
            if calls["n"] == 8:
                terms = {k: v * float("nan") for k, v in terms.items()}
        return terms

    model.loss = poisoned
    with pytest.raises(TrainingError, match="reconstruction.*epoch 2 step 2.*last good checkpoint"):
        fit(model, x, xv, TrainConfig(epochs=3, batch_size=16, progress=False), run_dir=tmp_path)
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["epoch"] == 1  # the end of the last good epoch
    assert all(torch.isfinite(v).all() for v in payload["model"].values())


def test_train_api_on_fake_fashion(fake_fashion, tmp_path):
    model = train(kind="denoising", data=str(fake_fashion), out=str(tmp_path / "run"), epochs=2,
                  batch_size=16, progress=False)
    cfg = runs.read_config(tmp_path / "run")
    assert cfg["model"]["kind"] == "denoising" and cfg["train"]["epochs"] == 2
    loaded = runs.load_model(tmp_path / "run")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    # resume to more epochs continues the history
    train(data=str(fake_fashion), out=str(tmp_path / "run"), epochs=3, resume=True, progress=False)
    assert len(runs.load_history(tmp_path / "run")["train"]["loss"]) == 3


def test_onecycle_schedule_shape_and_resume_exactness(tmp_path):
    from aelab.train import learning_rate
    cfg = TrainConfig(lr=4e-3, schedule="onecycle")
    lrs = [learning_rate(cfg, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(4e-3 / 25) and max(lrs) == pytest.approx(4e-3, rel=1e-3)
    assert int(torch.tensor(lrs).argmax()) == 30 and lrs[-1] < 4e-3 / 100
    assert all(learning_rate(TrainConfig(lr=1e-3), s, 100) == 1e-3 for s in range(100))
    # the schedule is a function of the step, so resume still ends bit-identical
    x, xv = _data()
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, lr=4e-3, schedule="onecycle")
    full = _model()
    fit(full, x, xv, cfg, run_dir=tmp_path / "full")
    part = _model()
    fit(part, x, xv, cfg, run_dir=tmp_path / "part", stop_after_steps=4)
    resumed = _model()
    fit(resumed, x, xv, cfg, run_dir=tmp_path / "part", resume=True)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="schedule one of constant, onecycle"):
        TrainConfig(schedule="cosine").check()



def test_init_starts_from_a_runs_weights_and_checks_the_fit(fake_fashion, tmp_path):
    from aelab.train import _load_initial_weights

    train(kind="sparse", net="dense", data=str(fake_fashion), out=str(tmp_path / "a"), epochs=1,
          batch_size=16, progress=False, net_options={"latent_dim": 8}, sparsity_weight=1e-3)
    source = runs.load_model(tmp_path / "a")
    torch.manual_seed(7)
    model = build_model("sparse", (1, 28, 28), net="dense", net_options={"latent_dim": 8}, sparsity_weight=5e-2)
    assert not torch.equal(next(model.parameters()), next(source.parameters()))
    _load_initial_weights(model, tmp_path / "a")
    for (name, p), q in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(p, q), name
    assert model.sparsity_weight == 5e-2  # the new options stay
    # through train(): the run records where it started, and training moved on from the copy
    second = train(kind="sparse", net="dense", data=str(fake_fashion), out=str(tmp_path / "b"), epochs=1,
                   batch_size=16, lr=1e-6, progress=False, net_options={"latent_dim": 8}, sparsity_weight=5e-2,
                   init=str(tmp_path / "a"), seed=7)
    assert runs.read_config(tmp_path / "b")["initialised_from"] == str(tmp_path / "a")
    w0, w1 = next(source.parameters()), next(second.parameters())
    assert (w0 - w1).abs().max() < 1e-3  # lr 1e-6 for a few steps: still the copied weights, not a fresh draw
    with pytest.raises(ConfigError, match="same kind, network"):
        train(kind="sparse", net="dense", data=str(fake_fashion), out=str(tmp_path / "c"), epochs=1,
              progress=False, net_options={"latent_dim": 16}, init=str(tmp_path / "a"))


def test_freeze_encoder_keeps_the_codes_and_fits_a_new_decoder(fake_fashion, tmp_path):
    common = dict(kind="undercomplete", net="dense", data=str(fake_fashion), epochs=2, batch_size=16, progress=False)
    train(**common, out=str(tmp_path / "a"), net_options={"latent_dim": 8, "hidden": [64, 32]})
    source = runs.load_model(tmp_path / "a").state_dict()
    # a decoder of other sizes, fitted to the run's codes: the encoder is copied and stays as it was
    model = train(**common, out=str(tmp_path / "b"), lr=1e-2, init=str(tmp_path / "a"), freeze_encoder=True,
                  net_options={"latent_dim": 8, "hidden": [64, 32], "decoder_hidden": [16]})
    state = model.state_dict()
    encoder = [k for k in state if k.startswith("encoder.")]
    assert encoder and all(torch.equal(state[k], source[k]) for k in encoder)
    assert [tuple(state[k].shape) for k in state if k.startswith("decoder.") and k.endswith("weight")] == \
        [(16, 8), (784, 16)]
    assert runs.read_config(tmp_path / "b")["train"]["freeze_encoder"] is True
    # the same network: everything is copied, the decoder trains on, the encoder does not
    model = train(**common, out=str(tmp_path / "c"), lr=1e-2, init=str(tmp_path / "a"), freeze_encoder=True,
                  net_options={"latent_dim": 8, "hidden": [64, 32]})
    state = model.state_dict()
    assert all(torch.equal(state[k], source[k]) for k in encoder)
    assert not torch.equal(state["decoder.0.weight"], source["decoder.0.weight"])
    # an encoder that does not fit, or another decoder without --freeze-encoder: one-line errors
    with pytest.raises(ConfigError, match="expected its encoder to fit this model's"):
        train(**common, out=str(tmp_path / "d"), init=str(tmp_path / "a"), freeze_encoder=True,
              net_options={"latent_dim": 8, "hidden": [48, 32]})
    with pytest.raises(ConfigError, match="same kind, network"):
        train(**common, out=str(tmp_path / "e"), init=str(tmp_path / "a"),
              net_options={"latent_dim": 8, "hidden": [64, 32], "decoder_hidden": [16]})


def test_adam_leaves_frozen_weights_out_and_a_model_without_an_encoder_is_refused():
    from aelab.device import adam
    from aelab.loop import freeze_encoder

    model = build_model("undercomplete", (1, 12, 12), net="dense", net_options={"latent_dim": 4, "hidden": [8]})
    freeze_encoder(model)
    trained = {id(p) for group in adam(model, 1e-3).param_groups for p in group["params"]}
    assert trained == {id(p) for name, p in model.named_parameters() if not name.startswith("encoder.")}
    del model.encoder
    with pytest.raises(ConfigError, match="expected a model with an encoder"):
        freeze_encoder(model)


def test_train_run_writes_the_run_and_discards_a_stale_checkpoint(tmp_path):
    from aelab.errors import AelabError
    from aelab.train import train_run

    x, xv = _data()
    cfg = TrainConfig(epochs=1, batch_size=16, progress=False, seed=4)
    spec = {"kind": "denoising", "input_shape": (1, 12, 12), "net": "conv"}
    runs.save_model(_model(seed=1), tmp_path)  # an earlier run of aelab's, with its training state
    (tmp_path / "checkpoint.pt").write_bytes(b"a previous run's state")
    with pytest.raises(AelabError, match="expected training images of shape"):  # refused before anything is removed
        train_run(spec, torch.rand(8, 1, 20, 20), None, cfg, tmp_path, overwrite=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"a previous run's state"
    model, hist = train_run(spec, x, xv, cfg, tmp_path, record=cfg.record("somewhere", 96), extra={"command": "x"},
                            overwrite=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() != b"a previous run's state"  # never resumed from
    saved = runs.read_config(tmp_path)
    assert saved["train"] == cfg.record("somewhere", 96) and "progress" not in saved["train"]
    assert saved["command"] == "x" and len(hist["train"]["loss"]) == 1
    # a spec is built right after torch.manual_seed(config.seed): the same weights as a model built so
    same, _ = train_run(_model(seed=4), x, xv, cfg, tmp_path / "b")
    for a, b in zip(model.state_dict().values(), same.state_dict().values()):
        assert torch.equal(a, b)
    assert runs.read_config(tmp_path / "b")["train"] == cfg.record()
