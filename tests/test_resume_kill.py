"""Interrupted runs (issue 7): a training process killed with SIGKILL at seeded random
moments, or in the middle of writing a checkpoint, or stopped with Ctrl-C, resumes with
``--resume`` and ends with weights bit-identical (CPU) to an uninterrupted run.

The children are forked from the test process (torch already imported, so they start at
once); the slow variants also spawn real ``python`` processes, paying the start-up."""

from __future__ import annotations

import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aelab import runs
from aelab.cli import main
from aelab.data import FASHION_FILES

from conftest import write_idx
from killable import Child

EPOCHS = 4
SIGKILLED = -signal.SIGKILL


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A Fashion-MNIST look-alike big enough that training lasts a moment (256 train, 64 test)."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    for split, n in (("train", 256), ("test", 64)):
        labels = rng.integers(0, 10, n)
        images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 4 + c:14 + c, 6:22] = 200
        write_idx(folder / (FASHION_FILES[split][0] + ".gz"), images)
        write_idx(folder / (FASHION_FILES[split][1] + ".gz"), labels)
    return folder


def _args(dataset: Path, out: Path) -> list[str]:
    return ["train", "--data", str(dataset), "--epochs", str(EPOCHS), "--batch-size", "16", "--seed", "3",
            "--out", str(out), "--no-progress", "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(_args(dataset, out)) == 0
    return out


def _duration(dataset: Path, tmp_path: Path, spawn: bool) -> float:
    """Seconds an uninterrupted child takes, start-up included (to spread the kills over it)."""
    t0 = time.perf_counter()
    child = Child(_args(dataset, tmp_path / "timing"), tmp_path, spawn=spawn)
    assert child.wait(timeout=300) == 0, child.stderr
    return time.perf_counter() - t0


def _assert_same_run(run: Path, ref: Path) -> None:
    a, b = load_file(run / "model.safetensors"), load_file(ref / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs from the uninterrupted run"
    ha, hb = runs.load_history(run), runs.load_history(ref)
    assert ha["train"] == hb["train"] and ha["val"] == hb["val"]
    assert runs.read_config(run)["model"] == runs.read_config(ref)["model"]


def _assert_loadable(run: Path) -> None:
    """Whatever the moment of the kill, each file present is whole: the old version or the new."""
    if (run / "config.json").exists():
        runs.read_config(run)
        if (run / "model.safetensors").exists():
            runs.load_model(run)
    if (run / "history.json").exists():
        runs.load_history(run)
    if (run / "checkpoint.pt").exists():
        torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


def _run_to_the_end(argv: list[str], tmp_path: Path, spawn: bool = False) -> None:
    child = Child(argv, tmp_path, spawn=spawn)
    assert child.wait(timeout=300) == 0, child.stderr


def _resume_to_the_end(dataset, run, tmp_path, spawn=False) -> None:
    _run_to_the_end(_args(dataset, run) + ["--resume"], tmp_path, spawn=spawn)


@pytest.mark.parametrize("seed, kills, spawn", [
    (0, 4, False),
    pytest.param(1, 8, False, marks=pytest.mark.slow),
    pytest.param(2, 3, True, marks=pytest.mark.slow),
])
def test_sigkill_at_random_moments_then_resume_is_bit_identical(dataset, reference, tmp_path, seed, kills, spawn):
    ref, seconds = reference, _duration(dataset, tmp_path, spawn)
    run = tmp_path / "run"
    rng = random.Random(seed)
    moments, landed, attempts = [], 0, 0
    while landed < kills and attempts < kills + 8:
        attempts += 1
        # always --resume: the first time there is nothing to resume and the run starts afresh
        child = Child(_args(dataset, run) + ["--resume"], tmp_path, spawn=spawn)
        # a moment anywhere in loading, training and writing (a spawned python first spends
        # a good part of its time starting up); short enough that most runs are cut short
        delay = seconds * (rng.uniform(0.4, 0.9) if spawn else rng.uniform(0.0, 0.6))
        code = child.wait(timeout=delay)
        if code is None:
            child.kill()
            code = child.wait(timeout=60)
        epoch = (torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
                 if (run / "checkpoint.pt").exists() else None)
        moments.append((round(delay, 3), code, epoch))  # when, how it ended, the epoch on disk after it
        assert code in (0, SIGKILLED), child.stderr
        _assert_loadable(run)
        if code == SIGKILLED:
            landed += 1
        elif landed:  # the run got to its end after at least one kill: nothing left to interrupt
            break
        else:
            # it ended before any kill landed (the timing run was slower than this one, a
            # cold start on a loaded machine): start again with earlier moments
            shutil.rmtree(run)
            seconds *= 0.6
    _resume_to_the_end(dataset, run, tmp_path, spawn=spawn)
    print("kills (delay s, exit status, checkpoint epoch):", moments)
    assert any(c == SIGKILLED for _, c, _ in moments), f"no kill landed: {moments}"
    _assert_same_run(run, ref)


@pytest.mark.parametrize("target, nth, when", [
    ("checkpoint.pt", 2, "torn"),
    ("checkpoint.pt", 1, "before-rename"),
    ("model.safetensors", 2, "torn"),
    ("history.json", 3, "torn"),
    ("config.json", 1, "torn"),
])
def test_kill_during_a_write_leaves_a_loadable_run(dataset, reference, tmp_path, target, nth, when):
    ref = reference
    run = tmp_path / "run"
    child = Child(_args(dataset, run), tmp_path, kill_on=f"{target}:{nth}:{when}")
    assert child.wait(timeout=300) == SIGKILLED, child.stderr
    assert list(run.glob(f".{target}.*.tmp")), "the kill did not land inside the write"
    _assert_loadable(run)
    if nth == 1:
        assert not (run / target).exists()  # the first write never became the file
    elif target == "checkpoint.pt":  # the previous checkpoint is the one on disk
        assert torch.load(run / target, map_location="cpu", weights_only=True)["epoch"] <= nth - 1
    _resume_to_the_end(dataset, run, tmp_path)
    _assert_same_run(run, ref)


@pytest.mark.parametrize("sig", ["sigint", "sigterm"])
def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(dataset, reference, tmp_path, sig):
    ref = reference
    run = tmp_path / "run"
    # the Ctrl-C (or a scheduler's SIGTERM) arrives while the first end-of-epoch checkpoint is written
    child = Child(_args(dataset, run), tmp_path, kill_on=f"checkpoint.pt:1:{sig}")
    assert child.wait(timeout=300) == 130, child.stderr
    last = child.stderr.strip().splitlines()[-1]
    assert last.startswith("aelab: interrupted: stopped at epoch "), last
    assert "checkpoint written" in last and f"resume with `aelab train --resume --out {run}`" in last
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert 1 <= state["epoch"] < EPOCHS  # stopped early, after the signal
    _resume_to_the_end(dataset, run, tmp_path)
    _assert_same_run(run, ref)


@pytest.mark.slow  # three reproduce runs with figures and report: about 40 s on a loaded CPU
def test_reproduce_resume_after_sigkill_is_bit_identical(dataset, tmp_path):
    """``aelab reproduce --resume`` after a SIGKILL inside a checkpoint write, then one at a
    random moment: the final weights and metrics equal those of an uninterrupted reproduce."""
    args = ["reproduce", "--data", str(dataset), "--epochs", "3", "--batch-size", "16", "--seed", "1",
            "--no-progress", "--threads", "1", "--device", "cpu"]
    ref = tmp_path / "ref"
    assert main(args + ["--out", str(ref)]) == 0
    run = tmp_path / "run"
    child = Child(args + ["--out", str(run)], tmp_path, kill_on="checkpoint.pt:2:torn")
    assert child.wait(timeout=300) == SIGKILLED, child.stderr
    child = Child(args + ["--out", str(run), "--resume"], tmp_path)
    code = child.wait(timeout=random.Random(0).uniform(0.05, 0.3))
    if code is None:
        child.kill()
        code = child.wait(timeout=60)
    assert code in (0, SIGKILLED), child.stderr
    _run_to_the_end(args + ["--out", str(run), "--resume"], tmp_path)
    a, b = load_file(run / "model.safetensors"), load_file(ref / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b) and a.keys() == b.keys()
    ma, mb = (runs.read_json(d / "metrics.json") for d in (run, ref))
    assert ma["denoising"] == mb["denoising"]
    assert runs.load_history(run)["train"] == runs.load_history(ref)["train"]


def test_resume_where_nothing_was_written_starts_afresh_with_a_warning(dataset, reference, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_args(dataset, run) + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert f"aelab: warning: nothing to resume in {run}; starting a new run" in err
    _assert_same_run(run, reference)


def test_resume_takes_the_runs_own_data_and_limit(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    first = ["train", "--data", str(dataset), "--limit", "48", "--epochs", "1", "--batch-size", "16",
             "--out", str(run), "--no-progress"]
    assert main(first) == 0
    assert main(["train", "--resume", "--epochs", "2", "--out", str(run), "--no-progress"]) == 0
    assert len(runs.load_history(run)["train"]["loss"]) == 2
    cfg = runs.read_config(run)["train"]
    assert (cfg["data"], cfg["limit"], cfg["epochs"]) == (str(dataset), 48, 2)
    capsys.readouterr()
    assert main(["train", "--resume", "--epochs", "3", "--limit", "64", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"aelab: error: {run} was trained with --limit 48, found --limit 64; resume with the same "
                   "limit (or leave it out), or train a new run in another --out")
