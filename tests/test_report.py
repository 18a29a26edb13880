"""report.html from what a run holds: sections without data are left out (and numbered
without gaps), the model's layer table comes from the network when metrics.json lacks it."""

import re

import torch

from aelab.models import build_model
from aelab.nets import count_parameters
from aelab.report import write_report
from aelab.runs import save_model
from aelab.train import TrainConfig, fit


def _headings(html: str) -> list[str]:
    return re.findall(r"<h2 id=\"s\d+\">(\d+\. [^<]*)</h2>", html)


def test_a_bare_run_has_only_the_model_and_how_to_reproduce(tmp_path):
    model = build_model("denoising", (1, 28, 28), net="dense", net_options={"latent_dim": 8})
    save_model(model, tmp_path)
    html = write_report(tmp_path).read_text()
    assert _headings(html) == ["1. The model", "2. How to reproduce"]
    assert f"{count_parameters(model):,}" in html  # the layer table's total, from nets.describe
    assert "encoder.1" in html and "Vincent et al. 2008" in html  # a layer and the kind's loss with its paper
    assert "<img" not in html


def test_a_trained_run_gets_its_loss_curves(tmp_path):
    torch.manual_seed(0)
    model = build_model("denoising", (1, 8, 8), net="dense", net_options={"latent_dim": 4, "hidden": [16]})
    x = torch.rand(40, 1, 8, 8)
    save_model(model, tmp_path)
    fit(model, x, x[:10], TrainConfig(epochs=2, batch_size=8, progress=False), run_dir=tmp_path)
    html = write_report(tmp_path).read_text()
    assert _headings(html) == ["1. The model", "2. Training", "3. How to reproduce"]
    assert (tmp_path / "figures" / "history.png").exists()
    assert html.count("<img") == 1 and 'class="epochs"' in html


def test_the_report_links_the_explorer_page_when_the_run_has_one(tmp_path):
    model = build_model("denoising", (1, 28, 28), net="dense", net_options={"latent_dim": 8})
    save_model(model, tmp_path)
    assert 'href="explore.html"' not in write_report(tmp_path).read_text()
    (tmp_path / "explore.html").write_text("<html></html>")
    assert 'href="explore.html"' in write_report(tmp_path).read_text()
