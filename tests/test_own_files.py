"""Careless and hostile use, round three: never lose a user's file. ``--overwrite`` removes the
old run only once the new one has passed every check; aelab knows its own runs by a marker
and its own files by name and removes nothing else; a ``zoo:NAME`` copy is checked against
the shipped weights; a lock that cannot be asked is taken over only when the user says so."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aelab import runlock, runs
from aelab.cli import main
from aelab.errors import AelabError, ConfigError
from aelab.models import build_model

from test_errors import cli_error


def _train(fake_fashion, out, *extra) -> None:
    argv = ["train", "--data", str(fake_fashion), "--epochs", "1", "--batch-size", "16", "--out", str(out),
            "--no-progress", *extra]
    assert main(argv) == 0


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (lock files aside) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != runlock.LOCK}


@pytest.fixture
def trained(fake_fashion, tmp_path, capsys):
    """A trained run with the files a user's later commands add (evaluation, a report, figures)."""
    run = tmp_path / "run"
    _train(fake_fashion, run)
    (run / "evaluation.json").write_text("{}")
    (run / "report.html").write_text("<p>report</p>")
    (run / "figures").mkdir()
    (run / "figures" / "denoised.png").write_bytes(b"aelab's figure")
    capsys.readouterr()
    return run


# ================================================================== 1. --overwrite checks everything first

@pytest.mark.parametrize("bad, where", [
    (["--net-option", "latnet_dim=4"], "latnet_dim"),                  # a typo in a network option
    (["--option", "reconstrution=mse"], "reconstrution"),              # a typo in a kind's option
    (["--kind", "sparse", "--option", "penalty=kl2"], "penalty"),      # a bad value
    (["--init", "no/such/run"], "no/such/run"),                        # an init run that is not there
], ids=["net-option", "option", "option-value", "init-missing"])
def test_overwrite_with_a_mistake_keeps_the_old_run(trained, fake_fashion, capsys, bad, where):
    before = _snapshot(trained)
    argv = ["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(trained), "--no-progress",
            "--overwrite", *bad]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("aelab: error: ") and where in err[-1]
    assert _snapshot(trained) == before  # weights, history, evaluation, report and figures all still there


def test_overwrite_with_an_init_of_another_kind_or_the_same_folder_keeps_the_old_run(trained, fake_fashion,
                                                                                      tmp_path, capsys):
    other = tmp_path / "vae"
    _train(fake_fashion, other, "--kind", "variational", "--net", "dense")
    before = _snapshot(trained)
    base = ["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(trained), "--no-progress", "--overwrite"]
    cli_error(capsys, base + ["--init", str(other)], "has kind 'variational'")
    assert _snapshot(trained) == before
    cli_error(capsys, base + ["--init", str(trained)], "--init", "the run --out replaces")
    assert _snapshot(trained) == before


def test_overwrite_with_data_of_the_wrong_shape_keeps_the_old_run_from_python(tmp_path):
    from aelab.train import TrainConfig, train_run

    torch.manual_seed(0)
    old = runs.save_model(build_model("denoising", (1, 12, 12)), tmp_path / "run")
    (old / "history.json").write_text('{"train": {}}')
    before = _snapshot(old)
    spec = {"kind": "denoising", "input_shape": (1, 12, 12), "net": "conv"}
    with pytest.raises(AelabError, match="expected training images of shape"):
        train_run(spec, torch.rand(8, 1, 20, 20), None, TrainConfig(epochs=1, progress=False), old, overwrite=True)
    assert _snapshot(old) == before


# ================================================================== 2. only aelab's own files, by name

def test_a_model_folder_aelab_did_not_write_is_never_trained_over(fake_fashion, tmp_path, capsys):
    hf = tmp_path / "hf-model"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["ViTModel"], "hidden_size": 768}))
    (hf / "model.safetensors").write_bytes(b"their weights")
    before = _snapshot(hf)
    for extra in ([], ["--overwrite"]):
        cli_error(capsys, ["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(hf), "--no-progress",
                           *extra], "config.json", "that aelab did not write", "choose another --out")
        assert _snapshot(hf) == before


