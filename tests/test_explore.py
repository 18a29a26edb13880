"""`aelab explore`: the self-contained explorer page of a run (aelab.explore).

(a) the page is written, embeds everything (no http(s) address anywhere), and the decoder
weights it carries, decoded here with NumPy from the page's own data, give PyTorch's
decode; (b) the page in Debian's chromium driven by Playwright (as test_report_browser.py:
skipped when chromium or Playwright is missing, a failure under AELAB_REQUIRE_BROWSER=1):
no request leaves the file, hovering a point shows its index and class, a latent slider
decodes what PyTorch decodes (1e-4), the noise slider changes the image; a screenshot goes
to test-artifacts/explore.png.
"""

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from aelab import runs
from aelab.cli import main
from aelab.data import load_dataset
from aelab.explore import MAP_PAD, MAP_SIZE, decoder_layers, explore
from aelab.models import build_model

from test_report_browser import ARTIFACTS, CHROMIUM, FLAGS, _browser_or_skip


@pytest.fixture
def vae_run(fake_fashion, tmp_path):
    """A 1-epoch dense VAE on the tiny fake data, with a PCA map."""
    run = tmp_path / "run"
    assert main(["train", "--kind", "variational", "--net", "dense", "--data", str(fake_fashion), "--epochs", "1",
                 "--out", str(run), "--no-progress"]) == 0
    assert main(["embed", "--run", str(run), "--method", "pca", "--no-progress"]) == 0
    return run


def page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="aelab-data">(.*?)</script>', text, re.S)
    assert m, "the page carries its data in #aelab-data"
    return json.loads(m.group(1))


def arr(b64: str, dtype="<f4") -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=dtype)


def numpy_decode(decoder: dict, z: np.ndarray) -> np.ndarray:
    """The page's decoder, from the page's data only: Linear (torch's (out, in) weights) and activations."""
    h = np.asarray(z, np.float64)
    for layer in decoder["layers"]:
        if layer["type"] == "linear":
            w = arr(layer["weight"]).reshape(layer["out"], layer["in"]).astype(np.float64)
            h = h @ w.T + arr(layer["bias"])
        elif layer["type"] == "relu":
            h = np.maximum(h, 0)
        elif layer["type"] == "sigmoid":
            h = 1 / (1 + np.exp(-h))
        else:
            assert layer["type"] == "tanh", layer
            h = np.tanh(h)
    return h


def map_pixels(points: np.ndarray) -> np.ndarray:
    """The page's map position (CSS px in the canvas) of each point: the formula of aelab.explore."""
    lo, hi = points.min(0), points.max(0)
    span = hi - lo
    s = min((MAP_SIZE - 2 * MAP_PAD) / v for v in span if v > 0)
    centre = (lo + hi) / 2
    return np.stack([MAP_SIZE / 2 + (points[:, 0] - centre[0]) * s, MAP_SIZE / 2 - (points[:, 1] - centre[1]) * s], 1)


def test_page_is_self_contained_and_its_decoder_matches_torch(vae_run, fake_fashion, tmp_path):
    assert main(["evaluate", "--run", str(vae_run), "--baselines", "gaussian,median", "--no-progress"]) == 0
    path = explore(vae_run)
    assert path == vae_run / "explore.html"
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    for ref in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', text):
        assert ref.startswith(("data:", "#")), ref
    data = page_data(path)
    model = runs.load_model(vae_run)

    # the codes and the decoder the page carries give PyTorch's decode
    test = load_dataset(str(fake_fashion), "test")
    ids = arr(data["ids"], "<i4")
    dec = data["decoder"]
    codes = arr(dec["codes"]).reshape(len(ids), dec["dim"])
    with torch.no_grad():
        np.testing.assert_allclose(codes, model.codes(test.x[torch.from_numpy(ids.astype(np.int64))]).numpy(),
                                   atol=1e-6)
        z = np.concatenate([codes[:4], np.random.default_rng(0).normal(0, 2, (4, dec["dim"]))]).astype(np.float32)
        want = model.decode(torch.from_numpy(z)).flatten(1).numpy()
    assert np.abs(numpy_decode(dec, z) - want).max() < 1e-4
    assert dec["layers"][-1]["type"] == "sigmoid"  # the VAE's output nonlinearity, split off its decoder
    # the page decodes the reconstructions from the codes (no sheet for them): they are the model's output
    assert data["recon"] is None
    with torch.no_grad():
        rec = model(test.x[torch.from_numpy(ids.astype(np.int64))]).flatten(1).numpy()
    assert np.abs(numpy_decode(dec, codes) - rec).max() < 1e-4

    # the map is the run's embedding; the denoise panel has the best classical method of evaluation.json
    with np.load(vae_run / "embedding_pca.npz") as npz:
        assert np.allclose(arr(data["maps"][0]["points"]).reshape(-1, 2), npz["points"])
        assert data["classes"] == list(npz["class_names"])
    dn = data["denoise"]
    assert dn["factors"] == ["0.1", "0.2", "0.3", "0.5"] and dn["count"] == len(ids)
    ev = runs.read_json(vae_run / "evaluation.json")
    for key in dn["classical"]:
        best = max(("gaussian", "median"), key=lambda m: ev["results"][key][m]["psnr"])
        assert dn["methods"][key]["label"] == ev["methods"][best]["label"]
    assert dn["classical"] == dn["factors"]

    # no map from `aelab embed`: the page computes a PCA map of the codes
    (vae_run / "embedding_pca.npz").unlink()
    other = explore(vae_run, out=tmp_path / "other.html")
    assert page_data(other)["maps"][0]["key"] == "pca (computed)"


