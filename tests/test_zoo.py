"""The model zoo: shipped models load by name wherever a run does, their folders are never
written, their cards hold what `aelab verify` re-measures, and the docs' figures are the cards'."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from aelab import runs, zoo
from aelab.cli import main
from aelab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NAMES = zoo.names()


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_the_zoo_ships_models_within_its_size_budget():
    assert {"denoiser-tutorial", "vae-32"} <= set(NAMES)
    total = 0
    for name in NAMES:
        folder = runs.locate(f"zoo:{name}")
        for file in ("config.json", "model.safetensors", "card.json"):
            assert (folder / file).is_file(), f"{name}: {file}"
        size = sum(p.stat().st_size for p in folder.iterdir())
        assert max(p.stat().st_size for p in folder.iterdir()) <= 2_000_000, f"{name}: a file over 2 MB"
        total += size
    assert total <= 25_000_000, f"the zoo weighs {total / 1e6:.1f} MB, over its budget of 25 MB (with the photo models)"


@pytest.mark.parametrize("name", NAMES)
def test_every_card_is_complete_and_its_recipe_is_aelab_commands(name):
    card = zoo.card(name)
    for key in ("kind", "net", "purpose", "profile", "figures", "protocol", "tolerances", "recipe", "cpu_minutes",
                "versions", "commit", "headline"):
        assert key in card, f"{name}: card without {key!r}"
    assert card["profile"] in zoo.PROFILES
    assert set(card["figures"]["full"]) == set(card["figures"]["quick"]) and card["figures"]["full"]
    model = runs.load_model(f"zoo:{name}")
    assert model.kind == card["kind"] and model.net == card["net"]
    for step in card["recipe"]["steps"]:
        assert step[0] in {"train", "reproduce", "compare", "data"}, step
    assert "{dir}" in card["recipe"]["result"]


def test_a_wrong_zoo_name_lists_the_valid_ones(capsys):
    with pytest.raises(ConfigError, match="did you mean zoo:denoiser-tutorial"):
        runs.load_model("zoo:denoiser-tutorail")
    assert main(["denoise", "--run", "zoo:nope", "x.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aelab: error: ") and "zoo:denoiser-tutorial" in err and "\n" not in err


def test_commands_never_write_into_the_zoo(tmp_path, monkeypatch, fake_fashion, capsys):
    """report, denoise and evaluate on zoo:NAME write into runs/zoo-NAME, never the package."""
    import numpy as np
    from PIL import Image

    folder = runs.locate("zoo:denoiser-tutorial")
    before = _digest(folder)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--run", "zoo:denoiser-tutorial"]) == 0
    assert (tmp_path / "runs/zoo-denoiser-tutorial/report.html").is_file()
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(tmp_path / "grey.png")
    assert main(["denoise", "--run", "zoo:denoiser-tutorial", str(tmp_path / "grey.png")]) == 0
    assert (tmp_path / "runs/zoo-denoiser-tutorial/denoised/grey.denoised.png").is_file()
    assert main(["evaluate", "--run", "zoo:denoiser-tutorial", "--data", str(fake_fashion), "--baselines", "median",
                 "--noise-factors", "0.2", "--tune-images", "8", "--no-progress"]) == 0
    assert (tmp_path / "runs/zoo-denoiser-tutorial/evaluation.json").is_file()
    assert _digest(folder) == before


def test_a_damaged_zoo_file_gets_the_one_line_errors_of_a_damaged_run(tmp_path, monkeypatch):
    copy = tmp_path / "zoo"
    shutil.copytree(runs.locate("zoo:denoiser-tutorial"), copy / "broken")
    weights = copy / "broken/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    monkeypatch.setattr(runs, "ZOO_DIR", copy)
    with pytest.raises(ConfigError, match="expected a safetensors file") as err:
        runs.load_model("zoo:broken")
    assert "\n" not in str(err.value)


def test_remeasure_rewrites_the_card_under_new_settings_and_leaves_the_weights(tmp_path, monkeypatch, fake_fashion):
    copy = tmp_path / "zoo"
    shutil.copytree(runs.locate("zoo:codec-100b"), copy / "codec")
    monkeypatch.setattr(runs, "ZOO_DIR", copy)
    weights, before = (copy / "codec/model.safetensors").read_bytes(), zoo.card("codec")
    given = {"bytes_per_image": 123.4, "psnr": 31.0, "ssim": 0.9}
    card = zoo.remeasure("codec", {"refine": 2}, full=given, data=fake_fashion)
    assert card == zoo.card("codec") and card["settings"] == {**before["settings"], "refine": 2}
    assert card["figures"]["full"] == given and card["headline"].endswith("(--refine 2)")
    assert card["figures"]["quick"] != before["figures"]["quick"]        # measured: 32 stand-in images
    assert card["recipe"] == before["recipe"] and card["cpu_minutes"] == before["cpu_minutes"]
    assert (copy / "codec/model.safetensors").read_bytes() == weights
    measured = zoo.remeasure("codec", {}, data=fake_fashion)["figures"]   # no full given: measured too
    assert measured["full"] == measured["quick"]                          # the stand-in's 32 images both times


def test_verify_flags_a_figure_outside_its_tolerance():
    rows = zoo.compare_figures({"psnr@0.2": 21.90, "ssim@0.2": 0.7933, "knn5": 0.8710, "iw_nll": 235.7,
                                "bytes_per_image": 100.0},
                               {"psnr@0.2": 21.93, "ssim@0.2": 0.7934, "knn5": 0.8700, "iw_nll": 235.9,
                                "bytes_per_image": 100.6})
    verdict = {r["figure"]: r["ok"] for r in rows}
    assert verdict == {"psnr@0.2": False, "ssim@0.2": True, "knn5": True, "iw_nll": True, "bytes_per_image": False}


def test_verify_on_other_images_reports_the_difference(fake_fashion, capsys):
    """The mechanism end to end, quickly: the card's quick figures against a measurement on
    other images (the tiny stand-in data) differ, and verify says so and exits 2."""
    assert main(["verify", "denoiser-tutorial", "--quick", "--data", str(fake_fashion)]) == 2
    out, err = capsys.readouterr()
    assert "OUT OF TOLERANCE" in out and "outside their tolerance" in err


def test_the_docs_results_table_is_the_cards():
    text = (ROOT / "docs/results.md").read_text()
    block = re.search(r"<!-- zoo:begin -->\n(.*?)\n<!-- zoo:end -->", text, flags=re.S)
    assert block, "docs/results.md holds the zoo table between <!-- zoo:begin --> and <!-- zoo:end -->"
    assert block.group(1).strip() == zoo.results_markdown().strip(), \
        "docs/results.md differs from the cards: paste `python -c 'from aelab import zoo; print(zoo.results_markdown())'`"


def test_figures_quoted_in_the_readme_are_on_a_card():
    """Every 'zoo:NAME ... N dB' or '... N nats' figure the README quotes is a figure of that card."""
    readme = (ROOT / "README.md").read_text()
    quoted = re.findall(r"`zoo:([a-z0-9-]+)`[^|`]*?(\d+\.\d\d) (dB|nats)", readme)
    assert {unit for _, _, unit in quoted} == {"dB", "nats"}
    for name, value, unit in quoted:
        figures = zoo.card(name)["figures"]["full"]
        family = ("psnr",) if unit == "dB" else ("iw_nll", "neg_elbo")
        assert any(k.startswith(family) and f"{v:.2f}" == value for k, v in figures.items()), (name, value, unit)


@pytest.mark.slow
def test_verify_quick_passes_on_the_real_test_set(real_data, capsys):
    assert main(["verify", "--quick"]) == 0, capsys.readouterr().out
    assert "within tolerance" in capsys.readouterr().out


@pytest.mark.slow
def test_compress_and_decompress_with_a_zoo_codec(real_data, tmp_path):
    codecs = [n for n in NAMES if zoo.card(n)["profile"] == "codec"]
    if not codecs:
        pytest.fail("the zoo ships no codec")
    from aelab.data import load_dataset
    from aelab.images import png_bytes

    x = load_dataset(None, "test", limit=3).x
    files = []
    for i, img in enumerate(x):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(img))
        files.append(str(tmp_path / f"{i}.png"))
    name = codecs[0]
    assert main(["compress", "--run", f"zoo:{name}", *files, "--out", str(tmp_path / "x.ael")]) == 0
    assert main(["decompress", str(tmp_path / "x.ael"), "--run", f"zoo:{name}", "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    json.dumps(zoo.card(name))
