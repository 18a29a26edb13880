"""Tables: every result table as ``(caption, header, rows)``, written as Markdown or HTML.

The producers (evaluate, rd, compare) store their results as JSON in the run; the builders
here turn those results into rows, so a table reads the same in ``evaluation.md``, ``rd.md``,
``compare.md`` and ``report.html``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from ..anchors import anchor_rows
from ..curves import TARGETS, at_bytes

_NUM = ' class="num"'


def _numeric(cell) -> bool:
    """Numbers (and numbers with a unit) are right-aligned, words left-aligned."""
    return isinstance(cell, (int, float)) or bool(re.fullmatch(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?( ?(dB|s|%))?",
                                                                 str(cell)))


def markdown_table(header: list[str], rows: list[list], align: list[str] | None = None) -> str:
    """A GitHub Markdown table; ``align`` gives each column's separator (e.g. ``"---:"``), default ``"---"``."""
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list], cls: str = "") -> str:
    """An HTML table, every cell escaped; numeric cells right-aligned."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{_NUM if _numeric(c) else ''}>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def fmt(v, digits=2):
    """A number with ``digits`` decimals; anything else as text."""
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else str(v)


# -- aelab evaluate ------------------------------------------------------------------

def slow_note(n: int, total: int) -> str:
    return f"first {n:,} of {total:,} test images" if n < total else f"all {total:,} test images"


def _method_rows(results: dict, factors: list[str], methods: list[str], labels: dict) -> list[list[str]]:
    rows = []
    for key in methods:
        cells = [labels[key]]
        for f in factors:
            r = results[f].get(key)
            cells.append(f"{r['psnr']:.2f} / {r['ssim']:.3f}" if r else "")
        rows.append(cells)
    return rows


def evaluation_tables(ev: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The tables of an ``aelab evaluate`` result (``evaluation.json``) as ``(caption, header, rows)``."""
    factors = [f"{f:g}" for f in ev["noise_factors"]]
    labels = {k: m["label"] for k, m in ev["methods"].items()}
    header = ["method (PSNR dB / SSIM)"] + [f"noise {f}" for f in factors]
    full = [k for k, m in ev["methods"].items() if m["images"] == ev["test_images"]]
    tables = [(f"All {ev['test_images']:,} test images", header, _method_rows(ev["results"], factors, full, labels))]
    if ev.get("subset"):
        n = ev["subset"]["images"]
        tables.append((f"The first {n:,} test images (slow baselines run on these only; every method on the same "
                       f"images)", header, _method_rows(ev["subset"]["results"], factors, list(ev["methods"]), labels)))
    tuned = [[labels[k], ", ".join(f"{f}: {m['params'][f]:g}" for f in factors if m["params"].get(f) is not None)]
             for k, m in ev["methods"].items() if any(v is not None for v in m.get("params", {}).values())]
    if tuned:
        tables.append(("Tuned parameters, per noise factor (on training images)", ["method", "parameter"], tuned))
    if ev.get("reconstruction"):
        tables.append(("Reconstruction (clean input)", ["method", "PSNR (dB)", "SSIM"],
                       [[r["label"], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}"] for r in ev["reconstruction"].values()]))
    pc = ev.get("per_class")
    if pc and pc["psnr"]:
        first = next(iter(pc["psnr"].values()))
        keys = [k for k in ev["methods"] if k in first]  # the order of the other tables
        tables.append((f"PSNR (dB) per class at noise {pc['noise_factor']:g}, "
                       f"{slow_note(pc['images'], ev['test_images'])}", ["class"] + [labels[k] for k in keys],
                       [[c] + [f"{v[k]:.2f}" for k in keys] for c, v in pc["psnr"].items()]))
    return tables


def evaluation_markdown(ev: dict) -> str:
    """The tables of an ``aelab evaluate`` result as Markdown (the body of ``evaluation.md``)."""
    out = [f"# Evaluation of {ev['run']}", "",
           f"Test set, PSNR and SSIM per image then averaged (docs/protocols.md), fixed evaluation "
           f"noise (seed 0) shared by every method. Baselines tuned on the first training images "
           f"({', '.join(f'{k} {v:,}' for k, v in ev['tuning']['images'].items())}) at each noise level, "
           f"with their own noise draw (seed {ev['tuning']['noise_seed']}), never on the test set."]
    for caption, header, rows in evaluation_tables(ev):
        out += ["", f"## {caption}", "", markdown_table(header, rows)]
    if ev.get("skipped"):
        out += ["", "Skipped: " + "; ".join(f"{k} ({why})" for k, why in ev["skipped"].items())]
    return "\n".join(out) + "\n"


# -- aelab rd ----------------------------------------------------------------------

def _rd_cell(r: dict, digits: int = 1, unit: str = "") -> str:
    if "value" in r:
        return f"{r['value']:.{digits}f}{unit}"
    if "impossible" in r:
        return f"impossible (smallest {r['impossible']:.0f} B)"
    if "beyond" in r:
        return f"- (largest {r['beyond']:.0f} B)"
    return "-"


def rd_summary_rows(result: dict, targets=TARGETS, key: str = "psnr") -> list[list[str]]:
    """The headline table: one row per method, ``key`` at each target (PSNR in dB); a
    lossless method shows its bytes per image instead."""
    rows = []
    for m, e in result["methods"].items():
        if e.get("lossless") or all(p.get("lossless") for p in e["points"]):
            cells = [f"lossless at {e['points'][0]['bytes_per_image']:.0f} B"] + [""] * (len(targets) - 1)
        else:
            digits, unit = (1, " dB") if key == "psnr" else (3, "")
            cells = [_rd_cell(at_bytes(e["points"], t, key), digits, unit) for t in targets]
        rows.append([e["label"]] + cells)
    return rows


def rd_points_rows(result: dict) -> list[list[str]]:
    rows = []
    for m, e in result["methods"].items():
        for p in e["points"]:
            param = "" if p["param"] is None else f"{e['param_name']} {p['param']}"
            if p.get("run"):  # learned codecs: several runs may share a lambda
                param = f"{Path(p['run']).name} ({param})" if param else Path(p["run"]).name
            rows.append([e["label"], param, f"{p['bytes_per_image']:.1f}",
                         "inf (lossless)" if p["psnr"] is None else f"{p['psnr']:.2f}", f"{p['ssim']:.4f}"])
    return rows


def rd_tables(result: dict, targets=TARGETS) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(caption, header, rows)`` for Markdown and the report."""
    n = result["test_images"]
    head = ["bytes per image"] + [f"~{t}" for t in targets]
    return [
        (f"PSNR (dB) at equal bytes per image, {n:,} test images (interpolated in log bytes between measured points)",
         ["method (PSNR)"] + head[1:], rd_summary_rows(result, targets, "psnr")),
        ("SSIM at equal bytes per image", ["method (SSIM)"] + head[1:], rd_summary_rows(result, targets, "ssim")),
        ("Every measured point", ["method", "parameter", "bytes per image", "PSNR (dB)", "SSIM"], rd_points_rows(result)),
    ]


def rd_headline_markdown(result: dict) -> str:
    """The PSNR-at-equal-bytes table with its caption, as Markdown (what the CLI prints)."""
    caption, header, rows = rd_tables(result)[0]
    return caption + "\n\n" + markdown_table(header, rows)


def rd_markdown(result: dict) -> str:
    out = ["# Rate-distortion", "",
           f"{result['test_images']:,} test images; bytes per image = mean file length (one-stream codecs: stream "
           "length / images); PSNR and SSIM per image then averaged (docs/protocols.md)."]
    for caption, header, rows in rd_tables(result):
        out += ["", f"## {caption}", "", markdown_table(header, rows)]
    notes = [f"- {e['label']}: counts {e['counts']}." for e in result["methods"].values()]
    out += ["", "## What is counted", ""] + notes
    if result.get("skipped"):
        out += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items())]
    if result.get("command"):
        out += ["", "Command: `" + result["command"] + "`"]
    return "\n".join(out) + "\n"


# -- aelab compare -----------------------------------------------------------------

COMPARE_COLUMNS = [  # (key, header, digits)
    ("code_size", "code", 0), ("psnr", "PSNR clean (dB)", 2), ("ssim", "SSIM clean", 3),
    ("psnr_denoise_0.2", "PSNR denoise 0.2 (dB)", 2), ("knn5", "kNN-5 acc.", 4), ("near_zero", "near-zero codes", 3),
    ("jacobian", "mean ||J||_F", 2), ("neg_elbo", "-ELBO (nats)", 1), ("iw_nll", "IW bound (nats)", 1),
    ("train_seconds", "train (s)", 0),
]


def compare_markdown_table(rows: list[dict]) -> str:
    """One row per kind, right-aligned numbers (a dash where a kind has no such figure)."""
    header = ["kind"] + [h for _, h, _ in COMPARE_COLUMNS]
    body = [[r["name"]] + [f"{r[k]:.{d}f}" if isinstance(r.get(k), (int, float)) else "–"
                           for k, _, d in COMPARE_COLUMNS] for r in rows]
    return markdown_table(header, body, align=["---"] + ["---:"] * len(COMPARE_COLUMNS))


def compare_markdown(result: dict) -> str:
    """``compare.md``: the settings, the table and what each column measures."""
    s = result["settings"]
    lines = [
        "# aelab compare", "",
        f"Every kind on the `{s['net']}` network ({json.dumps(s['net_options'])}), {s['epochs']} epochs, batch "
        f"{s['batch_size']}, Adam lr {s['lr']:g} ({s['schedule']} schedule), seed {s['seed']}; {s['train_images']} training and "
        f"{s['test_images']} test images." + "".join(
            f" The {r['name']} row: the `{r['net']}` network ({json.dumps(r['net_options'])})."
            for r in result["rows"] if r["name"] == "variational" and (s.get("vae_net") or s.get("vae_net_options"))),
        "",
        compare_markdown_table(result["rows"]), "",
        f"- PSNR/SSIM per test image then averaged; denoising with the fixed evaluation noise at 0.2 "
        f"(the noisy input scores {result['noisy_psnr_0.2']:.2f} dB).",
        "- kNN-5: fitted on the training codes, accuracy on the test codes (for the variational kind, the "
        "posterior mean).",
        "- near-zero codes: fraction of test code activations with |a| <= 5% of the largest.",
        f"- mean ||J||_F: exact Frobenius norm of the encoder's Jacobian, first {s['jacobian_images']} test images.",
    ]
    for r in result["rows"]:
        if "likelihood" in r:
            lines.append(f"- {r['name']}: -ELBO and importance-weighted bound (K = {s['iw_samples']}) in nats per "
                         f"image; likelihood: {r['likelihood']}.")
    lines.append("- Hyper-parameters per row: " + "; ".join(
        f"{r['name']} {json.dumps(r['options'])} noise {r['noise']}" for r in result["rows"]) + ".")
    anchors = compare_anchors_markdown(result)
    if anchors:
        lines += ["", "## Next to the published figures", "", anchors]
    if result.get("command"):
        lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def compare_anchors_markdown(result: dict) -> str:
    """This comparison's kNN-5 and likelihood next to the published Fashion-MNIST figures
    (:mod:`aelab.anchors`), or "" when the comparison is not on the full Fashion-MNIST."""
    s = result["settings"]
    if not s.get("fashion_mnist_full"):
        return ""
    rows = anchor_rows(result["rows"], s["iw_samples"])
    if not rows:
        return ""
    return (markdown_table(["figure", "this comparison", "published", "their protocol"], rows) + "\n\n"
            "The published figures were measured by their authors, not by aelab; docs/protocols.md says how "
            "each protocol differs from ours.")
