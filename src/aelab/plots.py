"""Figures, drawn with matplotlib's Agg backend and saved as PNG (never shown).

Each function takes tensors or arrays in [0, 1] (N, C, H, W) and a path, writes the
figure atomically and returns the path.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .curves import LEARNED, TARGETS, pareto_front
from .runs import atomic_write_bytes


def _plt():
    import matplotlib  # heavy: matplotlib, loaded on first use
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # after choosing the Agg backend
    return plt


def _label(text) -> str:
    """A data-derived label (a class name, a file name) shown literally: ``$`` would start
    matplotlib's mathtext, and a name like ``$\\x$`` would make savefig fail."""
    return str(text).replace("$", r"\$")


def _image(x) -> tuple[np.ndarray, str | None]:
    """(C, H, W) in [0, 1] -> an array imshow draws, and the colormap to use."""
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    if a.shape[0] == 1:
        return a[0], "gray"
    return np.transpose(a, (1, 2, 0)), None


def _save(fig, path) -> Path:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def image_grid(images, path, titles=None, ncols: int = 10, suptitle: str | None = None, cell: float = 1.3) -> Path:
    """A grid of images (the tutorial's 5 x 10 sample grid), each with an optional title."""
    plt = _plt()
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell, nrows * (cell + 0.25)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img, cmap = _image(images[i])
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(_label(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def rows(named_rows: list[tuple[str, object]], path, titles=None, suptitle: str | None = None,
         cell: float = 1.3) -> Path:
    """Rows of images side by side, each row labelled on its left (e.g. noisy / cleaned / original)."""
    plt = _plt()
    nrows = len(named_rows)
    ncols = max(len(r) for _, r in named_rows)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell + 1.0, nrows * (cell + 0.2)), squeeze=False)
    for r, (label, images) in enumerate(named_rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                img, cmap = _image(images[c])
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
                if r == 0 and titles is not None:
                    ax.set_title(_label(titles[c]), fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=10, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def history(hist: dict, path, title: str = "Training") -> Path:
    """Loss per epoch, train and validation, one panel per loss term."""
    plt = _plt()
    terms = list(hist.get("train", {}))
    terms = ["loss"] + [t for t in terms if t != "loss"] if "loss" in terms else terms
    ncols = max(1, len(terms))
    fig, axes = plt.subplots(1, ncols, figsize=(4.5 * ncols, 3.4), squeeze=False)
    for ax, term in zip(axes.flat, terms):
        train = hist["train"][term]
        epochs = np.arange(1, len(train) + 1)
        ax.plot(epochs, train, "o-", label="train")
        if term in hist.get("val", {}):
            ax.plot(epochs[:len(hist["val"][term])], hist["val"][term], "s--", label="validation (test set)")
        ax.set_xlabel("epoch")
        ax.set_title(term)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def lines(x_values, series: dict[str, list[float]], path, xlabel: str, ylabel: str, title: str = "") -> Path:
    """One line per named series against shared x values (e.g. PSNR against noise factor)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, ys in series.items():
        ax.plot(x_values, ys, "o-", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- 2-D maps

def _class_colors(n: int):
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _scatter_classes(ax, points, labels, class_names, size: float, alpha: float, legend: bool) -> None:
    colors = _class_colors(len(class_names))
    labels = np.asarray(labels)
    for c, name in enumerate(class_names):
        sel = labels == c
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=size, color=colors[c], alpha=alpha, linewidths=0,
                       label=str(name), rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if legend:
        leg = ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=(60.0 / max(size, 1e-3)) ** 0.5,
                        frameon=False, fontsize=10)
        for handle in leg.legend_handles:
            handle.set_alpha(1.0)


def embedding_map(points, labels, class_names, path, title: str = "") -> Path:
    """The 2-D points coloured by class, with a legend of class names."""
    plt = _plt()
    points = np.asarray(points)
    fig, ax = plt.subplots(figsize=(9.5, 8))
    size = float(np.clip(25000.0 / max(len(points), 1), 2.0, 30.0))  # marker area: 2.5 pt^2 for 10,000 points
    _scatter_classes(ax, points, labels, class_names, size, 0.8, legend=True)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def draw_thumbnails(ax, points, images, indices, colors=None, zoom: float = 1.0) -> list:
    """Put ``images[i]`` at ``points[i]`` for every ``i`` in ``indices`` on ``ax`` (framed in
    ``colors[k]`` when given); returns the AnnotationBbox artists in the order of ``indices``."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage  # heavy: matplotlib, loaded on first use

    artists = []
    for k, i in enumerate(np.asarray(indices, dtype=np.int64)):
        img, cmap = _image(images[i])
        thumb = OffsetImage(img, cmap=cmap, zoom=zoom)
        thumb.get_children()[0].set_clim(0, 1)  # grey images: 0 is black and 1 white, as in every other figure
        box = AnnotationBbox(thumb, tuple(np.asarray(points[i], float)), frameon=True, pad=0.05,
                             bboxprops={"edgecolor": colors[k] if colors is not None else "k", "linewidth": 1.2})
        ax.add_artist(box)
        artists.append(box)
    return artists


def embedding_thumbnails(points, labels, images, indices, class_names, path, title: str = "",
                         grid: int = 12) -> Path:
    """The map with the images themselves at a spread of points (``indices``), framed in
    their class colour, over the faint coloured points: what lives where."""
    plt = _plt()
    points = np.asarray(points)
    fig, ax = plt.subplots(figsize=(11, 10))
    size = float(np.clip(25000.0 / max(len(points), 1), 2.0, 30.0))
    _scatter_classes(ax, points, labels, class_names, size, 0.35, legend=True)
    colors = _class_colors(len(class_names))
    labels = np.asarray(labels)
    fig.canvas.draw()  # fixes the data-to-pixel transform, to size the thumbnails
    corners = ax.transData.transform(np.stack([points.min(0), points.max(0)]))
    cell_px = float(np.abs(corners[1] - corners[0]).max()) / grid
    h, w = np.asarray(images[0]).shape[-2:]
    zoom = 0.8 * cell_px / (max(h, w) * fig.dpi / 72.0)  # OffsetImage draws one image pixel per point
    draw_thumbnails(ax, points, images, indices, colors=[colors[int(labels[i])] for i in indices], zoom=zoom)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def columns(named_columns: list[tuple[str, object]], path, row_labels=None, suptitle: str | None = None,
            cell: float = 1.2) -> Path:
    """Columns of images, each titled at its top (e.g. noisy / each method / clean), one row
    per image, rows labelled on the left."""
    plt = _plt()
    ncols = len(named_columns)
    nrows = max(len(c) for _, c in named_columns)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell + 1.0, nrows * cell + 0.6), squeeze=False)
    for c, (title, images) in enumerate(named_columns):
        axes[0, c].set_title(_label(title), fontsize=8)
        for r in range(nrows):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r < len(images):
                img, cmap = _image(images[r])
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(str(label), fontsize=8, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return _save(fig, path)


def rd_figures(result: dict, figures_dir) -> list[Path]:
    """``rd_psnr.png`` and ``rd_ssim.png``: bytes per image (log) against quality, one line per
    method; lossless methods as dotted vertical lines at their size."""
    plt = _plt()
    paths = []
    for key, unit in (("psnr", "PSNR (dB)"), ("ssim", "SSIM")):
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        markers = "osD^v<>ph*"
        for i, (m, e) in enumerate(result["methods"].items()):
            pts = sorted(e["points"], key=lambda p: p["bytes_per_image"])
            if all(p.get("lossless") for p in pts):
                ax.axvline(pts[0]["bytes_per_image"], ls=":", color=f"C{i % 10}",
                           label=f"{e['label']}: {pts[0]['bytes_per_image']:.0f} B")
                continue
            pts = [p for p in pts if p.get(key) is not None]
            front = pareto_front(pts, key)  # the line; points another beats with fewer bytes: faint marks
            ax.plot([p["bytes_per_image"] for p in front], [p[key] for p in front], marker=markers[i % len(markers)],
                    ms=4, lw=2.2 if m == LEARNED else 1.4, color=f"C{i % 10}", label=e["label"])
            rest = [p for p in pts if not any(p is q for q in front)]
            if rest:
                ax.plot([p["bytes_per_image"] for p in rest], [p[key] for p in rest], ls="none",
                        marker=markers[i % len(markers)], ms=4, mfc="none", alpha=0.6, color=f"C{i % 10}")
        for t in TARGETS:
            ax.axvline(t, color="0.85", lw=0.8, zorder=0)
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ticks = [t for t in (5, 10, 20, 50, 100, 200, 500, 1000, 2000) if lo <= t <= hi]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # no "3 x 10^2" labels between the round numbers
        ax.set_xlabel("bytes per image (log scale)")
        ax.set_ylabel(unit)
        ax.set_title(f"Rate-distortion on {result['test_images']:,} test images")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        paths.append(_save(fig, Path(figures_dir) / f"rd_{key}.png"))
    return paths

