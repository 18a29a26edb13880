"""Run directory -> ``report.html``: one self-contained page (images embedded as data
URIs, no network) that reads like an experiment report, with measured numbers.

Sections without data are left out, not shown empty.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from . import runs


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(v, digits=2):
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else str(v)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.5}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 10px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
code,pre{background:#f6f6f6;padding:2px 4px}pre{padding:8px;overflow-x:auto}
"""


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


def write_report(run_dir, command: str | None = None) -> Path:
    """Write ``run_dir/report.html`` from whatever the run holds and return its path."""
    from . import __version__

    run_dir = Path(run_dir)
    config = runs.read_config(run_dir)
    metrics = runs.read_json(run_dir / runs.METRICS) if (run_dir / runs.METRICS).exists() else {}
    history = runs.read_json(run_dir / runs.HISTORY) if (run_dir / runs.HISTORY).exists() else {}
    figs = run_dir / "figures"
    model_cfg = config["model"]
    parts = [f"<h1>aelab: {html.escape(model_cfg['kind'])} autoencoder ({html.escape(model_cfg['net'])} network)</h1>"]
    summary = metrics.get("summary", {})
    if summary:
        parts.append("<p>" + html.escape(summary.get("text", "")) + "</p>")

    # 1. the data
    data_parts = []
    for name, alt in (("samples.png", "The first 50 training images"),
                      ("noisy_samples.png", "The same images with the training noise")):
        if (figs / name).exists():
            data_parts.append(_img(figs / name, alt))
    counts = metrics.get("data", {}).get("class_counts")
    if counts:
        data_parts.append(_table(["class", "train", "test"],
                                 [[c, v.get("train", ""), v.get("test", "")] for c, v in counts.items()]))
    if data_parts:
        parts.append("<h2>1. The data</h2>" + "".join(data_parts))

    # 2. the model
    model_parts = []
    layers = metrics.get("model", {}).get("layers")
    if layers:
        model_parts.append(_table(["layer", "type", "output shape", "parameters"],
                                  [[r["layer"], r["type"], "x".join(map(str, r["output_shape"] or [])), r["parameters"]]
                                   for r in layers]))
    if "parameters" in metrics.get("model", {}):
        model_parts.append(f"<p>Parameters: {metrics['model']['parameters']:,}. Loss terms: "
                           f"{html.escape(', '.join(history.get('train', {}).keys()))}.</p>")
    if config.get("train"):
        model_parts.append("<p>Training settings:</p><pre>" + html.escape(json.dumps(config["train"], indent=1)) + "</pre>")
    if model_parts:
        parts.append("<h2>2. The model</h2><p>Options: <code>" + html.escape(json.dumps(model_cfg.get("options", {}))) +
                     "</code>, network options <code>" + html.escape(json.dumps(model_cfg.get("net_options", {}))) +
                     "</code></p>" + "".join(model_parts))

    # 3. training
    train_parts = []
    if (figs / "history.png").exists():
        train_parts.append(_img(figs / "history.png", "Loss per epoch"))
    if history.get("seconds"):
        secs = history["seconds"]
        train_parts.append(f"<p>Seconds per epoch: {', '.join(f'{s:.1f}' for s in secs)}"
                           f" (median of epochs 2..E: {metrics.get('timing', {}).get('seconds_per_epoch', secs[-1]):.1f} s).</p>")
    if train_parts:
        parts.append("<h2>3. Training</h2>" + "".join(train_parts))

    # 4. denoising
    den_parts = []
    table = quality_table(metrics)
    if table:
        den_parts.append("<p>Test set, PSNR and SSIM per image then averaged (PROTOCOLS.md), "
                         "fixed evaluation noise (seed 0).</p>" + table)
    if (figs / "denoised.png").exists():
        den_parts.append(_img(figs / "denoised.png", "Noisy / cleaned / original, first 10 test images"))
    for extra in sorted(figs.glob("evaluate_*.png")) if figs.exists() else []:
        den_parts.append(_img(extra, extra.stem.replace("_", " ")))
    if den_parts:
        parts.append("<h2>4. Denoising</h2>" + "".join(den_parts))

    # 5. latent space
    latent = [_img(p, p.stem.replace("_", " ")) for p in sorted(figs.glob("map_*.png"))] if figs.exists() else []
    latent += [_img(p, p.stem.replace("_", " ")) for p in sorted(figs.glob("vae_*.png"))] if figs.exists() else []
    if latent:
        parts.append("<h2>5. The latent space</h2>" + "".join(latent))

    # 6. how to reproduce
    cmd = command or config.get("command")
    repro = f"<p>aelab {html.escape(__version__)}" + (f"; command: <code>{html.escape(cmd)}</code>" if cmd else "") + "</p>"
    timing = metrics.get("timing")
    if timing:
        repro += "<pre>" + html.escape(json.dumps(timing, indent=1)) + "</pre>"
    parts.append("<h2>6. How to reproduce</h2>" + repro)

    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>aelab report: {html.escape(run_dir.name)}"
            f"</title><style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
    return runs.atomic_write_text(run_dir / "report.html", page)
