"""Careless and hostile use, round two: links out of a run directory, sizes that cannot fit in
memory, a folder that is not there, a full disk, JSON nested too deeply. Each case ends in
one line saying what was expected, what was found and how to fix it; nothing is left
half-written and nothing outside a run is read."""

from __future__ import annotations

import errno
import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch

from aelab import arrays, checkpoint, data, runs, streaming
from aelab.cli import main
from aelab.errors import ConfigError, DataError
from aelab.models import build_model

from conftest import write_idx
from imagefiles import write_png
from test_errors import cli_error, raises


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    model = build_model("denoising", (1, 12, 12))
    return runs.save_model(model, tmp_path / "run", train_config={"epochs": 1})


def _link_out(run_dir, name: str, text: str | bytes):
    """Replace ``run_dir/name`` by a link to a file outside the run holding ``text``."""
    outside = run_dir.parent / f"outside-{name}"
    if isinstance(text, bytes):
        outside.write_bytes(text)
    else:
        outside.write_text(text)
    if os.path.lexists(run_dir / name):
        (run_dir / name).unlink()
    (run_dir / name).symlink_to(outside)
    return outside


# ================================================================== 1. links out of a run

@pytest.mark.parametrize("name", ["metrics.json", "history.json"])
def test_report_refuses_json_that_links_out_of_the_run(run_dir, capsys, name):
    secret = json.dumps({"summary": {"text": "PRIVATE-SECRET"}, "train": {"loss": [1.0]}, "val": {}})
    _link_out(run_dir, name, secret)
    cli_error(capsys, ["report", "--run", str(run_dir)], name, "which leads to", f"outside-{name}")
    assert not (run_dir / "report.html").exists()


def test_every_reader_of_a_run_refuses_a_link_out(run_dir):
    model = build_model("denoising", (1, 12, 12))
    weights = (run_dir / runs.WEIGHTS).read_bytes()
    _link_out(run_dir, runs.WEIGHTS, weights)
    raises(ConfigError, lambda: runs.load_weights(model, run_dir / runs.WEIGHTS), "model.safetensors", "which leads to")
    raises(ConfigError, lambda: runs.load_model(run_dir), "model.safetensors", "which leads to")
    _link_out(run_dir, runs.HISTORY, "{}")
    raises(ConfigError, lambda: runs.load_history(run_dir), "history.json", "which leads to")
    _link_out(run_dir, runs.METRICS, "{}")
    raises(ConfigError, lambda: runs.update_metrics(run_dir, x=1), "metrics.json", "which leads to")
    assert (run_dir / runs.METRICS).is_symlink()  # not replaced either
    _link_out(run_dir, "rd.json", "{}")
    raises(ConfigError, lambda: runs.read_json(run_dir / "rd.json"), "rd.json", "which leads to")
    config = (run_dir / runs.CONFIG).read_text()
    _link_out(run_dir, runs.CONFIG, config)
    raises(ConfigError, lambda: runs.read_config(run_dir), "config.json", "which leads to")


def test_resume_refuses_a_checkpoint_that_links_out(run_dir):
    model = build_model("denoising", (1, 12, 12))
    opt = torch.optim.Adam(model.parameters())
    gens = torch.Generator(), torch.Generator()
    checkpoint.save_checkpoint(run_dir.parent / "elsewhere.pt", model, opt, checkpoint.TrainState(), *gens)
    (run_dir / runs.CHECKPOINT).symlink_to(run_dir.parent / "elsewhere.pt")
    raises(ConfigError, lambda: checkpoint.load_checkpoint(run_dir / runs.CHECKPOINT, model, opt, *gens),
           "checkpoint.pt", "which leads to")


def test_links_inside_the_run_are_still_read(run_dir):
    (run_dir / "h.json").write_text('{"train": {}}')
    (run_dir / runs.HISTORY).symlink_to("h.json")
    assert runs.load_history(run_dir) == {"train": {}}


# ================================================================== 8. small ones

