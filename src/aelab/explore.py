"""Run directory -> ``explore.html``: one self-contained page to play with a trained model.

The page (no server, no network, everything embedded; the template is the package data
``explore_page.html`` + ``explore_page.js``) offers:

- **the latent map**: every test image of the run's ``embedding_<key>.npz`` maps (written
  by ``aelab embed``; a PCA map of the model's codes is computed here when there is none)
  as points on one canvas, coloured by class, a legend that hides/shows classes; hovering
  a point shows the image, its reconstruction, its class and its nearest neighbours in
  code space (Euclidean), clicking pins it (the last two pins are A and B);
- **walk the latent space** (dense decoders only: Linear + ReLU/Sigmoid/Tanh layers, the
  VAE's output sigmoid included): the decoder's weights as base64 little-endian float32,
  decoded in JavaScript from sliders over the latent coordinates, and the decoded linear
  interpolation between the codes of pins A and B. Other decoders (conv, unet, codec) get
  a note instead of the panel;
- **denoise**: the first ``denoise_images`` images at each noise factor, with the fixed
  evaluation noise of docs/protocols.md (:func:`aelab.noise.add_evaluation_noise`), noisy /
  cleaned / original with PSNR, next to the best classical method of the run's
  ``evaluation.json`` at that factor when there is one.

Images travel as sprite sheets (one PNG data URI per kind: images, reconstructions,
denoised), never one ``<img>`` per point; a decoder the page computes decodes the
reconstructions itself from the embedded codes, so they need no sheet. Map pixel of point (x, y), shared with the tests:
``s = min((W - 2 P) / (xmax - xmin), (H - 2 P) / (ymax - ymin))``, ``px = W/2 + (x - xc) s``,
``py = H/2 - (y - yc) s`` with (xc, yc) the centre of the bounding box, W = H = ``MAP_SIZE``
CSS pixels, P = ``MAP_PAD``.

Run files are read through :func:`aelab.runs.run_file` (no link out of the run); the images
come from the data the run was trained on (``config.json`` train.data) or ``data``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import ownership, runs
from .baselines import BASELINES, make_baseline
from .data import load_dataset
from .embed import reduce
from .errors import ConfigError
from .metrics import psnr_per_image
from .noise import add_evaluation_noise, evaluation_noise

DENOISE_FACTORS = (0.1, 0.2, 0.3, 0.5)
DENOISE_IMAGES = 100       # images offered in the denoise panel (the first of the map's)
NEIGHBOURS = 6             # nearest neighbours in code space shown on hover
MAP_SIZE, MAP_PAD = 640, 16
DECODE_TOLERANCE = 1e-5    # a decoder the page reproduces worse than this (in NumPy) is not embedded


# --------------------------------------------------------------------------- encoding helpers

def b64_array(a, dtype="<f4") -> str:
    """A NumPy array as base64 of its little-endian bytes (``<f4`` float32, ``<i4`` int32)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def sprite(images: np.ndarray) -> dict:
    """(N, C, H, W) floats in [0, 1] -> one PNG sheet as a data URI, tile k at column
    k % cols, row k // cols; grey for one channel, RGB for three."""
    from PIL import Image  # heavy: Pillow, only when the sprite sheets are drawn

    x = np.asarray(images, dtype=np.float32)
    n, c, h, w = x.shape
    cols = max(1, int(np.ceil(np.sqrt(n))))
    rows = max(1, -(-n // cols))
    u8 = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # N, H, W, C
    sheet = np.zeros((rows * h, cols * w, c), np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        sheet[r * h:(r + 1) * h, q * w:(q + 1) * w] = u8[k]
    img = Image.fromarray(sheet[..., 0] if c == 1 else sheet[..., :3], mode=None)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return {"uri": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
            "cols": cols, "count": n}


# --------------------------------------------------------------------------- the decoder in JS

_ACTIVATIONS = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
_SHAPE_ONLY = (nn.Identity, nn.Flatten, nn.Unflatten)


def decoder_layers(model) -> tuple[list[dict] | None, str]:
    """The model's decoder as a list of layers the page can compute ({"type": "linear",
    "weight": (out, in) float32, "bias": (out,)} or {"type": "relu" | "sigmoid" | "tanh"}),
    or (None, why not). Checked against ``model.decode`` on random codes in NumPy."""
    decoder = getattr(model, "decoder", None)
    code_shape = tuple(getattr(model, "code_shape", ()))
    if not isinstance(decoder, nn.Sequential) or len(code_shape) != 1:
        return None, (f"the {model.net} decoder is not a stack of dense layers on a vector code, "
                      "so the page cannot compute it; only --net dense models can be walked live")
    layers = []
    for m in decoder:
        if isinstance(m, nn.Linear):
            layers.append({"type": "linear", "weight": m.weight.detach().cpu().float().numpy(),
                           "bias": (m.bias.detach().cpu().float().numpy() if m.bias is not None
                                    else np.zeros(m.out_features, np.float32))})
        elif type(m) in _ACTIVATIONS:
            layers.append({"type": _ACTIVATIONS[type(m)]})
        elif isinstance(m, _SHAPE_ONLY):
            continue
        else:
            return None, (f"the {model.net} decoder has a {type(m).__name__} layer, which the page does "
                          "not compute; only --net dense models can be walked live")
    if getattr(model, "decoder_logits", False):  # a VAE decodes sigmoid(decoder(z))
        layers.append({"type": "sigmoid"})
    g = torch.Generator().manual_seed(0)
    z = torch.randn((16, code_shape[0]), generator=g) * 2
    with torch.no_grad():
        want = model.decode(z).flatten(1).double().numpy()
    got = decode_numpy(layers, z.numpy())
    if got.shape != want.shape or not np.abs(got - want).max() <= DECODE_TOLERANCE:
        return None, "the page's dense decoder does not reproduce this model's decode, so the panel is left out"
    return layers, ""


def decode_numpy(layers: list[dict], z: np.ndarray) -> np.ndarray:
    """What the page computes: the layers on codes (N, D), in float64 (the page's arithmetic)."""
    h = np.asarray(z, dtype=np.float64)
    for layer in layers:
        t = layer["type"]
        if t == "linear":
            h = h @ np.asarray(layer["weight"], np.float64).T + np.asarray(layer["bias"], np.float64)
        elif t == "relu":
            h = np.maximum(h, 0.0)
        elif t == "sigmoid":
            h = 1.0 / (1.0 + np.exp(-h))
        elif t == "tanh":
            h = np.tanh(h)
        else:
            raise ValueError(f"unknown layer {t!r}")
    return h


# --------------------------------------------------------------------------- run contents

def _maps(run_dir: Path, metrics: dict) -> list[dict]:
    """The run's test-split maps (``embedding_<key>.npz``), sorted: the model's own first."""
    maps = []
    entries = metrics.get("embedding", {}) if isinstance(metrics.get("embedding"), dict) else {}
    for path in sorted(run_dir.glob("embedding_*.npz")):
        key = path.stem[len("embedding_"):]
        entry = entries.get(key, {})
        if entry.get("split", "test") != "test":
            continue
        try:
            with np.load(runs.run_file(run_dir, path.name), allow_pickle=False) as z:
                m = {k: z[k] for k in ("points", "labels", "indices", "class_names")}
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"{path}: expected an embedding written by `aelab embed` (points, labels, indices, "
                              f"class_names), could not read it ({exc}); rerun `aelab embed`") from None
        label = f"{entry.get('source', key)} + {entry.get('method', key)}" if entry else key
        maps.append({"key": key, "label": label, "baseline": entry.get("baseline"), **m})
    return sorted(maps, key=lambda m: (m["baseline"] is not None, m["key"]))


def _pca_map(codes: np.ndarray, labels: np.ndarray, names: list[str], description: str) -> dict:

    points, _ = reduce(codes, method="pca", progress=False)
    return {"key": "pca (computed)", "label": f"{description} + PCA (computed for this page: the run has no "
            "embedding_*.npz)", "baseline": None, "points": points, "labels": labels,
            "indices": np.arange(len(points)), "class_names": np.asarray(names)}


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch]).float() for i in range(0, len(x), batch)])


