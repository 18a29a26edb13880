import json

import pytest
import torch

from aelab import runs
from aelab.cli import main
from aelab.compare import ENTRIES, compare
from aelab.errors import ConfigError
from aelab.generate import sample


def test_compare_writes_table_figure_and_runs(fake_fashion, tmp_path):
    out = tmp_path / "cmp"
    result = compare(data=str(fake_fashion), out=str(out), latent_dim=8, epochs=1, batch_size=32, iw_samples=4,
                     jacobian_images=4, progress=False, net_options={"hidden": [32]})
    names = [r["name"] for r in result["rows"]]
    assert names == [e.name for e in ENTRIES]
    assert {e.kind for e in ENTRIES} == {"undercomplete", "sparse", "contractive", "denoising", "variational"}
    for row in result["rows"]:
        for key in ("psnr", "ssim", "psnr_denoise_0.2", "knn5", "near_zero", "jacobian", "train_seconds"):
            assert isinstance(row[key], float), (row["name"], key)
        model = runs.load_model(out / row["name"])  # every row is a run directory
        assert model.kind == row["kind"] and model.options() == row["options"]
        assert "compare" in json.loads((out / row["name"] / "metrics.json").read_text())
    by = {r["name"]: r for r in result["rows"]}
    assert by["undercomplete"]["code_size"] == 8 and by["sparse-l1"]["code_size"] == 256
    assert by["denoising"]["noise"] == "gaussian:0.2" and by["undercomplete"]["noise"] == "none"
    vae = by["variational"]
    assert vae["iw_nll"] <= vae["neg_elbo"] and "Bernoulli" in vae["likelihood"] and "binarised" in vae["likelihood"]
    assert "iw_nll" not in by["undercomplete"]
    assert json.loads((out / "compare.json").read_text()) == json.loads(json.dumps(result))
    md = (out / "compare.md").read_text()
    assert all(f"| {n} |" in md for n in names) and "IW bound (nats)" in md and "–" in md
    # a few fake images are no scale for the published Fashion-MNIST figures: none shown
    assert result["settings"]["fashion_mnist_full"] is False and "published" not in md
    assert (out / "reconstructions.png").stat().st_size > 1000 and (out / "denoised.png").stat().st_size > 1000


def test_compare_subset_and_errors(fake_fashion, tmp_path):
    result = compare(data=str(fake_fashion), out=str(tmp_path / "c"), kinds=["sparse-kl", "undercomplete"],
                     latent_dim=8, epochs=1, batch_size=32, jacobian_images=4, progress=False)
    assert [r["name"] for r in result["rows"]] == ["undercomplete", "sparse-kl"]
    with pytest.raises(ConfigError, match="expected kinds among .*variational.*found nope"):
        compare(data=str(fake_fashion), out=str(tmp_path / "d"), kinds=["nope"])


def test_cli_compare_train_aliases_and_sample(fake_fashion, tmp_path, capsys):
    assert main(["compare", "--data", str(fake_fashion), "--out", str(tmp_path / "c"), "--kinds", "contractive",
                 "--latent-dim", "4", "--epochs", "1", "--jacobian-images", "4", "--no-progress"]) == 0
    assert "| contractive |" in capsys.readouterr().out
    vae = tmp_path / "vae"
    assert main(["train", "--kind", "variational", "--net", "dense", "--data", str(fake_fashion), "--epochs", "1",
                 "--batch-size", "16", "--out", str(vae), "--no-progress", "--net-option", "latent_dim=2",
                 "--loss", "mse", "--beta", "0.5"]) == 0
    options = json.loads((vae / "config.json").read_text())["model"]["options"]
    assert options["reconstruction"] == "mse" and options["beta"] == 0.5
    assert main(["sample", "--run", str(vae), "--n", "12", "--steps", "5"]) == 0
    for name in ("vae_samples", "vae_manifold", "vae_traversals", "vae_interpolation"):
        assert (vae / "figures" / f"{name}.png").stat().st_size > 1000, name
    capsys.readouterr()
    assert main(["sample", "--run", str(tmp_path / "c" / "contractive")]) == 2
    err = capsys.readouterr().err
    assert "expected a run of a generative kind (variational), found kind 'contractive'" in err and err.count("\n") == 1


def test_sample_without_data_and_no_manifold_above_2d(fake_fashion, tmp_path):
    torch.manual_seed(0)
    from aelab.models import build_model
    model = build_model("variational", (1, 28, 28), net="dense", net_options={"latent_dim": 3})
    runs.save_model(model, tmp_path / "r", train_config={"data": str(tmp_path / "nowhere")})
    files = sample(tmp_path / "r", n=4, steps=3)
    assert sorted(p.name for p in files) == ["vae_samples.png", "vae_traversals.png"]  # no test images found
    files = sample(tmp_path / "r", n=4, steps=3, data=str(fake_fashion))
    assert sorted(p.name for p in files) == ["vae_interpolation.png", "vae_samples.png", "vae_traversals.png"]


@pytest.mark.slow
def test_compare_on_real_data_shows_what_each_kind_buys(real_data, tmp_path):
    """Three epochs on the real Fashion-MNIST (about 2 CPU minutes): the penalties do their job."""
    torch.set_num_threads(1)
    result = compare(data=str(real_data), out=str(tmp_path), kinds=["undercomplete", "sparse-l1", "contractive"],
                     epochs=3, jacobian_images=300, progress=False, device="cpu")
    by = {r["name"]: r for r in result["rows"]}
    assert by["undercomplete"]["knn5"] > 0.84 and by["undercomplete"]["psnr"] > 19.0
    assert by["sparse-l1"]["near_zero"] > 0.8 and by["undercomplete"]["near_zero"] < 0.4
    assert by["contractive"]["jacobian"] < 0.5 * by["undercomplete"]["jacobian"]
    md = (tmp_path / "compare.md").read_text()  # the full Fashion-MNIST: the anchors beside our figures
    best = max(result["rows"], key=lambda r: r["knn5"])
    assert result["settings"]["fashion_mnist_full"] is True
    assert f"| {best['knn5']:.4f} ({best['name']}, 32-d) | 64-d VAE 0.883; 64-d AE 0.8756; PCA-64 0.8568" in md