def test_json_nested_too_deeply_says_so(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("[" * 100000)
    raises(ConfigError, lambda: runs.read_json(path), "metrics.json", "nested too deeply", "levels",
           "retrain or restore it")


def _disk_full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_on_a_new_file_does_not_claim_a_previous_one(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _disk_full)
    msg = raises(ConfigError, lambda: runs.write_json(tmp_path / "new.json", {}), "could not write", "new.json",
                 "No space left on device", "nothing was written", "free some disk space")
    assert "previous file" not in msg
    assert list(tmp_path.iterdir()) == []


def test_full_disk_leaves_no_half_run_behind(tmp_path, monkeypatch, fake_fashion, capsys):
    model = build_model("denoising", (1, 12, 12))
    monkeypatch.setattr(os, "fsync", _disk_full)
    raises(ConfigError, lambda: runs.save_model(model, tmp_path / "runs" / "new"), "config.json",
           "No space left on device", "nothing was written")
    assert not (tmp_path / "runs").exists()
    out = tmp_path / "cli-run"
    cli_error(capsys, ["train", "--data", str(fake_fashion), "--epochs", "1", "--out", str(out), "--no-progress"],
              "could not write", "nothing was written", "free some disk space")
    assert not out.exists()
    existing = tmp_path / "existing"  # a folder the user made: kept, but nothing half-written in it
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    raises(ConfigError, lambda: runs.save_model(model, existing), "nothing was written")
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_full_disk_on_the_weights_keeps_an_existing_run(run_dir, monkeypatch):
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    monkeypatch.setattr(os, "fsync", _disk_full)
    raises(ConfigError, lambda: runs.save_model(build_model("denoising", (1, 12, 12)), run_dir),
           "the previous file is kept")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


# ================================================================== 3. what cannot fit in memory

def _folder(tmp_path, n=3, side=8):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        write_png(folder / f"{i}.png", np.full((side, side), 40 * i, np.uint8))
    return folder


def test_absurd_size_is_refused_before_anything_is_read(tmp_path, capsys):
    folder = _folder(tmp_path)
    out = tmp_path / "run"
    cli_error(capsys, ["train", "--data", str(folder), "--size", "100000,100000", "--out", str(out), "--no-progress"],
              "expected a size H,W of at most 4096 pixels a side", "found 100000,100000", "smaller --size")
    assert not out.exists()
    raises(ConfigError, lambda: data.load_image_folder(folder, size=(4097, 28)), "at most 4096", "found 4097,28")
    raises(ConfigError, lambda: data.load_image_folder(folder, size=(-3, 28)), "two positive integers", "found -3,28")
    assert data.load_image_folder(folder, size=(4096, 1)).x.shape == (3, 1, 4096, 1)


def test_image_folder_that_cannot_fit_in_memory(tmp_path, monkeypatch, capsys):
    folder = _folder(tmp_path, n=3, side=8)
    monkeypatch.setattr(arrays, "available_memory", lambda: 100_000)
    read = []
    monkeypatch.setattr(streaming, "load_image", lambda *a, **k: read.append(a) or np.zeros((8, 8), np.float32))
    msg = raises(DataError, lambda: data.load_image_folder(folder, size=(100, 100)), "expected data that fits in memory",
                 "3 images of 1x100x100", "would need 0.1 MB", "smaller --size H,W or --limit N")
    assert not read, "refused before any image was decoded"
    # training streams the folder (never held whole): what cannot fit is its step, refused before any work
    cli_error(capsys, ["train", "--data", str(folder), "--size", "100,100", "--out", str(tmp_path / "r")],
              "expected a training that fits in memory")
    assert data.load_image_folder(folder, size=(100, 100), limit=2).x.shape == (2, 1, 8, 8)  # --limit reads fewer
    assert msg


def _npz_claiming(path, shape):
    """An .npz whose 'x' header promises ``shape`` float32 values but holds 16 bytes."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", head.getvalue() + b"\0" * 16)
    return path


def test_npz_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    path = _npz_claiming(tmp_path / "huge.npz", (10 ** 7, 1, 10 ** 4, 10 ** 4))
    raises(DataError, lambda: data.load_npz(path), "huge.npz", "header of 'x.npy' promises", "truncated or corrupt",
           "np.savez")


def test_npz_and_idx_that_cannot_fit_in_memory(tmp_path, monkeypatch):
    np.savez(tmp_path / "ok.npz", x=np.zeros((50, 1, 8, 8), np.uint8))
    write_idx(tmp_path / "i.gz", np.zeros((50, 8, 8)))
    monkeypatch.setattr(arrays, "available_memory", lambda: 1000)
    raises(DataError, lambda: data.load_npz(tmp_path / "ok.npz"), "expected data that fits in memory", "ok.npz",
           "would need")
    raises(DataError, lambda: data.read_idx(tmp_path / "i.gz"), "expected data that fits in memory", "i.gz",
           "(50, 8, 8)")


def test_single_npy_is_refused_without_reading_its_array(tmp_path):
    with open(tmp_path / "one.npz", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 9, 10 ** 9)})
    raises(DataError, lambda: data.load_npz(tmp_path / "one.npz"), "found a single .npy array", "np.savez")
