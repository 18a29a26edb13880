"""The report page: run directory -> ``report.html``, one self-contained page (images embedded as data
URIs, no network) that reads like an experiment report, with measured numbers.

Sections without data are left out, not shown empty.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import os
import platform
import re
import statistics
import sys
from pathlib import Path

import torch

from .. import ownership, plots, runs
from ..errors import AelabError, ConfigError
from ..models import MODELS
from ..nets import count_parameters, describe
from ..version import __version__
from .tables import evaluation_tables, fmt as _fmt, html_table as _table, rd_tables


def _reading(what: str):
    """Decorate a section builder: data it cannot read (a hand-edited or damaged file: a key
    missing, a list where an object belongs) is a one-line :class:`ConfigError` naming ``what``."""
    def wrap(build):
        @functools.wraps(build)
        def section(*args, **kwargs):
            try:
                return build(*args, **kwargs)
            except AelabError:
                raise
            except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
                raise ConfigError(f"expected {what} as aelab writes it, found something else ({type(exc).__name__}: "
                                  f"{exc}); restore the file (or remove what was edited in it), or rerun the "
                                  "command that wrote it") from None
        return section
    return wrap


_evaluation_tables = _reading("the 'evaluation' section of the run's metrics.json")(evaluation_tables)
METRIC_SECTIONS = ("summary", "data", "model", "timing", "denoising", "evaluation", "embedding")


def check_metrics(metrics: dict, path) -> dict:
    """``metrics`` with each section aelab reads an object, as aelab writes it, or a one-line
    :class:`ConfigError` naming the section of the file ``path`` that is not."""
    for key in METRIC_SECTIONS:
        if key in metrics and not isinstance(metrics[key], dict):
            raise ConfigError(f"{path}: expected {key!r} to be an object {{...}} as aelab writes it, found "
                              f"{json.dumps(metrics[key])[:60]}; restore the file (or remove {key!r} from it), or "
                              "rerun the command that wrote it")
    for key, entries in (("denoising", metrics.get("denoising", {})), ("embedding", metrics.get("embedding", {})),
                         ("data.class_counts", metrics.get("data", {}).get("class_counts", {}))):
        if not isinstance(entries, dict):
            bad, value = None, entries
        else:
            bad = next((k for k, v in entries.items() if not isinstance(v, dict)), None)
            value = entries.get(bad)
        if bad is not None or not isinstance(entries, dict):
            raise ConfigError(f"{path}: expected {key}{'' if bad is None else '.' + bad} to be an object {{...}} as "
                              f"aelab writes it, found {json.dumps(value)[:60]}; restore the file (or remove "
                              f"{key.split('.')[0]!r} from it), or rerun the command that wrote it")
    return metrics


def _img(path: Path, alt: str) -> str:
    # a figure that is a link to a file elsewhere (a key, a password file) is refused, not embedded
    data = base64.b64encode(runs.run_file(path.parent, path.name).read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.5}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 10px;text-align:left}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
code,pre{background:#f6f6f6;padding:2px 4px}pre{padding:8px;overflow-x:auto}
pre.doc{white-space:pre-wrap;font-size:.9em}nav ol{columns:2}.note{color:#555;font-size:.95em}
"""


@_reading("the 'denoising' section of the run's metrics.json")
def quality_table(metrics: dict) -> str | None:
    """The headline PSNR/SSIM table: noisy input vs. the model's output at each noise factor."""
    q = metrics.get("denoising")
    if not q:
        return None
    rows = []
    for factor, entry in q.items():
        rows.append([factor, _fmt(entry["noisy"]["psnr"]), _fmt(entry["noisy"]["ssim"], 3),
                     _fmt(entry["model"]["psnr"]), _fmt(entry["model"]["ssim"], 3),
                     _fmt(entry["model"]["psnr"] - entry["noisy"]["psnr"])])
    return _table(["noise factor", "noisy PSNR (dB)", "noisy SSIM", "cleaned PSNR (dB)", "cleaned SSIM",
                   "gain (dB)"], rows, cls="headline")

def _figure(run_dir: Path, name: str, alt: str) -> str:
    """An embedded figure of the run, or "" when the run has no such file."""
    path = runs.run_file(run_dir, f"figures/{name}")
    return _img(path, alt) if path.is_file() else ""


def _kind_doc(kind: str) -> str | None:
    """The docstring that states a kind's loss: its class's own, else its module's."""
    cls = MODELS.get(kind)
    if cls is None:
        return None
    doc = cls.__dict__.get("__doc__") or getattr(sys.modules.get(cls.__module__), "__doc__", None)
    return doc.strip() if doc else None