def test_the_users_files_of_aelabs_names_in_a_folder_without_a_run_are_kept(fake_fashion, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "history.json").write_text('{"my": "history"}')
    (folder / "checkpoint.pt").write_bytes(b"my checkpoint")
    before = _snapshot(folder)
    cli_error(capsys, ["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(folder), "--no-progress"],
              "history.json", "that aelab did not write", "move them away or choose another --out")
    assert _snapshot(folder) == before
    from aelab import ownership
    from aelab.train import check_new_run
    with pytest.raises(ConfigError, match="aelab did not write"):  # --overwrite does not change that
        check_new_run(folder, overwrite=True)
    (folder / "config.json").write_text('{"name": "not aelab\'s"}')
    with pytest.raises(ConfigError, match="a config.json that aelab did not write; nothing was removed"):
        ownership.clear_run(folder)
    assert (folder / "history.json").read_text() == '{"my": "history"}'


def test_overwrite_removes_aelabs_figures_by_name_and_keeps_the_users(trained, fake_fashion, capsys):
    (trained / "figures" / "my-notes.png").write_bytes(b"mine")
    (trained / "notes.txt").write_text("mine")
    _train(fake_fashion, trained, "--overwrite")
    assert (trained / "figures" / "my-notes.png").read_bytes() == b"mine"
    assert not (trained / "figures" / "denoised.png").exists()  # aelab's own, from the old run
    assert (trained / "notes.txt").read_text() == "mine"
    assert not (trained / "evaluation.json").exists() and not (trained / "report.html").exists()


def test_an_empty_out_or_the_root_is_refused(fake_fashion, tmp_path, capsys, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    cli_error(capsys, ["train", "--data", str(fake_fashion), "--epochs", "1", "--out", "", "--no-progress"],
              "expected a folder for --out, found an empty path")
    cli_error(capsys, ["data", "show", "--data", str(fake_fashion), "--out", ""], "found an empty path")
    cli_error(capsys, ["train", "--data", str(fake_fashion), "--epochs", "1", "--out", "/", "--no-progress"],
              "found the filesystem's root")
    assert os.listdir(here) == []  # nothing written in the current folder
    from aelab.train import TrainConfig, train_run
    with pytest.raises(ConfigError, match="empty path"):
        train_run({"kind": "denoising", "input_shape": (1, 12, 12)}, torch.rand(4, 1, 12, 12), None,
                  TrainConfig(epochs=1, progress=False), "")


# ================================================================== 4. zoo:NAME is the shipped model

def test_a_zoo_copy_that_is_not_the_shipped_model_is_refused(fake_fashion, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "runs" / "zoo-vae-32"
    _train(fake_fashion, mine)  # the user's own denoiser, under the zoo copy's name
    capsys.readouterr()
    before = _snapshot(mine)
    cli_error(capsys, ["report", "--run", "zoo:vae-32"], "runs/zoo-vae-32", "differs from the shipped one",
              "move runs/zoo-vae-32 away")
    assert _snapshot(mine) == before
    # the folder gone, the copy is made from the shipped files and the report describes the VAE
    os.rename(mine, tmp_path / "runs" / "mine")
    assert main(["report", "--run", "zoo:vae-32"]) == 0
    copy = runs.read_config(tmp_path / "runs" / "zoo-vae-32")
    assert copy["model"]["kind"] == "variational"
    assert (tmp_path / "runs" / "zoo-vae-32" / "model.safetensors").read_bytes() == \
        (runs.locate("zoo:vae-32") / "model.safetensors").read_bytes()
    assert main(["report", "--run", "zoo:vae-32"]) == 0  # the same copy again: trusted


# ================================================================== 5. locks that cannot be asked

def _write_lock(run: Path, **info) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    lock = run / runlock.LOCK
    lock.write_text(json.dumps({"command": "aelab train --out x", "since": "2026-01-02 03:04:05", **info}))
    return lock


def test_a_lock_of_another_host_names_it_and_is_taken_over_only_when_asked(fake_fashion, tmp_path, capsys):
    run = tmp_path / "run"
    lock = _write_lock(run, pid=4242, host="old-container-name")
    line = cli_error(capsys, ["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(run),
                              "--no-progress"], "process 4242", "on host old-container-name",
                     "since 2026-01-02 03:04:05", str(lock), "--break-lock")
    assert "remove" in line and lock.exists()
    _train(fake_fashion, run, "--break-lock")
    err = capsys.readouterr().err
    assert "took over the lock" in err and "old-container-name" in err
    assert runs.has_config(run) and not lock.exists()


def test_a_lock_whose_pid_is_now_another_process_is_taken_over(fake_fashion, tmp_path, capsys):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tick = runlock._start_tick(other.pid)
        if tick is None:
            pytest.skip("no /proc here to tell when a process started")
        run = tmp_path / "run"
        # the lock names a live pid that started at another time: that process is not the writer
        _write_lock(run, pid=other.pid, host=socket.gethostname(), boot=runlock._boot_id(), start=tick + 1)
        _train(fake_fashion, run)
        # the same pid and start: a live writer, refused even with --break-lock
        _write_lock(run, pid=other.pid, host=socket.gethostname(), boot=runlock._boot_id(), start=tick)
        cli_error(capsys, ["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(run), "--no-progress",
                           "--overwrite", "--break-lock"], f"process {other.pid}", "which is alive")
    finally:
        other.kill()
        other.wait()
