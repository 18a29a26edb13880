"""The model zoo: trained models shipped with the package, their cards, and the commands that re-measure and rebuild them.

Each model is a run directory under ``aelab/zoo/models/NAME/`` (``config.json``,
``model.safetensors``) with a ``card.json`` beside it: what the model is for, the figures
it achieved (on the whole test set, and on a fixed quick subset), the protocol, the
tolerance of each figure, the recipe (every command of its training chain, in order, with
seeds), its CPU minutes, the library versions and the commit. ``--run zoo:NAME`` works
wherever a run directory does (:func:`aelab.runs.locate`); commands that write beside a
run write into ``runs/zoo-NAME`` instead of the package.

Figures are measured by the card's *profile* (:data:`PROFILES`), so :func:`verify` measures
a shipped model, a rebuilt run or a candidate in exactly the same way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import platform
import shlex
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from .. import photos, runs
from ..compression.stream import rd_point
from ..data import load_dataset
from ..errors import ConfigError
from ..evaluate import denoising_quality
from ..inference import apply_model, clean, model_codes
from ..metrics import knn_accuracy, psnr, ssim
from ..models.variational import binarize
from ..quantize import parse_spec, quantize_state
from ..registry import registrar
from ..version import __version__

CARD = "card.json"
QUICK_IMAGES = 1000          # the quick check: the first 1,000 test images
QUICK_TRAIN_CODES = 10000    # ... and kNN fitted on the first 10,000 training codes
QUICK_IW = (500, 100)        # ... and the IW bound on the first 500 test images with K = 100
# How far a re-measured figure may stray from its card (absolute, or relative for bytes).
# Inference is deterministic on one machine; the tolerances absorb other CPUs and BLAS builds.
TOLERANCES = {"psnr": 0.02, "ssim": 0.0005, "knn5": 0.002, "nats": 0.3, "bytes": 0.005}

# how a packed model's weights are stored: state -> state; or a spec of bits, e.g. "int8" or
# "int8,decoder.=int4" (aelab.quantize)
WEIGHT_FORMATS: dict[str, Callable] = {
    "float32": lambda state: state,
    "float16": lambda state: {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
}


def weight_format(spec: str) -> Callable:
    """state -> state as ``spec`` stores it; a bad spec is a one-line error."""
    if spec in WEIGHT_FORMATS:
        return WEIGHT_FORMATS[spec]
    if not spec.startswith("int"):
        raise ConfigError(f"expected weights among {', '.join(WEIGHT_FORMATS)} or bits like 'int8' or "
                          f"'int8,decoder.=int4', found {spec!r}")
    parse_spec(spec)
    return lambda state: quantize_state(state, spec=spec)


PROFILES: dict[str, Callable] = {}
register_profile = registrar(PROFILES)


def _tolerance(key: str) -> tuple[str, float]:
    """(the figure's family, its tolerance) from its key, e.g. ``psnr@0.2`` -> ("psnr", 0.02)."""
    family = key.split("@")[0]
    family = {"neg_elbo": "nats", "iw_nll": "nats", "bytes_per_image": "bytes"}.get(family, family)
    return family, TOLERANCES[family]


def _test(quick: bool, data=None):
    test = load_dataset(data, "test")
    return test.subset(QUICK_IMAGES) if quick else test


@register_profile("denoiser")
def _denoiser(model, card: dict, quick: bool, data=None) -> dict:
    """PSNR and SSIM of the cleaned test images at each of the card's noise factors (fixed evaluation noise)."""
    test = _test(quick, data)
    quality = denoising_quality(model, test.x, card["settings"]["noise_factors"])
    out = {}
    for factor, q in quality.items():
        out[f"psnr@{factor}"] = round(q["model"]["psnr"], 4)
        out[f"ssim@{factor}"] = round(q["model"]["ssim"], 5)
    return out


@register_profile("codes")
def _codes(model, card: dict, quick: bool, data=None) -> dict:
    """Reconstruction PSNR/SSIM of the clean test images, kNN-5 of the codes (fitted on the
    training codes), and for a likelihood model the -ELBO and IW bound in nats."""
    test = _test(quick, data)
    train = load_dataset(data, "train", limit=QUICK_TRAIN_CODES if quick else None)
    x_hat = apply_model(model, test.x)
    out = {"psnr": round(psnr(test.x, x_hat), 4), "ssim": round(ssim(test.x, x_hat), 5),
           "knn5": round(knn_accuracy(model_codes(model, train.x), train.y, model_codes(model, test.x), test.y), 4)}
    if hasattr(model, "nll_bounds"):  # a kind with a likelihood (the variational one)
        n, k = QUICK_IW if quick else (len(test), card["settings"].get("iw_samples", 1000))
        x = binarize(test.x[:n]) if model.binarizes else test.x[:n]
        bounds = model.nll_bounds(x, samples=k, seed=0)
        out["neg_elbo"] = round(float(bounds["neg_elbo"].mean()), 3)
        out["iw_nll"] = round(float(bounds["iw"].mean()), 3)
    return out


@register_profile("codec")
def _codec(model, card: dict, quick: bool, data=None) -> dict:
    """The real byte stream of the test images: bytes per image (header included) and the PSNR/SSIM of its
    decoding; the card's setting ``refine`` is the encoder's search (steps an image, 0 when absent)."""
    point = rd_point(model, _test(quick, data).x, card["settings"].get("refine", 0))
    return {"bytes_per_image": round(point["bytes_per_image"], 3), "psnr": round(point["psnr"], 4),
            "ssim": round(point["ssim"], 5)}


@register_profile("photo-denoiser")
def _photo_denoiser(model, card: dict, quick: bool, data=None) -> dict:
    """Mean PSNR over held-out photos (the card's ``photos``, default :data:`aelab.photos.TEST`; each
    whole, at its own size) at each of the card's noise sigmas (of 255, seeded per photo); quick:
    the first two of them. ``grey``: the photos in grey."""
    settings = card["settings"]
    names = tuple(settings.get("photos", photos.TEST))
    scores = photos.denoising_scores(lambda noisy, sigma: clean(model, torch.from_numpy(noisy)[None])[0].numpy(),
                                     settings.get("sigmas", list(photos.SIGMAS)), names=names[:2] if quick else names,
                                     grey=settings.get("grey", False))
    return {f"psnr@{k}": v["mean"] for k, v in scores.items()}


PROTOCOLS = {  # what each profile measures on, for the card
    "photo-denoiser": {"full": "the card's held-out photos (settings.photos, of aelab.photos.TEST), whole, at noise "
                               "sigma 15, 25, 50 of 255 (aelab.photos.noisy_photo: clipped, seeded per photo); the "
                               "mean PSNR",
                       "quick": "the first two of those photos, at the same sigmas"},
}


# -- the cards --------------------------------------------------------------------------

def names() -> list[str]:
    return runs.zoo_names()


def card(name: str) -> dict:
    """The card of zoo model ``name`` (``zoo:`` prefix optional)."""
    folder = runs.locate(name if runs.is_zoo(name) else runs.ZOO_PREFIX + name)
    return runs.read_json(runs.run_file(folder, CARD))


def listing() -> list[dict]:
    """One row per model: name, kind, network, purpose, headline figures, size, recipe, CPU minutes."""
    rows = []
    for name in names():
        c = card(name)
        folder = runs.locate(runs.ZOO_PREFIX + name)
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        rows.append({"name": name, "kind": c["kind"], "net": c["net"], "purpose": c["purpose"],
                     "headline": c["headline"], "bytes": size,
                     "recipe": [f"aelab {shlex.join(step)}" for step in recipe_commands(c, "DIR")],
                     "cpu_minutes": c["cpu_minutes"]})
    return rows


def headline(profile: str, figures: dict, settings: dict | None = None) -> str:
    """The figures a person reads first, as one short line (a codec's says its encoder search)."""
    if profile == "denoiser":
        return ", ".join(f"{figures[k]:.2f} dB at {k.split('@')[1]}" for k in figures if k.startswith("psnr@"))
    if profile == "photo-denoiser":
        return ", ".join(f"{figures[k]:.2f} dB at sigma {k.split('@')[1]}" for k in figures) + " (held-out photos)"
    if profile == "codec":
        refine = (settings or {}).get("refine", 0)
        return (f"{figures['bytes_per_image']:.1f} B/image at {figures['psnr']:.2f} dB"
                + (f" (--refine {refine})" if refine else ""))
    text = f"PSNR {figures['psnr']:.2f} dB, kNN-5 {figures['knn5']:.4f}"
    return text + (f", IW bound {figures['iw_nll']:.2f} nats" if "iw_nll" in figures else "")


# -- verify -----------------------------------------------------------------------------

def steady_malloc() -> None:
    """Keep glibc from growing the heap over a long measurement: give every allocation of 1 MB
    or more its own mapping (M_MMAP_THRESHOLD), which also stops glibc's dynamic threshold.
    Measured: after the U-Net's SSIM pass, the VAE's IW bound (thousands of same-sized 16 MB
    batches) grew the process to 24 GB and an OOM kill; with this it stays near 1 GB."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def measure(run, card_: dict, quick: bool = False, data=None) -> dict:
    """The card's figures measured on the model of ``run`` (a folder or ``zoo:NAME``)."""
    steady_malloc()
    model = runs.load_model(run)
    torch.manual_seed(0)
    with torch.no_grad():
        return PROFILES[card_["profile"]](model, card_, quick, data)


def compare_figures(expected: dict, measured: dict) -> list[dict]:
    """One row per figure: card, measured, difference, tolerance, and whether it is within."""
    rows = []
    for key, want in expected.items():
        got = measured.get(key)
        family, tol = _tolerance(key)
        diff = None if got is None else got - want
        limit = tol * abs(want) if family == "bytes" else tol
        rows.append({"figure": key, "card": want, "measured": got, "difference": diff, "tolerance": limit,
                     "ok": diff is not None and abs(diff) <= limit + 1e-12})
    return rows


def verify(selected=None, quick: bool = False, run=None, against: str | None = None, data=None,
           log: Callable[[str], None] = lambda text: None) -> list[dict]:
    """Re-measure every selected card's figures from the shipped weights (or ``run`` against
    the card of ``against``); returns one row per figure with its verdict and the seconds."""
    if run is not None:
        if against is None:
            raise ConfigError("expected --against zoo:NAME with --run DIR, found none; e.g. "
                              "aelab verify --run runs/rebuilt --against zoo:denoiser-tutorial")
        jobs = [(str(against).removeprefix(runs.ZOO_PREFIX), run)]
    else:
        chosen = [str(n).removeprefix(runs.ZOO_PREFIX) for n in (selected or names())]
        jobs = [(n, runs.ZOO_PREFIX + n) for n in chosen]
    rows = []
    for name, target in jobs:
        c = card(name)
        t0 = time.perf_counter()
        measured = measure(target, c, quick, data)
        seconds = time.perf_counter() - t0
        for row in compare_figures(c["figures"]["quick" if quick else "full"], measured):
            rows.append({"model": name, **row, "seconds": round(seconds, 1)})
        log(f"{name}: measured in {seconds:.1f} s")
    return rows


# -- retrain ----------------------------------------------------------------------------

def recipe_commands(card_: dict, out) -> list[list[str]]:
    """The card's training chain as argument lists for ``aelab``, with ``{dir}`` set to ``out``."""
    return [[a.replace("{dir}", str(out)) for a in step] for step in card_["recipe"]["steps"]]


def retrain(name: str, out, run_command: Callable[[list[str]], int]) -> Path:
    """Run the card's whole recipe into ``out`` (every step through ``run_command``, which is
    ``aelab.cli.main``); returns the folder of the rebuilt model."""
    c = card(name.removeprefix(runs.ZOO_PREFIX))
    for argv in recipe_commands(c, out):
        status = run_command(argv)
        if status:
            raise ConfigError(f"step `aelab {shlex.join(argv)}` of the recipe failed (exit {status}); "
                              f"fix what it said and run `aelab zoo retrain {name} --out {out}` again")
    return Path(c["recipe"]["result"].replace("{dir}", str(out)))


# -- pack (for maintainers: a trained run into the zoo) -----------------------------------

def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pack(run, name: str, profile: str, purpose: str, steps: list[list[str]], result: str, cpu_minutes: float,
         settings: dict | None = None, weights: str = "float32", data=None) -> Path:
    """Copy a trained run into the zoo as ``name``, finalised, its weights in ``weights``
    (float32, float16, or bits such as int8: :mod:`aelab.quantize`), and write its card with the figures
    measured on the weights as shipped."""
    if profile not in PROFILES:
        raise ConfigError(f"expected a profile among {', '.join(PROFILES)}, found {profile!r}")
    convert = weight_format(weights)
    model = runs.load_model(run)
    model.finalise()
    folder = runs.ZOO_DIR / name
    config = runs.read_config(run)
    runs.write_json(folder / runs.CONFIG, {k: config[k] for k in ("format_version", "aelab_version", "model",
                                                                    "train", "class_names") if k in config})
    state = runs.plain_state_dict(model)
    state = convert(state)
    runs.atomic_write_bytes(folder / runs.WEIGHTS, save_safetensors(state, metadata={"format": "pt"}))
    card_ = {"name": name, "kind": model.kind, "net": model.net, "purpose": purpose, "profile": profile,
             "settings": settings or {}, "weights": weights}
    full, quick = measure(runs.ZOO_PREFIX + name, card_, False, data), measure(runs.ZOO_PREFIX + name, card_, True, data)
    card_.update(_measured(card_, full, quick))
    card_.update({
        "protocol": PROTOCOLS.get(profile, {
            "full": "the 10,000 Fashion-MNIST test images (docs/protocols.md)",
            "quick": f"the first {QUICK_IMAGES:,} test images; kNN fitted on the first {QUICK_TRAIN_CODES:,} "
                     f"training codes; IW bound on the first {QUICK_IW[0]} with K = {QUICK_IW[1]}"}),
        "tolerances": TOLERANCES,
        "recipe": {"steps": steps, "result": result, "commands": [f"aelab {shlex.join(s)}" for s in steps]},
        "cpu_minutes": round(cpu_minutes, 1),
        "versions": {"aelab": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    })
    runs.write_json(folder / CARD, card_)
    return folder


def _measured(card_: dict, full: dict, quick: dict) -> dict:
    """A card's fields that come from measuring it: headline, figures and the commit measured at."""
    return {"headline": headline(card_["profile"], full, card_["settings"]), "figures": {"full": full, "quick": quick},
            "commit": _commit()}


def remeasure(name: str, settings: dict, full: dict | None = None, data=None) -> dict:
    """A shipped model's card measured again under other measuring ``settings`` (e.g. a codec's
    encoder search, ``refine``): its weights, recipe and CPU minutes untouched, so the model and
    a codec's stream identity stay the same. ``full``: the full figures when measured already
    (by the same function on these weights); otherwise measured here. Returns the new card."""
    card_ = card(name)
    card_["settings"] = {**card_["settings"], **settings}
    full = full or measure(runs.ZOO_PREFIX + name, card_, False, data)
    card_.update(_measured(card_, full, measure(runs.ZOO_PREFIX + name, card_, True, data)))
    card_["protocol"] = PROTOCOLS.get(card_["profile"], card_["protocol"])
    card_["versions"].update({"aelab": __version__, "torch": torch.__version__})
    runs.write_json(runs.ZOO_DIR / name / CARD, card_)
    return card_


def results_markdown() -> str:
    """The docs' results table, built from the cards (docs/results.md holds it between markers)."""
    lines = ["| model | kind | network | figures (Fashion-MNIST's 10,000 test images, or as stated) | CPU minutes | weights |",
             "|---|---|---|---|---:|---:|"]
    for row in listing():
        lines.append(f"| `zoo:{row['name']}` | {row['kind']} | {row['net']} | {row['headline']} | "
                     f"{row['cpu_minutes']:g} | {row['bytes'] / 1e6:.2f} MB |")
    return "\n".join(lines)


def card_json(name: str) -> str:
    return json.dumps(card(name), indent=2)


__all__ = ["PROFILES", "TOLERANCES", "names", "card", "listing", "measure", "verify", "retrain", "pack", "remeasure",
           "results_markdown", "recipe_commands", "compare_figures"]