def _layers(model_cfg: dict) -> tuple[list[dict], int]:
    """The layers (output shape, parameters) and parameter count of the config's network, from a dry
    run on PyTorch's meta device (no memory, however big the network), else on a real build."""
    planned = runs.planned_model(model_cfg)
    if planned is not None:
        try:
            return describe(planned, planned.input_shape), count_parameters(planned)
        except Exception:  # an operation the meta device lacks: build it for real
            pass
    model = runs.model_from_config(model_cfg)
    return describe(model, model.input_shape), count_parameters(model)


@_reading("the run's config.json, history.json and the 'model' section of metrics.json")
def model_section(config: dict, metrics: dict, history: dict) -> str | None:
    """The network as a table of layers (output shape, parameters), the loss and its terms,
    the options and the training settings."""
    model_cfg = config["model"]
    info = metrics.get("model", {})
    layers, params = info.get("layers"), info.get("parameters")
    if not layers:  # a run from `aelab train`: rebuild the network from its config (no weights needed)
        try:
            layers, params = _layers(model_cfg)
        except (AelabError, RuntimeError):
            layers = None
    out = []
    kind, net = html.escape(str(model_cfg.get("kind"))), html.escape(str(model_cfg.get("net")))
    out.append(f"<p>Kind <b>{kind}</b> on the <b>{net}"
               f"</b> network for images of shape {html.escape(' x '.join(map(str, model_cfg.get('input_shape', []))))}"
               + (f", {params:,} parameters" if isinstance(params, int) else "") + ". Options <code>"
               + html.escape(json.dumps(model_cfg.get("options", {}))) + "</code>, network options <code>"
               + html.escape(json.dumps(model_cfg.get("net_options", {}))) + "</code>.</p>")
    if layers:
        rows = [[r["layer"], r["type"], " x ".join(map(str, r.get("output_shape") or [])), f"{r['parameters']:,}"]
                for r in layers]
        if isinstance(params, int):
            rows.append(["total", "", "", f"{params:,}"])
        out.append("<h3>Layers</h3>" + _table(["layer", "type", "output shape", "parameters"], rows, cls="layers"))
    doc = _kind_doc(str(model_cfg.get("kind")))
    terms = list(history.get("train", {}))
    if doc or terms:
        out.append("<h3>The loss</h3>")
        if doc:
            out.append(f'<pre class="doc">{html.escape(doc)}</pre>')
        if terms:
            rows = [[t, _fmt(history["train"][t][-1], 5),
                     _fmt(history.get("val", {}).get(t, [None])[-1], 5) if history.get("val", {}).get(t) else ""]
                    for t in terms]
            out.append("<p>Terms logged per epoch (\"loss\" is their weighted sum, the one minimised), "
                       "at the last epoch:</p>" + _table(["term", "train", "validation"], rows))
    train = config.get("train")
    if train:
        out.append("<h3>Training settings</h3>" + _table(["setting", "value"],
                                                         [[k, v if isinstance(v, str) else json.dumps(v)]
                                                          for k, v in train.items()]))
    return "".join(out)


@_reading("the run's history.json and the 'timing' section of metrics.json")
def training_section(run_dir: Path, metrics: dict, history: dict) -> str | None:
    """Loss curves per term (drawn from history.json when the run has no figure yet) and the
    time of each epoch."""
    train = history.get("train", {})
    if not train:
        return None
    path = runs.run_file(run_dir, "figures/history.png")
    if not path.is_file():
        plots.history(history, path, title="Loss per epoch")
    out = [_img(path, "Each loss term per epoch, on the training set and on the validation (test) set")]
    secs = history.get("seconds", [])
    if secs:
        median = statistics.median(secs[1:]) if len(secs) > 1 else secs[0]
        val = history.get("val", {})
        header = ["epoch", "seconds"] + [f"train {t}" for t in train] + [f"validation {t}" for t in val]
        rows = [[i + 1, _fmt(s, 1)] + [_fmt(train[t][i], 5) if i < len(train[t]) else "" for t in train]
                + [_fmt(val[t][i], 5) if i < len(val[t]) else "" for t in val] for i, s in enumerate(secs)]
        timing = metrics.get("timing", {})
        where = ", ".join(f"{k} {timing[k]}" for k in ("device", "threads", "batch_size") if k in timing)
        span = f"median of epochs 2..{len(secs)}" if len(secs) > 1 else "one epoch"
        out.append(f"<p>Seconds per epoch ({span}): {median:.1f} s"
                   + (f" ({html.escape(where)})" if where else "") + ".</p>" + _table(header, rows, cls="epochs"))
    return "".join(out)