def test_decoders_the_page_cannot_compute_are_refused():
    conv = build_model("variational", (1, 28, 28), net="conv", net_options={"latent_dim": 8}).eval()
    layers, why = decoder_layers(conv)
    assert layers is None and "dense" in why
    dense = build_model("denoising", (1, 28, 28), net="dense", net_options={"hidden": [16], "latent_dim": 4}).eval()
    layers, why = decoder_layers(dense)
    assert [l["type"] for l in layers] == ["linear", "relu", "linear", "sigmoid"] and why == ""


def test_explore_in_headless_chromium(vae_run, tmp_path):
    sync_playwright = _browser_or_skip()
    page_path = explore(vae_run, out=tmp_path / "explore.html")
    data = page_data(page_path)
    model = runs.load_model(vae_run)
    with np.load(vae_run / "embedding_pca.npz") as npz:
        points, labels, indices, names = npz["points"], npz["labels"], npz["indices"], list(npz["class_names"])
    px = map_pixels(points.astype(np.float64))
    dist = np.hypot(*(px[:, None, :] - px[None, :, :]).transpose(2, 0, 1))
    # a point whose neighbours within 12 px all sit on it (images identical to it): hovering it shows one of them
    isolated = [i for i in range(len(px)) if ((dist[i] < 12) <= (dist[i] < 0.5)).all()]
    assert isolated, "the fake data gives at least one isolated point"
    target = isolated[0]
    expected = {int(indices[j]) for j in np.flatnonzero(dist[target] < 0.5)}

    requests, blocked, errors = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1250, "height": 900})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))

            def refuse_network(route):
                if route.request.url != page_path.as_uri():
                    blocked.append(route.request.url)
                    return route.abort()
                return route.continue_()

            page.route("**/*", refuse_network)
            page.goto(page_path.as_uri(), wait_until="load")
            page.wait_for_function("window.aelab && window.aelab.ready", timeout=10_000)
            assert page.evaluate(f"window.aelab.pixel({target})") == pytest.approx(list(px[target]), abs=1e-3)

            # hover the target point: the tooltip names its index and class
            def at(i):  # viewport position of point i (the page may have scrolled)
                page.locator("#map").scroll_into_view_if_needed()
                left, top = page.evaluate("(() => { const c = document.getElementById('map'), r = c.getBoundingClientRect();"
                                          " return [r.left + c.clientLeft, r.top + c.clientTop]; })()")
                return left + px[i][0], top + px[i][1]

            page.mouse.move(*at(target))
            caption = page.locator("#tooltip .cap").inner_text()
            m = re.fullmatch(r"#(\d+) · (.+)", caption.strip())
            assert m and int(m.group(1)) in expected, (caption, expected)
            assert m.group(2) == names[int(labels[list(indices).index(int(m.group(1)))])]
            assert page.locator("#tooltip canvas").count() >= 2  # image and reconstruction (and neighbours)
            page.mouse.click(*at(target))  # pin it: the sliders take its code
            assert page.locator("#pins .cap").count() == 1

            # move a latent slider: the page decodes what PyTorch decodes
            slider = page.locator("#z0")
            lo, hi = float(slider.get_attribute("min")), float(slider.get_attribute("max"))
            value = lo + 0.3 * (hi - lo)
            slider.fill(f"{value:.6f}")
            code = np.asarray(page.evaluate("window.aelab.walk.code"), np.float64)
            out = np.asarray(page.evaluate("window.aelab.walk.output"), np.float64)
            assert code[0] == pytest.approx(value, abs=1e-6)
            with torch.no_grad():
                want = model.decode(torch.tensor(code[None], dtype=torch.float32)).flatten().double().numpy()
            assert np.abs(out - want).max() < 1e-4
            assert np.abs(np.asarray(page.evaluate(f"window.aelab.decode({json.dumps(code.tolist())})")) - out).max() == 0

            # move the noise slider: the noisy image and its PSNR change
            def noisy():
                return page.evaluate("document.querySelector('.dn-noisy canvas').toDataURL()"), \
                    page.locator(".dn-noisy").inner_text()

            before = noisy()
            page.locator("#dn-factor").fill("3")
            after = noisy()
            assert page.locator("#dn-factor-out").inner_text() == "0.5"
            assert before[0] != after[0] and before[1] != after[1]
            assert page.locator(".dn-classical").count() == 0  # no evaluation.json in this run
            # pin a second point: the interpolation between A and B appears (9 decoded steps)
            second = next(j for j in isolated if dist[target, j] >= 12)
            page.mouse.click(*at(second))
            assert page.locator("#pins .cap").count() == 2
            assert page.locator("#interp canvas").count() == 9
            ARTIFACTS.mkdir(exist_ok=True)
            page.mouse.move(*at(target))
            page.screenshot(path=str(ARTIFACTS / "explore.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert not blocked, blocked
    assert all(u == page_path.as_uri() or u.startswith("data:") for u in requests), requests
    assert data["decoder"]["dim"] == 32
