"""Rate-distortion tables: the headline (quality at ~50/~100/~200 bytes per image), every point, rd.md."""

from __future__ import annotations

from pathlib import Path

from ..curves import TARGETS, at_bytes


def _cell(r: dict, digits: int = 1, unit: str = "") -> str:
    if "value" in r:
        return f"{r['value']:.{digits}f}{unit}"
    if "impossible" in r:
        return f"impossible (smallest {r['impossible']:.0f} B)"
    if "beyond" in r:
        return f"- (largest {r['beyond']:.0f} B)"
    return "-"


def summary_rows(result: dict, targets=TARGETS, key: str = "psnr") -> list[list[str]]:
    """The headline table: one row per method, ``key`` at each target (PSNR in dB); a
    lossless method shows its bytes per image instead."""
    rows = []
    for m, e in result["methods"].items():
        if e.get("lossless") or all(p.get("lossless") for p in e["points"]):
            cells = [f"lossless at {e['points'][0]['bytes_per_image']:.0f} B"] + [""] * (len(targets) - 1)
        else:
            digits, unit = (1, " dB") if key == "psnr" else (3, "")
            cells = [_cell(at_bytes(e["points"], t, key), digits, unit) for t in targets]
        rows.append([e["label"]] + cells)
    return rows


def points_rows(result: dict) -> list[list[str]]:
    rows = []
    for m, e in result["methods"].items():
        for p in e["points"]:
            param = "" if p["param"] is None else f"{e['param_name']} {p['param']}"
            if p.get("run"):  # learned codecs: several runs may share a lambda
                param = f"{Path(p['run']).name} ({param})" if param else Path(p["run"]).name
            rows.append([e["label"], param, f"{p['bytes_per_image']:.1f}",
                         "inf (lossless)" if p["psnr"] is None else f"{p['psnr']:.2f}", f"{p['ssim']:.4f}"])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def rd_tables(result: dict, targets=TARGETS) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(caption, header, rows)`` for Markdown and the report."""
    n = result["test_images"]
    head = ["bytes per image"] + [f"~{t}" for t in targets]
    return [
        (f"PSNR (dB) at equal bytes per image, {n:,} test images (interpolated in log bytes between measured points)",
         ["method (PSNR)"] + head[1:], summary_rows(result, targets, "psnr")),
        ("SSIM at equal bytes per image", ["method (SSIM)"] + head[1:], summary_rows(result, targets, "ssim")),
        ("Every measured point", ["method", "parameter", "bytes per image", "PSNR (dB)", "SSIM"], points_rows(result)),
    ]


def headline_markdown(result: dict) -> str:
    """The PSNR-at-equal-bytes table with its caption, as Markdown (what the CLI prints)."""
    caption, header, rows = rd_tables(result)[0]
    return caption + "\n\n" + markdown_table(header, rows)


def rd_markdown(result: dict) -> str:
    out = ["# Rate-distortion", "",
           f"{result['test_images']:,} test images; bytes per image = mean file length (one-stream codecs: stream "
           "length / images); PSNR and SSIM per image then averaged (PROTOCOLS.md)."]
    for caption, header, rows in rd_tables(result):
        out += ["", f"## {caption}", "", markdown_table(header, rows)]
    notes = [f"- {e['label']}: counts {e['counts']}." for e in result["methods"].values()]
    out += ["", "## What is counted", ""] + notes
    if result.get("skipped"):
        out += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items())]
    if result.get("command"):
        out += ["", "Command: `" + result["command"] + "`"]
    return "\n".join(out) + "\n"



__all__ = ["summary_rows", "points_rows", "markdown_table", "rd_tables", "headline_markdown", "rd_markdown"]