def check_history(history: dict, path) -> dict:
    """``history`` as aelab writes it (``train`` and ``val``: each loss term's list of numbers, one
    per epoch; ``seconds``: a number per epoch), or a one-line :class:`ConfigError` naming what in
    the file ``path`` is not (a hand-edited or damaged history.json)."""
    fix = (f"restore {path} (or remove it: the report then leaves the training out), or retrain the run")

    def number(v) -> bool:
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))

    def found(v) -> str:
        text = json.dumps(v)
        return text if len(text) <= 60 else text[:57] + "..."

    for section in ("train", "val"):
        terms = history.get(section, {})
        if not isinstance(terms, dict):
            raise ConfigError(f"{path}: expected {section!r} to map each loss term to its values per epoch "
                              f"({{\"loss\": [0.03, ...]}}), found {found(terms)}; {fix}")
        for term, values in terms.items():
            if not isinstance(values, list) or not values or not all(number(v) for v in values):
                raise ConfigError(f"{path}: expected {section}.{term} to be a list of numbers, one per epoch, "
                                  f"found {found(values)}; {fix}")
    seconds = history.get("seconds", [])
    if not isinstance(seconds, list) or not all(number(v) and v is not None for v in seconds):
        raise ConfigError(f"{path}: expected 'seconds' to be a list of numbers, one per epoch, found "
                          f"{found(seconds)}; {fix}")
    return history


MAP_NOTE = ("Trustworthiness@10 (Venna &amp; Kaski 2001; 1 = every neighbour in the map is a neighbour "
            "in pixel space) on all the points against the test pixels, and the 5-fold accuracy "
            "of a 5-nearest-neighbour classifier on the 2-D points (how well the classes separate); "
            "\"codes kNN-5\" is the same classifier on the codes themselves, the ceiling of a map of "
            "those codes (docs/protocols.md).")
# a generative kind's figures (aelab.generate), in reading order, then any other vae_*.png
GENERATIVE_FIGURES = {
    "vae_samples.png": "Samples: images decoded from z ~ N(0, I)",
    "vae_manifold.png": "The 2-D latent manifold: decoded z on a grid of N(0, 1) quantiles",
    "vae_traversals.png": "Latent traversals: one unit swept from -3 to 3, the others at a test image's mean",
    "vae_interpolation.png": "Interpolation between the posterior means of two test images",
}


def maps_table(metrics: dict) -> str | None:
    """One row per 2-D map of ``metrics["embedding"]``: its codes, method and scores."""
    maps = metrics.get("embedding")
    if not maps:
        return None
    rows = []
    for key, e in sorted(maps.items(), key=lambda kv: (kv[1].get("baseline") is not None, kv[0])):
        rows.append([e.get("source", key), e.get("method", ""), f"{e.get('points', 0):,}",
                     _fmt(e.get("trustworthiness"), 3), _fmt(e.get("knn_accuracy"), 3),
                     _fmt(e.get("codes_knn_accuracy"), 3) if "codes_knn_accuracy" in e else "",
                     _fmt(e.get("seconds_map"), 1)])
    return _table(["codes", "map", "points", "trustworthiness@10", "2-D kNN-5", "codes kNN-5", "seconds"],
                  rows, cls="maps")


@_reading("the 'embedding' section of the run's metrics.json")
def latent_section(run_dir: Path, metrics: dict) -> str | None:
    """The 2-D maps (coloured and with thumbnails) with their scores; a generative kind's
    samples, manifold and traversals when the run has them."""
    out = []
    table = maps_table(metrics)
    if table:
        out.append(f'<p class="note">{MAP_NOTE}</p>' + table)
        maps = metrics["embedding"]
        for key, e in sorted(maps.items(), key=lambda kv: (kv[1].get("baseline") is not None, kv[0])):
            label = f"{e.get('source', key)} + {e.get('method', '')}"
            figs = [_figure(run_dir, f"map_{key}.png", f"{label}, coloured by class"),
                    _figure(run_dir, f"map_{key}_thumbnails.png", f"{label}, with the images at a spread of points")]
            if any(figs):
                out.append(f"<h3>{html.escape(label)}</h3>" + "".join(figs))
    figs_dir = runs.run_file(run_dir, "figures")
    others = sorted(p.name for p in figs_dir.glob("vae_*.png")) if figs_dir.is_dir() else []
    generative = [_figure(run_dir, name, GENERATIVE_FIGURES.get(name, name[:-4].replace("_", " ")))
                  for name in [*GENERATIVE_FIGURES, *(n for n in others if n not in GENERATIVE_FIGURES)]]
    if any(generative):
        out.append("<h3>The generative model</h3>" + "".join(generative))
    return "".join(out) or None


