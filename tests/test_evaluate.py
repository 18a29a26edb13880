"""`aelab evaluate`: every method sees the same fixed noise in every run, the scores agree
with skimage.metrics, slow baselines get their own subset table, files and report."""

import importlib
import io
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from scipy.ndimage import median_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from aelab import plots, runs
from aelab.baselines import BASELINES, Baseline
from aelab.cli import main
from aelab.data import load_dataset
from aelab.evaluate import evaluate
from aelab.report import write_report
from aelab.models import build_model
from aelab.noise import add_evaluation_noise

evaluate_module = importlib.import_module("aelab.evaluate")  # the module: aelab.evaluate is the function
FAST = dict(tune_images=16, hardest=3, progress=False)


@pytest.fixture
def run(tmp_path, fake_fashion):
    torch.manual_seed(0)
    model = build_model("denoising", (1, 28, 28), net="unet", net_options={"widths": [4, 8]})
    runs.save_model(model, tmp_path / "run", train_config={"data": str(fake_fashion)})
    return tmp_path / "run"


class Spy(Baseline):
    """Returns its input unchanged and remembers it."""

    label = "spy"
    seen: list = []

    def _denoise(self, x, param):
        Spy.seen.append(x.copy())
        return x


class SlowSpy(Spy):
    label = "slow spy"
    slow = True


def test_evaluate_writes_tables_figures_metrics_and_report(run):
    ev = evaluate(run, noise_factors=[0.1, 0.3], baselines=["median", "tv", "pca"], **FAST)
    write_report(run)  # the report reads what evaluate wrote into the run
    for name in ("evaluation.md", "evaluation.json", "report.html", "figures/evaluate_psnr.png",
                 "figures/evaluate_ssim.png", "figures/evaluate_hardest.png"):
        assert (run / name).stat().st_size > 0, name
    assert json.loads((run / "metrics.json").read_text())["evaluation"]["results"] == ev["results"]
    assert list(ev["methods"])[0] == "noisy" and list(ev["methods"])[-1] == "model"
    md = (run / "evaluation.md").read_text()
    table = md.split("## All 32 test images")[1].strip().splitlines()
    assert table[2].startswith("| noisy input |"), "the noisy input is the first row"
    assert "total variation" in (run / "report.html").read_text()
    assert set(ev["results"]) == {"0.1", "0.3"}
    assert ev["results"]["0.3"]["median"]["psnr"] > ev["results"]["0.3"]["noisy"]["psnr"]
    assert ev["methods"]["tv"]["params"]["0.1"] in BASELINES["tv"].default_grid
    assert sum(len(v) for v in [ev["per_class"]["psnr"]]) >= 2
    assert len(ev["hardest"]["indices"]) == 3
    model_psnr = ev["hardest"]["psnr"]["model"]
    assert model_psnr == sorted(model_psnr) and model_psnr[0] <= ev["results"]["0.1"]["model"]["psnr"]  # 0.2 absent: the first factor