def test_anchor_rows_put_the_best_codes_and_the_likelihood_next_to_the_published_figures():
    from aelab.anchors import anchor_rows, applies
    from aelab.data import FASHION_CLASSES
    from aelab.report.tables import compare_anchors_markdown

    rows = [{"name": "a", "knn5": 0.87, "code_size": 32}, {"name": "b", "knn5": 0.8812, "code_size": 32},
            {"name": "vae", "knn5": 0.86, "code_size": 40, "iw_nll": 229.123}]
    got = anchor_rows(rows, iw_samples=1000)
    assert got[0][1] == "0.8812 (b, 32-d)" and "64-d AE 0.8756" in got[0][2]
    assert got[1][1] == "229.12 (vae, K = 1000)" and "one-layer VAE, Gaussian prior 228.7" in got[1][2]
    assert "5,000 importance samples" in got[1][3]
    assert applies(FASHION_CLASSES, 60_000, 10_000)
    assert not applies(FASHION_CLASSES, 60_000, 500) and not applies(["cat", "dog"], 60_000, 10_000)
    result = {"settings": {"fashion_mnist_full": True, "iw_samples": 1000}, "rows": rows}
    assert "| 229.12 (vae, K = 1000) |" in compare_anchors_markdown(result)
    assert compare_anchors_markdown({**result, "settings": {"fashion_mnist_full": False, "iw_samples": 1000}}) == ""


def test_probe_and_code_metrics():
    import numpy as np

    from aelab.metrics import jacobian_norm, knn_accuracy, linear_probe_accuracy, near_zero_fraction
    from aelab.models import build_model

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 4))
    y_train, y_test = rng.integers(0, 3, 60), rng.integers(0, 3, 30)
    a, b = centres[y_train] + rng.normal(0, 0.1, (60, 4)), centres[y_test] + rng.normal(0, 0.1, (30, 4))
    assert knn_accuracy(a, y_train, b, y_test) == 1.0 and linear_probe_accuracy(a, y_train, b, y_test) == 1.0
    assert knn_accuracy(a, y_train, b, (y_test + 1) % 3) == 0.0
    codes = np.array([[0.0, 0.04, 1.0, 0.5], [0.0, 0.0, 0.2, 0.06]])
    assert near_zero_fraction(codes) == 0.5 and near_zero_fraction(codes * 1000) == 0.5  # scale-free
    # a linear encoder has J = W everywhere
    torch.manual_seed(0)
    model = build_model("undercomplete", (1, 6, 6), net="dense", net_options={"hidden": [], "latent_dim": 5})
    weight = model.encoder[1].weight
    norms = jacobian_norm(model, torch.rand(7, 1, 6, 6), batch_size=3)
    torch.testing.assert_close(norms, weight.norm().detach().expand(7), rtol=1e-5, atol=1e-6)


def test_compare_variational_row_network_and_options(fake_fashion, tmp_path, capsys):
    """--vae-net / --vae-net-option / --vae-option change the variational row only."""
    out = tmp_path / "c"
    assert main(["compare", "--data", str(fake_fashion), "--out", str(out), "--kinds", "undercomplete,variational",
                 "--latent-dim", "4", "--epochs", "1", "--jacobian-images", "4", "--iw-samples", "3",
                 "--net-option", "hidden=[16]", "--vae-net", "conv", "--vae-net-option", "channels=[4,8]",
                 "--vae-option", "kl_warmup=5", "--vae-option", "train_samples=2", "--no-progress"]) == 0
    capsys.readouterr()
    result = json.loads((out / "compare.json").read_text())
    by = {r["name"]: r for r in result["rows"]}
    assert by["undercomplete"]["net"] == "dense" and by["undercomplete"]["net_options"] == {"latent_dim": 4,
                                                                                          "hidden": [16]}
    assert by["variational"]["net"] == "conv" and by["variational"]["net_options"] == {"latent_dim": 4,
                                                                                     "channels": [4, 8]}
    assert by["variational"]["options"]["kl_warmup"] == 5 and by["variational"]["options"]["train_samples"] == 2
    assert "neg_iw_bound" in by["variational"]["final_train_terms"]
    model = runs.load_model(out / "variational")
    assert model.net == "conv" and model.train_samples == 2 and int(model.warmup_step) > 0
    md = (out / "compare.md").read_text()
    assert 'The variational row: the `conv` network ({"latent_dim": 4, "channels": [4, 8]})' in md
    assert '"kl_warmup": 5' in md
    # the same options through aelab train
    assert main(["train", "--kind", "variational", "--net", "dense", "--data", str(fake_fashion), "--epochs", "1",
                 "--batch-size", "16", "--out", str(tmp_path / "t"), "--no-progress", "--option", "train_samples=3",
                 "--option", "kl_warmup=100"]) == 0
    options = json.loads((tmp_path / "t" / "config.json").read_text())["model"]["options"]
    assert options["train_samples"] == 3 and options["kl_warmup"] == 100
    assert main(["compare", "--data", str(fake_fashion), "--out", str(tmp_path / "e"), "--kinds", "variational",
                 "--epochs", "1", "--vae-option", "train_samples=0", "--no-progress"]) == 2
    assert "expected train_samples an integer >= 1, found 0" in capsys.readouterr().err