@_reading("the run's config.json and the 'embedding' and 'timing' sections of metrics.json")
def reproduce_section(config: dict, metrics: dict, command: str | None = None) -> str:
    """The exact commands that made this run and its maps, the versions, the timing."""
    torch_version = torch.__version__
    commands = [command or config.get("command")]
    commands += [e.get("command") for e in metrics.get("embedding", {}).values()]
    commands = [c for c in dict.fromkeys(commands) if c]
    out = [f"<p>aelab {html.escape(__version__)}, PyTorch {html.escape(torch_version)}, Python "
           f"{html.escape(platform.python_version())} on {html.escape(platform.platform(terse=True))}.</p>"]
    if commands:
        out.append("<p>Commands:</p><pre>" + html.escape("\n".join(commands)) + "</pre>")
    timing = metrics.get("timing")
    if timing:
        out.append(_table(["timing", "value"], [[k, v] for k, v in timing.items()]))
    return "".join(out)


RD_NOTE = ("Real bytes: each codec writes its files (or one stream for a whole set) and reads them back; bytes per "
           "image is the mean file length, PSNR and SSIM are per image then averaged (docs/protocols.md). Values at "
           "~50/~100/~200 bytes are interpolated in log bytes between measured points; \"impossible\" means the "
           "smallest file of that codec is bigger.")


@_reading("the run's rd.json")
def compression_section(run_dir: Path) -> str | None:
    """The rate-distortion table and curves of ``aelab rd`` (``rd.json``), when the run has them."""
    path = runs.run_file(run_dir, "rd.json")
    if not path.is_file():
        return None

    result = runs.read_json(path)
    out = [f'<p class="note">{html.escape(RD_NOTE)}</p>']
    for i, (caption, header, rows) in enumerate(rd_tables(result)):
        out.append(f"<p>{html.escape(caption)}</p>" + _table(header, rows, cls="rd" if i == 0 else ""))
        if i == 0:
            out += [_figure(run_dir, "rd_psnr.png", "PSNR against bytes per image (log scale), one line per codec"),
                    _figure(run_dir, "rd_ssim.png", "SSIM against bytes per image (log scale), one line per codec")]
    counted = [[e["label"], e.get("counts", "")] for e in result.get("methods", {}).values()]
    if counted:
        out.append("<p>What each row counts:</p>" + _table(["method", "bytes counted"], counted))
    commands = [c for c in result.get("commands", [result.get("command")]) if c]
    if commands:
        out.append("<p>Commands:</p><pre>" + html.escape("\n".join(commands)) + "</pre>")
    return "".join(out)


def _number_sections(body: str) -> str:
    """Number the sections present 1, 2, 3... (absent ones leave no gap) and put a table of
    contents after the title and summary."""
    titles = []

    def renumber(m):
        titles.append(m.group(1))
        return f'<h2 id="s{len(titles)}">{len(titles)}. {m.group(1)}</h2>'

    body = re.sub(r"<h2>\d+\. ([^<]*)</h2>", renumber, body)
    nav = "<nav><ol>" + "".join(f'<li><a href="#s{i}">{t}</a></li>' for i, t in enumerate(titles, 1)) + "</ol></nav>"
    first = body.find('<h2 id="s1">')
    return body if first < 0 else body[:first] + nav + body[first:]


def _data_section(figs: Path, metrics: dict) -> str:
    """The data's sample grids and its class counts ("" when the run has none)."""
    data_parts = []
    for name, alt in (("samples.png", "The first 50 training images"),
                      ("noisy_samples.png", "The same images with the training noise")):
        if (figs / name).exists():
            data_parts.append(_img(figs / name, alt))
    counts = metrics.get("data", {}).get("class_counts")
    if counts:
        data_parts.append(_table(["class", "train", "test"],
                                 [[c, v.get("train", ""), v.get("test", "")] for c, v in counts.items()]))
    return "".join(data_parts)