def test_evaluation_noise_is_identical_across_methods_and_runs(run, fake_fashion, monkeypatch):
    monkeypatch.setitem(BASELINES, "spy", Spy)
    monkeypatch.setitem(BASELINES, "spy2", type("Spy2", (Spy,), {"label": "spy two"}))
    Spy.seen.clear()
    first = evaluate(run, noise_factors=[0.2, 0.5], baselines=["spy", "spy2"], **FAST)
    second = evaluate(run, noise_factors=[0.2, 0.5], baselines=["spy", "spy2"], **FAST)
    assert first["results"] == second["results"]
    test_x = load_dataset(fake_fashion, "test").x
    expected = [add_evaluation_noise(test_x, f).numpy() for f in (0.2, 0.5)]
    assert len(Spy.seen) == 8  # 2 runs x 2 factors x 2 baselines
    for i, seen in enumerate(Spy.seen):
        np.testing.assert_array_equal(seen, expected[(i // 2) % 2])
    for f in ("0.2", "0.5"):  # a method that returns its input scores exactly as the noisy input
        assert first["results"][f]["spy"] == first["results"][f]["noisy"]


def test_scores_agree_with_skimage_metrics(run, fake_fashion):
    ev = evaluate(run, noise_factors=[0.2], baselines=["median"], **FAST)
    x = load_dataset(fake_fashion, "test").x.numpy()
    g = torch.Generator().manual_seed(0)
    noisy = np.clip(x + 0.2 * torch.randn(x.shape, generator=g).numpy(), 0, 1)
    p, s = [], []
    for clean, img in zip(x[:, 0], noisy[:, 0]):
        den = median_filter(img, size=3)
        p.append(peak_signal_noise_ratio(clean, den, data_range=1))
        s.append(structural_similarity(clean, den, data_range=1))
    assert ev["results"]["0.2"]["median"]["psnr"] == pytest.approx(np.mean(p), abs=1e-3)
    assert ev["results"]["0.2"]["median"]["ssim"] == pytest.approx(np.mean(s), abs=1e-4)
    q = [peak_signal_noise_ratio(c, n, data_range=1) for c, n in zip(x[:, 0], noisy[:, 0])]
    assert ev["results"]["0.2"]["noisy"]["psnr"] == pytest.approx(np.mean(q), abs=1e-3)


def test_slow_baselines_run_on_the_first_images_with_a_shared_table(run, monkeypatch):
    monkeypatch.setitem(BASELINES, "slowspy", SlowSpy)
    SlowSpy.seen.clear()
    ev = evaluate(run, noise_factors=[0.2], baselines=["median", "slowspy"], slow_limit=10, **FAST)
    assert [len(a) for a in SlowSpy.seen] == [10]
    assert ev["methods"]["slowspy"]["images"] == 10 and ev["methods"]["median"]["images"] == 32
    sub = ev["subset"]["results"]["0.2"]
    assert set(sub) == {"noisy", "median", "slowspy", "model"} and all(v["images"] == 10 for v in sub.values())
    assert sub["slowspy"]["psnr"] == sub["noisy"]["psnr"]
    md = (run / "evaluation.md").read_text()
    assert "## The first 10 test images" in md
    assert "slow spy" not in md.split("## The first 10")[0], "the full table holds only methods run on every image"
    assert max(ev["hardest"]["indices"]) < 10, "the gallery uses images every method cleaned"
    per_class = next(iter(ev["per_class"]["psnr"].values()))
    assert ev["per_class"]["images"] == 32 and "slowspy" not in per_class and "median" in per_class


@pytest.mark.skipif(not BASELINES["bm3d"].available(), reason="needs pip install 'aelab[bm3d]'")
def test_bm3d_in_the_evaluation(run):
    ev = evaluate(run, noise_factors=[0.2], baselines=["bm3d"], slow_limit=2, **FAST)
    assert ev["subset"]["results"]["0.2"]["bm3d"]["psnr"] > ev["subset"]["results"]["0.2"]["noisy"]["psnr"]


def test_cli_evaluate(run, fake_fashion, capsys):
    assert main(["evaluate", "--run", str(run), "--noise-factors", "0.2", "--baselines", "median,gaussian",
                 "--limit", "16", "--tune-images", "8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| noisy input |" in out and "Gaussian filter" in out and "All 16 test images" in out
    assert main(["evaluate", "--run", str(run), "--baselines", "nope", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown baseline 'nope'" in err
    assert main(["evaluate", "--run", str(run), "--noise-factors", "0", "--no-progress"]) == 2
    assert "expected noise factors in (0, 5]" in capsys.readouterr().err


def test_reconstruction_against_pca_with_as_many_components_as_the_code(tmp_path, fake_fashion):
    torch.manual_seed(0)
    model = build_model("denoising", (1, 28, 28), net="conv", net_options={"channels": [4, 2]})  # code 2x7x7 = 98
    runs.save_model(model, tmp_path / "conv", train_config={"data": str(fake_fashion)})
    ev = evaluate(tmp_path / "conv", noise_factors=[0.2], baselines=[], **FAST)
    rec = ev["reconstruction"]
    assert set(rec) == {"model", "pca"} and "63 components" in rec["pca"]["label"]  # 64 training images
    assert rec["pca"]["psnr"] > 20 and 0 < rec["model"]["ssim"] <= 1


@pytest.mark.slow
def test_evaluate_on_real_fashion_mnist(real_data, tmp_path):
    """Every installed baseline on the real test images improves on the noisy input at 0.2,
    and the noisy input scores as docs/protocols.md says (15.96 dB on all 10,000; here the first 500)."""
    torch.manual_seed(0)
    model = build_model("denoising", (1, 28, 28), net="unet")  # untrained: the identity
    runs.save_model(model, tmp_path / "run", train_config={"data": None})
    ev = evaluate(tmp_path / "run", noise_factors=[0.2], limit=500, slow_limit=20, progress=False)
    res = ev["results"]["0.2"]
    assert 15.5 < res["noisy"]["psnr"] < 16.5
    assert res["model"]["psnr"] == pytest.approx(res["noisy"]["psnr"], abs=1e-6)
    for name, m in ev["methods"].items():
        if name not in ("noisy", "model"):
            table = ev["results"] if m["images"] == 500 else ev["subset"]["results"]
            assert table["0.2"][name]["psnr"] > table["0.2"]["noisy"]["psnr"] + 1.5, name


# -- progress, and an interrupted evaluation resumed (issue "careless and hostile use", item 10) --

class Calls(Baseline):
    """Returns its input unchanged and counts the images it cleaned, call by call."""

    label = "calls"
    calls: list = []

    def _denoise(self, x, param):
        type(self).calls.append(len(x))
        return x


def _calls(label, slow=False):
    return type(label.title(), (Calls,), {"label": label, "calls": [], "slow": slow})


class CtrlC(Baseline):
    label = "second"

    def _denoise(self, x, param):
        raise KeyboardInterrupt


KEPT = ("results", "subset", "per_class", "hardest", "methods", "reconstruction", "tuning", "test_images")


def test_an_interrupted_evaluation_reuses_what_finished(run, tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    first, second, slow = _calls("first"), _calls("second"), _calls("slow", slow=True)
    monkeypatch.setitem(BASELINES, "first", first)
    monkeypatch.setitem(BASELINES, "slow", slow)
    monkeypatch.setitem(BASELINES, "second", CtrlC)
    model_calls, galleries = [], {}
    real_apply = evaluate_module.apply_model
    monkeypatch.setattr(evaluate_module, "apply_model", lambda *a, **k: model_calls.append(1) or real_apply(*a, **k))
    monkeypatch.setattr(plots, "columns", lambda cols, path, **k: galleries.__setitem__(path.parent.parent.name, cols))
    argv = ["evaluate", "--run", str(run), "--noise-factors", "0.2,0.5", "--baselines", "first,second,slow",
            "--slow-limit", "10", "--tune-images", "16", "--hardest", "3", "--no-progress"]
    assert main(argv) == 130  # a Ctrl-C in the second method at noise 0.2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aelab: interrupted: evaluation stopped at noise 0.2, second; "
                                                   "2 finished results are kept in"), err
    assert (run / "evaluation.partial.json").exists() and (run / "evaluation.partial.npz").exists()
    assert first.calls == [32] and len(model_calls) == 1

    monkeypatch.setitem(BASELINES, "second", second)
    first.calls.clear(), model_calls.clear()
    ev = evaluate(run, noise_factors=[0.2, 0.5], baselines=["first", "second", "slow"], slow_limit=10,
                  tune_images=16, hardest=3, progress=True)
    err = capsys.readouterr().err
    assert "reusing 2 finished results from an interrupted evaluation" in err
    assert first.calls == [32], "the first method's result at noise 0.2 is reused, not redone"
    assert len(model_calls) == 2, "the model runs at 0.5 and on clean images, not again at 0.2"
    assert second.calls == [32, 32] and slow.calls == [10, 10]
    assert not (run / "evaluation.partial.json").exists() and not (run / "evaluation.partial.npz").exists()

    first.calls.clear(), model_calls.clear()
    whole = evaluate(reference, noise_factors=[0.2, 0.5], baselines=["first", "second", "slow"], slow_limit=10,
                     tune_images=16, hardest=3, progress=False)
    assert first.calls == [32, 32] and len(model_calls) == 3
    for key in KEPT:
        assert ev[key] == whole[key], key
    assert [t for t, _ in galleries["run"]] == [t for t, _ in galleries["reference"]]
    for (_, a), (_, b) in zip(galleries["run"], galleries["reference"]):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_a_partial_evaluation_with_other_settings_or_damaged_is_not_reused(run, monkeypatch, capsys):
    first = _calls("first")
    monkeypatch.setitem(BASELINES, "first", first)
    monkeypatch.setitem(BASELINES, "second", CtrlC)
    with pytest.raises(KeyboardInterrupt):
        evaluate(run, noise_factors=[0.2], baselines=["first", "second"], **FAST)
    partial = json.loads((run / "evaluation.partial.json").read_text())
    assert set(partial["entries"]) == {"0.2::model", "0.2::first"}
    monkeypatch.setitem(BASELINES, "second", _calls("second"))
    first.calls.clear()
    evaluate(run, noise_factors=[0.2], baselines=["first", "second"], tune_images=8, hardest=3)  # other tuning
    assert first.calls == [32] and "with other settings" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setitem(BASELINES, "second", CtrlC)
        evaluate(run, noise_factors=[0.2], baselines=["first", "second"], **FAST)
    (run / "evaluation.partial.npz").write_bytes(b"not a zip")
    monkeypatch.setitem(BASELINES, "second", _calls("second"))
    first.calls.clear()
    evaluate(run, noise_factors=[0.2], baselines=["first", "second"], tune_images=16, hardest=3)
    assert first.calls == [32] and "ignoring evaluation.partial.json" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_one_line_per_method_and_noise_and_live_for_slow_ones(run, monkeypatch, capsys):
    monkeypatch.setitem(BASELINES, "slow", _calls("slow", slow=True))
    evaluate(run, noise_factors=[0.2, 0.5], baselines=["median", "slow"], tune_images=16, hardest=3, slow_limit=30)
    lines = capsys.readouterr().err.splitlines()
    for key in ("0.2", "0.5"):
        for method in ("model", "median", "slow"):
            assert sum(line.startswith(f"aelab evaluate: noise {key}: {method} ") for line in lines) == 1, lines
    assert not any("\r" in line for line in lines), "no live progress when stderr is not a terminal"
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    evaluate(run, noise_factors=[0.2], baselines=["slow"], tune_images=16, hardest=3, slow_limit=30)
    text = terminal.getvalue()
    assert "\raelab evaluate: noise 0.2: slow: 25/30 images" in text and "30/30 images" in text
