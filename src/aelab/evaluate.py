"""Measuring denoising: PSNR/SSIM of the noisy input, the model and the classical baselines at
each noise factor, with the fixed evaluation noise of docs/protocols.md.

``aelab evaluate`` writes its results into the run (``evaluation.json``, ``evaluation.md``,
``metrics.json``, figures); the report reads them from there.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from . import plots, runs
from .baselines import BASELINES, PCAProjection, make_baseline
from .data import check_images, load_dataset
from .evaluate_partial import PARTIAL_JSON, Partial, weights_digest
from .errors import ConfigError, DataError
from .inference import apply_model
from .metrics import check_ssim_size, psnr_per_image, quality, ssim_per_image
from .noise import add_evaluation_noise, evaluation_noise
from .report.tables import evaluation_markdown, slow_note
from .settings import EvaluateConfig

NOISE_FACTORS = EvaluateConfig.noise_factors


def denoising_quality(model, x: torch.Tensor, factors=NOISE_FACTORS, batch_size: int = 256) -> dict:
    """``{"0.2": {"noisy": {psnr, ssim}, "model": {psnr, ssim}}, ...}`` on the images ``x``."""
    x = check_images(x, "images")
    base = evaluation_noise(x.shape)
    out = {}
    for f in factors:
        x_noisy = add_evaluation_noise(x, f, base)
        x_hat = apply_model(model, x_noisy, batch_size)
        out[f"{f:g}"] = {"noisy": quality(x, x_noisy), "model": quality(x, x_hat)}
    return out


def hardest_images(model, x: torch.Tensor, factor: float, count: int = 10, batch_size: int = 1000):
    """The ``count`` images of ``x`` the model cleans worst at noise ``factor`` (fixed
    evaluation noise): their indices and PSNR after cleaning, lowest first, with the noisy
    and cleaned images -> ``(indices, psnr, x_noisy, x_hat)``."""
    x = check_images(x, "images")
    x_noisy = add_evaluation_noise(x, factor)
    x_hat = apply_model(model, x_noisy, batch_size)
    scores = psnr_per_image(x, x_hat)
    order = torch.argsort(scores)[:count]
    return order, scores[order], x_noisy[order], x_hat[order]


# -- aelab evaluate: the model of a run against the classical baselines ---------------

SLOW_BATCH = 25  # images per progress step of a slow baseline (BM3D: ~10 s)


def _clean(est, x_noisy: torch.Tensor, label: str, log) -> torch.Tensor:
    """``est.transform(x_noisy)``; for a slow baseline with stderr on a terminal, in batches
    with a progress line that rewrites itself (each image is cleaned on its own either way)."""
    if not (type(est).slow and log.live and sys.stderr.isatty()):
        return est.transform(x_noisy)
    parts = []
    for i in range(0, len(x_noisy), SLOW_BATCH):
        parts.append(est.transform(x_noisy[i:i + SLOW_BATCH]))
        print(f"\raelab evaluate: {label}: {i + len(parts[-1])}/{len(x_noisy)} images", end="",
              file=sys.stderr, flush=True)
    print("\r\033[K", end="", file=sys.stderr, flush=True)
    return torch.cat(parts)


def _baseline(b, f, key, x, x_noisy, train_x, train_base, tune_images, shown, log):
    """Tune baseline ``b`` at noise ``f`` on training pairs, clean ``x_noisy`` (the first
    images of ``x``) -> ``(info, (psnr, ssim) per image, its images of the gallery or None)``."""
    n_images, n_tune = len(x_noisy), tune_images or BASELINES[b].fit_images
    tr_clean = train_x[:n_tune]
    tr_noisy = (tr_clean + f * train_base[:n_tune]).clamp(0.0, 1.0)
    t = time.perf_counter()
    est = make_baseline(b).fit(tr_noisy, tr_clean)
    x_hat = _clean(est, x_noisy, f"noise {key}: {b}", log)
    secs = time.perf_counter() - t
    per_image = (psnr_per_image(x[:n_images], x_hat).numpy(), ssim_per_image(x[:n_images], x_hat).numpy())
    info = {"param": None if est.param_ is None else float(est.param_), "describe": est.describe(), "seconds": secs,
            "scores": {f"{p:g}": s for p, s in est.scores_.items()}}
    log(f"noise {key}: {b} on {n_images} images, {info['describe']}, PSNR {per_image[0].mean():.2f} dB ({secs:.1f} s)")
    return info, per_image, None if shown is None else x_hat[shown].numpy()


def _logger(progress: bool):
    """``log(message)``: one line on stderr (nothing without ``progress``); ``log.live`` says which."""
    def log(msg):
        if progress:
            print(f"aelab evaluate: {msg}", file=sys.stderr, flush=True)
    log.live = progress
    return log


def evaluate(run, noise_factors=NOISE_FACTORS, baselines=None, limit: int | None = None,
             slow_limit: int = EvaluateConfig.slow_limit, tune_images: int | None = None, data=None,
             hardest: int = EvaluateConfig.hardest,
             threads: int | None = None, progress: bool = True) -> dict:
    """Measure the model of ``run`` and every baseline at each noise factor; write the results.

    For each factor the test images get the fixed evaluation noise (docs/protocols.md: one
    ``randn`` from seed 0, in index order), the same tensor for every method. Baselines
    (``baselines``: names from :data:`aelab.baselines.BASELINES`, None = every installed
    one) are tuned on the first training images (``tune_images``, default each baseline's
    ``fit_images``) with their own noise draw (seed 1). Slow baselines run on the first
    ``slow_limit`` test images; a second table gives every method on those images.

    Writes ``run/evaluation.md``, ``run/evaluation.json``, ``metrics.json["evaluation"]``,
    ``figures/evaluate_psnr.png`` and ``evaluate_ssim.png`` (against noise factor, one line
    per method), ``figures/evaluate_hardest.png`` (the ``hardest`` images with the lowest
    PSNR after the model, at noise 0.2 or the first factor: noisy / each method / clean),
    and returns the results (``aelab evaluate`` then rewrites ``report.html``).

    Each finished (noise factor, method) result is kept in the run as it finishes
    (:mod:`aelab.evaluate_partial`); after a Ctrl-C (a ``KeyboardInterrupt`` that says what
    was kept) a call with the same settings reuses them, and the partial files go at the end.
    ``progress``: one line on stderr per method and noise factor, and a running count of
    images for slow baselines when stderr is a terminal.
    """
    run = runs.output_dir(run)  # a zoo model is evaluated in a copy, runs/zoo-NAME
    config = runs.read_config(run)
    model = runs.load_model(run)
    if threads:
        torch.set_num_threads(threads)
    factors = [float(f) for f in noise_factors]
    if not factors or any(not 0 < f <= 5 for f in factors):
        raise ConfigError(f"expected noise factors in (0, 5], found {list(noise_factors)}; e.g. 0.1,0.2,0.3,0.5")
    if slow_limit < 1:
        raise ConfigError(f"expected slow_limit >= 1, found {slow_limit}; e.g. --slow-limit 1000")
    if isinstance(hardest, bool) or not isinstance(hardest, int) or hardest < 1:
        raise ConfigError(f"expected hardest >= 1 (the images in the gallery of the hardest), found {hardest!r}; "
                          f"e.g. --hardest {EvaluateConfig.hardest}")
    data = data if data is not None else config.get("train", {}).get("data")
    crop = config.get("train", {}).get("crop")  # a run trained on windows: the centre window of each image
    test = load_dataset(data, "test", limit=limit, crop=crop)
    if tuple(test.input_shape) != tuple(model.input_shape):
        raise ConfigError(f"expected test images of shape {tuple(model.input_shape)} for this run's model, found "
                          f"{tuple(test.input_shape)}; evaluate with the data the run was trained on (--data)")
    channels = test.input_shape[0]
    if channels not in (1, 3):  # the baselines (BM3D) and the figures know grey and RGB images only
        raise DataError(f"expected grey (1 channel) or colour (3 channel) images for aelab evaluate (its baselines "
                        f"and figures), found {channels} channels; measure this model from Python with "
                        "aelab.evaluate.denoising_quality(model, x), which takes any number of channels")
    check_ssim_size(test.x.shape, "aelab evaluate scores SSIM: evaluate a model of images at least that large "
                                  "(train one with --size 28,28, say)")
    skipped = {}
    if baselines is None:
        names = [k for k, cls in BASELINES.items() if cls.available()]
        skipped = {k: f"needs {cls.requires[1]}" for k, cls in BASELINES.items() if not cls.available()}
    else:
        names = [b for b in ([baselines] if isinstance(baselines, str) else baselines)]
        for b in names:
            make_baseline(b)  # an unknown or uninstalled baseline fails here, before any work
    n_fit = max([tune_images or BASELINES[b].fit_images for b in names] + [1])
    train = load_dataset(data, "train", limit=max(n_fit, PCAProjection.fit_images), crop=crop)  # PCA: reconstruction too
    train_base = torch.randn(train.x.shape, generator=torch.Generator().manual_seed(1))
    x = test.x
    total = len(x)
    n_slow = min(slow_limit, total) if any(BASELINES[b].slow for b in names) else total
    base = evaluation_noise(x.shape)
    head = 0.2 if 0.2 in factors else factors[0]
    log = _logger(progress)

    net_label = f"this run ({config['model']['kind']}, {config['model']['net']} network)"
    methods: dict[str, dict] = {"noisy": {"label": "noisy input", "images": total, "params": {}}}
    for b in names:
        cls = BASELINES[b]
        methods[b] = {"label": cls.label, "images": n_slow if cls.slow else total, "params": {}, "scores": {}}
    methods["model"] = {"label": net_label, "images": total, "params": {}}
    scores: dict[str, dict[str, tuple]] = {}  # factor -> method -> (psnr per image, ssim per image)
    seconds: dict[str, float] = {}
    gallery = None
    settings = {"weights": weights_digest(run), "data": str(data), "limit": limit, "test_images": total,
                "noise_factors": factors, "slow_images": n_slow, "hardest": hardest, "tune_images": tune_images,
                "noise_seed": 1}
    partial = Partial(run, settings, log)
    step = "start-up"
    g_shape = (min(hardest, n_slow), *x.shape[1:])  # the gallery's images, kept for each method
    try:
        for f in factors:
            key = f"{f:g}"
            x_noisy = add_evaluation_noise(x, f, base)
            at_head = f == head
            step = f"noise {key}, model"
            found = partial.get(key, "model", {"noisy": total, "model": total}, g_shape if at_head else None)
            if found is None:
                t = time.perf_counter()
                outputs = {"noisy": x_noisy, "model": apply_model(model, x_noisy)}
                secs = time.perf_counter() - t
                per = {m: (psnr_per_image(x, o).numpy(), torch.cat([ssim_per_image(x[i:i + 2000], o[i:i + 2000])
                                                                    for i in range(0, total, 2000)]).numpy())
                       for m, o in outputs.items()}
            else:
                per, shown, info = found
                secs = info["seconds"]
            if at_head:  # the hardest images for the model, among those every method sees
                order = np.argsort(per["model"][0][:n_slow], kind="stable")[:hardest]
                if found is None:
                    shown = {m: o[order].numpy() for m, o in outputs.items()}
                gallery = {"indices": order.tolist(), "images": {m: torch.as_tensor(shown[m]) for m in shown}}
            if found is None:
                partial.put(key, "model", per, shown if at_head else None, {"seconds": secs})
            seconds["model"] = seconds.get("model", 0.0) + secs
            log(f"noise {key}: model PSNR {per['model'][0].mean():.2f} dB, noisy {per['noisy'][0].mean():.2f} dB"
                f"{' (reused)' if found else ''}")
            for b in names:
                step = f"noise {key}, {b}"
                n_images = n_slow if BASELINES[b].slow else total
                found = partial.get(key, b, {b: n_images}, g_shape if at_head else None)
                if found is None:
                    info, per_image, x_shown = _baseline(b, f, key, x, x_noisy[:n_images], train.x, train_base,
                                                         tune_images, gallery["indices"] if at_head else None, log)
                    partial.put(key, b, {b: per_image}, {b: x_shown} if at_head else None, info)
                else:
                    per_b, shown_b, info = found
                    per_image, x_shown = per_b[b], shown_b.get(b)
                    log(f"noise {key}: {b} on {n_images} images, {info['describe']}, PSNR {per_image[0].mean():.2f} dB "
                        "(reused)")
                per[b] = per_image
                seconds[b] = seconds.get(b, 0.0) + info["seconds"]
                methods[b]["params"][key] = info["param"]
                methods[b]["scores"][key] = info["scores"]
                if at_head:
                    gallery["images"][b] = torch.as_tensor(x_shown)
            scores[key] = per
    except KeyboardInterrupt:
        kept = (f"{len(partial)} finished results are kept in {run / PARTIAL_JSON}: run the same command again "
                "to reuse them") if len(partial) else "nothing had finished"
        raise KeyboardInterrupt(f"evaluation stopped at {step}; {kept}") from None

    def summary(n: int | None = None) -> dict:
        return {k: {m: {"psnr": round(float(p[:n].mean()), 4), "ssim": round(float(s[:n].mean()), 5),
                        "images": len(p[:n])} for m, (p, s) in per.items()} for k, per in scores.items()}

    ev = {"run": str(run), "test_images": total, "noise_factors": factors, "data": data, "limit": limit,
          "tuning": {"images": {b: min(tune_images or BASELINES[b].fit_images, len(train.x)) for b in names},
                     "noise_seed": 1},
          "methods": methods, "results": summary(),
          "seconds": {k: round(v, 2) for k, v in seconds.items()}, "skipped": skipped}
    if n_slow < total:
        ev["subset"] = {"images": n_slow, "results": summary(n_slow)}
    # per class, at the headline factor, on every test image (slow baselines: in the subset table only)
    y = test.y.numpy()
    hk = f"{head:g}"
    ev["per_class"] = {"noise_factor": head, "images": total, "psnr": {
        name: {m: round(float(p[y == c].mean()), 3) for m, (p, _) in scores[hk].items() if len(p) == total}
        for c, name in enumerate(test.class_names) if (y == c).any()}}
    # reconstruction of clean images: the model against PCA with as many components as its code
    code_dim = int(np.prod(model.code_shape)) if hasattr(model, "code_shape") else None
    rec_model = apply_model(model, x)
    ev["reconstruction"] = {"model": {"label": net_label, "psnr": round(psnr_per_image(x, rec_model).mean().item(), 4),
                                      "ssim": round(float(ssim_per_image(x, rec_model).mean()), 5)}}
    if code_dim and code_dim < int(np.prod(x.shape[1:])):  # an overcomplete code has no PCA counterpart
        k = min(code_dim, len(train.x) - 1)
        pca = PCAProjection(grid=(k,)).fit(train.x)
        rec_pca = pca.transform(x)
        ev["reconstruction"]["pca"] = {"label": f"PCA, {k} components (the code has {code_dim:,} numbers)",
                                       "psnr": round(psnr_per_image(x, rec_pca).mean().item(), 4),
                                       "ssim": round(float(ssim_per_image(x, rec_pca).mean()), 5)}
    ev["hardest"] = {"noise_factor": head, "indices": gallery["indices"],
                     "psnr": {m: [round(float(scores[hk][m][0][i]), 2) for i in gallery["indices"]] for m in scores[hk]}}

    # figures, tables, metrics, report
    figs = run / "figures"
    common = n_slow
    sub = summary(common)
    order = list(methods)
    for metric, unit in (("psnr", "PSNR (dB)"), ("ssim", "SSIM")):
        plots.lines(factors, {methods[m]["label"]: [sub[f"{f:g}"][m][metric] for f in factors]
                              for m in order}, figs / f"evaluate_{metric}.png", xlabel="noise factor", ylabel=unit,
                    title=f"{unit} against noise, {slow_note(common, total)}")
    cols = [("noisy", gallery["images"]["noisy"])] + [(m, gallery["images"][m]) for m in order if m != "noisy"]
    cols.append(("clean", x[gallery["indices"]]))
    titles = [methods[m]["label"].split(" (")[0] if m in methods else m for m, _ in cols]
    titles[-2] = "this run"
    row_labels = [f"#{i} {test.class_names[int(test.y[i])] if int(test.y[i]) < len(test.class_names) else ''}"
                  for i in gallery["indices"]]
    plots.columns([(t, imgs) for t, (_, imgs) in zip(titles, cols)], figs / "evaluate_hardest.png",
                  row_labels=row_labels,
                  suptitle=f"The {len(row_labels)} hardest test images for this run's model at noise {head:g}")
    runs.write_json(run / "evaluation.json", ev)
    runs.atomic_write_text(run / "evaluation.md", evaluation_markdown(ev))
    runs.update_metrics(run, evaluation=ev)
    partial.finish()
    return ev