def _denoising_section(figs: Path, metrics: dict) -> str:
    """The quality table, `aelab evaluate`'s tables and the denoising figures ("" when none)."""
    den_parts = []
    table = quality_table(metrics)
    if table:
        den_parts.append("<p>Test set, PSNR and SSIM per image then averaged (docs/protocols.md), "
                         "fixed evaluation noise (seed 0).</p>" + table)
    if metrics.get("evaluation"):  # `aelab evaluate`: the model against the classical baselines
        for caption, header, rows in _evaluation_tables(metrics["evaluation"]):
            den_parts.append(f"<p>{html.escape(caption)}</p>" + _table(header, rows))
    if (figs / "denoised.png").exists():
        den_parts.append(_img(figs / "denoised.png", "Noisy / cleaned / original, first 10 test images"))
    if (figs / "hardest.png").exists():
        den_parts.append(_img(figs / "hardest.png", "The hardest test images: the lowest PSNR after cleaning "
                              "(noisy / cleaned / original)"))
    for extra in sorted(figs.glob("evaluate_*.png")) if figs.exists() else []:
        den_parts.append(_img(extra, extra.stem.replace("_", " ")))
    return "".join(den_parts)


def write_report(run_dir, command: str | None = None) -> Path:
    """Write ``run_dir/report.html`` from whatever the run holds and return its path."""
    run_dir = runs.output_dir(run_dir)  # a zoo model's report goes to runs/zoo-NAME
    rd_only = not (run_dir / runs.CONFIG).exists() and (run_dir / "rd.json").is_file()  # `aelab rd` without a model
    config = {"model": None} if rd_only else runs.read_config(run_dir)
    fix = f"make {run_dir} writable, or copy the run elsewhere and report on the copy"
    ownership.check_writable(run_dir, fix=fix)  # before the page is built: it has no --out to choose
    metrics_path, history_path = runs.run_file(run_dir, runs.METRICS), runs.run_file(run_dir, runs.HISTORY)
    metrics = check_metrics(runs.read_json(metrics_path), metrics_path) \
        if os.path.lexists(metrics_path) else {}
    history = check_history(runs.read_json(history_path), history_path) \
        if os.path.lexists(history_path) else {}
    figs = runs.run_file(run_dir, "figures")
    model_cfg = config["model"]
    parts = [f"<h1>aelab: {html.escape(model_cfg['kind'])} autoencoder ({html.escape(model_cfg['net'])} network)</h1>"
             if model_cfg else "<h1>aelab: rate-distortion of image codecs</h1>"]
    summary = metrics.get("summary", {})
    if summary:
        parts.append("<p>" + html.escape(summary.get("text", "")) + "</p>")
    if runs.run_file(run_dir, "explore.html").is_file():  # `aelab explore` wrote the interactive page
        parts.append('<p class="note"><a href="explore.html">Explore this model</a>: the latent map, live '
                     'decoding and denoising in one page (explore.html, beside this report).</p>')

    # 1. the data
    data_html = _data_section(figs, metrics)
    if data_html:
        parts.append("<h2>1. The data</h2>" + data_html)

    # 2. the model
    model_html = model_section(config, metrics, history) if model_cfg else None
    if model_html:
        parts.append("<h2>2. The model</h2>" + model_html)

    # 3. training
    training_html = training_section(run_dir, metrics, history)
    if training_html:
        parts.append("<h2>3. Training</h2>" + training_html)

    # 4. denoising
    denoising_html = _denoising_section(figs, metrics)
    if denoising_html:
        parts.append("<h2>4. Denoising</h2>" + denoising_html)

    # 5. latent space
    latent_html = latent_section(run_dir, metrics)
    if latent_html:
        parts.append("<h2>5. The latent space</h2>" + latent_html)

    # 6. compression (`aelab rd`)
    compression_html = compression_section(run_dir)
    if compression_html:
        parts.append("<h2>6. Compression</h2>" + compression_html)

    # 7. how to reproduce
    parts.append("<h2>7. How to reproduce</h2>" + reproduce_section(config, metrics, command))

    body = _number_sections("\n".join(parts))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>aelab report: {html.escape(run_dir.name)}"
            f"</title><style>{CSS}</style></head><body>" + body + "</body></html>\n")
    try:
        return runs.atomic_write_text(run_dir / "report.html", page)
    except ConfigError as exc:  # the writer's fix names --out, which `aelab report` does not have
        raise ConfigError(_with_fix(str(exc), fix)) from None


def _with_fix(message: str, fix: str) -> str:
    """``message`` of :func:`aelab.runs.atomic_write_bytes` with its last advice ("choose another
    --out") replaced by ``fix``."""
    advice = "choose another --out"
    return message[:-len(advice)] + fix if message.endswith(advice) else message