def _neighbours(codes: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors  # heavy: scikit-learn

    k = min(k, len(codes) - 1)
    if k < 1:
        return np.zeros((len(codes), 0), np.int64)
    nn_ = NearestNeighbors(n_neighbors=k + 1).fit(codes)
    idx = nn_.kneighbors(codes, return_distance=False)
    out = np.empty((len(codes), k), np.int64)
    for i, row in enumerate(idx):  # drop the point itself (wherever a tie put it)
        out[i] = [j for j in row if j != i][:k]
    return out


def _best_classical(ev: dict, key: str) -> tuple[str, dict] | None:
    """(baseline name, its entry) with the best mean PSNR at factor ``key`` in ``evaluation.json``."""
    res = ev.get("results", {}).get(key, {})
    methods = ev.get("methods", {})
    full = {m: r for m, r in res.items() if m not in ("noisy", "model") and m in methods
            and r.get("images") == ev.get("test_images")}
    pool = full or {m: r for m, r in ev.get("subset", {}).get("results", {}).get(key, {}).items()
                    if m not in ("noisy", "model") and m in methods}
    if not pool:
        return None
    best = max(pool, key=lambda m: pool[m]["psnr"])
    return best, {"label": methods[best].get("label", best), "psnr": pool[best]["psnr"],
                  "param": methods[best].get("params", {}).get(key), "images": pool[best].get("images")}


def _classical_outputs(ev: dict, x_noisy: dict, data, notes: list[str], crop=None) -> dict:
    """Per factor key: {"label", "param", "mean_psnr", "out": (n, C, H, W)} of the best baseline."""

    out = {}
    for key, xn in x_noisy.items():
        best = _best_classical(ev, key)
        if best is None:
            continue
        name, info = best
        if name not in BASELINES or not BASELINES[name].available():
            notes.append(f"noise {key}: the best classical method, {info['label']}, is not installed here")
            continue
        if name == "pca":  # refit the components on the clean training images, keep the tuned k
            est = make_baseline("pca")
            train = load_dataset(data, "train", limit=est.fit_images, crop=crop).x
            est.fit(train, train)
            if info["param"] is not None:
                est.param_ = int(info["param"])
        else:
            est = make_baseline(name, grid=None if info["param"] is None else (info["param"],)).fit(xn)
        out[key] = {"label": info["label"], "param": info["param"], "mean_psnr": info["psnr"],
                    "images": info["images"], "out": est.transform(xn)}
    return out


# --------------------------------------------------------------------------- the page

def _denoise_panel(model, test, ids, x, run, data, notes: list[str], crop, denoise_images: int) -> dict:
    """The page's denoising panel: the first images of the map with the fixed evaluation noise of the
    whole test split at each factor, the model's outputs, the best classical method's (when the run
    was evaluated), each image's PSNR, in one sprite sheet."""
    nd = min(denoise_images, len(ids))
    base = evaluation_noise(test.x.shape)[torch.from_numpy(ids[:nd])]
    x_d = x[:nd]
    noisy = {f"{f:g}": add_evaluation_noise(x_d, f, base) for f in DENOISE_FACTORS}
    cleaned = {k: _batched(model, v) for k, v in noisy.items()}
    ev_path = runs.run_file(run, "evaluation.json")
    classical = _classical_outputs(runs.read_json(ev_path), noisy, data, notes, crop) if ev_path.is_file() and nd else {}
    keys = list(noisy)
    stack = [noisy[k] for k in keys] + [cleaned[k] for k in keys]
    ckeys = [k for k in keys if k in classical]
    stack += [torch.as_tensor(classical[k]["out"]) for k in ckeys]
    def db(x_hat) -> list[float]:
        return [round(float(v), 3) for v in psnr_per_image(x_d, torch.as_tensor(x_hat))]

    psnr = {k: {"noisy": db(noisy[k]), "model": db(cleaned[k])} for k in keys}
    for k in ckeys:
        psnr[k]["classical"] = db(classical[k]["out"])

    return {"count": nd, "factors": keys, "classical": ckeys, "psnr": psnr,
            "sheet": sprite(torch.cat(stack).numpy()) if nd else None,
            "methods": {k: {"label": classical[k]["label"], "param": classical[k]["param"],
                            "mean_psnr": classical[k]["mean_psnr"], "images": classical[k]["images"]}
                        for k in ckeys}}


def explore(run, out=None, data=None, denoise_images: int = DENOISE_IMAGES, neighbours: int = NEIGHBOURS) -> Path:
    """Write the explorer page of ``run`` (default ``run/explore.html``) and return its path."""

    run_name = run
    run = runs.locate(run)
    config = runs.read_config(run)
    # where the page goes, checked before any work (minutes on a big test set): never over the run's
    # own files, never a folder, in a folder aelab can write in
    data = data if data is not None else config.get("train", {}).get("data")
    page = Path(out) if out is not None else runs.output_dir(run_name) / "explore.html"
    read = [run / name for name in (runs.CONFIG, runs.WEIGHTS, runs.METRICS, "evaluation.json")]
    ownership.check_output_file(page, read + sorted(run.glob("embedding_*.npz")) + ([data] if data else []),
                                overwrite=True, what="another --out", example="explore.html")
    ownership.check_writable(page.parent, fix="choose another --out" if out is not None else
                             f"make {page.parent} writable, or write the page elsewhere with --out PAGE.html")
    model = runs.load_model(run)
    metrics_path = runs.run_file(run, runs.METRICS)
    metrics = runs.read_json(metrics_path) if metrics_path.is_file() else {}
    crop = config.get("train", {}).get("crop")  # a run trained on windows: the centre window of each image
    test = load_dataset(data, "test", crop=crop)
    if tuple(test.input_shape) != tuple(model.input_shape):
        raise ConfigError(f"expected test images of shape {tuple(model.input_shape)} for this run's model, found "
                          f"{tuple(test.input_shape)}; pass the data the run was trained on (data=...)")
    names = list(test.class_names) or [str(i) for i in range(int(test.y.max()) + 1)]
    notes: list[str] = []
    if crop is not None:
        notes.append(f"The model was trained on {crop[0]}x{crop[1]} windows of larger images: this page shows the "
                     f"centre {crop[0]}x{crop[1]} window of each test image (its map, reconstructions and noise); "
                     "`aelab denoise` cleans the whole images at their own size.")

    maps = _maps(run, metrics)
    for m in maps:
        if len(m["indices"]) and int(m["indices"].max()) >= len(test):
            raise ConfigError(f"embedding_{m['key']}.npz indexes {int(m['indices'].max()) + 1} test images, the "
                              f"data has {len(test)}; pass the data the map was made from (data=...)")
    ids = np.unique(np.concatenate([m["indices"] for m in maps])) if maps else np.arange(len(test))
    x = test.x[torch.from_numpy(ids)]
    y = test.y.numpy()[ids]
    codes = _batched(model.codes, x).flatten(1).numpy()
    recon = _batched(model, x)
    description = f"{model.kind} autoencoder ({model.net} network), {codes.shape[1]}-d codes"
    if not maps:
        maps = [_pca_map(codes, y, names, description)]
        notes.append("The run has no map from `aelab embed`, so this page computed a PCA map of the codes.")

    denoise = _denoise_panel(model, test, ids, x, run, data, notes, crop, denoise_images)
    layers, why = decoder_layers(model)
    if layers is None:
        notes.append(why)
    # a decoder the page computes gives the reconstructions from the embedded codes: no sheet for them
    live_recon = layers is not None and len(ids) > 0 and bool(
        np.abs(decode_numpy(layers, codes) - recon.flatten(1).double().numpy()).max() <= DECODE_TOLERANCE)
    slot = {int(i): s for s, i in enumerate(ids)}
    page_data = {
        "title": f"{config['model']['kind']} autoencoder ({config['model']['net']} network)",
        "run": run.name, "shape": list(model.input_shape), "classes": names,
        "map": {"size": MAP_SIZE, "pad": MAP_PAD},
        "ids": b64_array(ids, "<i4"), "labels": b64_array(y, "<i4"), "count": len(ids),
        "maps": [{"key": m["key"], "label": m["label"], "points": b64_array(m["points"]),
                  "slots": b64_array([slot[int(i)] for i in m["indices"]], "<i4"),
                  "labels": b64_array(np.asarray(m["labels"]), "<i4")} for m in maps],
        "images": sprite(x.numpy()), "recon": None if live_recon else sprite(recon.numpy()),
        "neighbours": b64_array(_neighbours(codes, neighbours), "<i4"), "k": min(neighbours, max(len(ids) - 1, 0)),
        "denoise": denoise,
        "notes": notes,
    }
    if layers is not None:
        page_data["decoder"] = {
            "layers": [{"type": l["type"], **({"in": int(l["weight"].shape[1]), "out": int(l["weight"].shape[0]),
                                               "weight": b64_array(l["weight"]), "bias": b64_array(l["bias"])}
                                              if l["type"] == "linear" else {})} for l in layers],
            "codes": b64_array(codes), "dim": int(codes.shape[1])}
        lo, hi = codes.min(0), codes.max(0)
        span = np.maximum(hi - lo, 1e-3)  # slider range: the codes' range, a quarter wider each side
        page_data["decoder"]["lo"] = [round(float(v), 3) for v in lo - 0.25 * span]
        page_data["decoder"]["hi"] = [round(float(v), 3) for v in hi + 0.25 * span]
    return runs.atomic_write_text(page, render(page_data))


def _template(name: str) -> str:
    return resources.files("aelab").joinpath(name).read_text(encoding="utf-8")


def render(page_data: dict) -> str:
    """The page: the HTML template with the data (JSON, ``</`` escaped) and the script inlined."""
    blob = json.dumps(page_data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    script = _template("explore_page.js").replace("</", "<\\/")
    page = _template("explore_page.html")
    return (page.replace("{{TITLE}}", html.escape(f"aelab explore: {page_data['run']}"))
                .replace("{{DATA}}", blob).replace("{{SCRIPT}}", script))


__all__ = ["explore", "decoder_layers", "decode_numpy", "sprite", "render", "DENOISE_FACTORS", "MAP_SIZE", "MAP_PAD"]
