"""Published figures on Fashion-MNIST that aelab's own are set next to: measured by their
authors under their protocols (docs/protocols.md, "Anchors"), not by aelab.

They apply only to the full Fashion-MNIST (60,000 training and 10,000 test images): on
other data or a ``--limit`` they are no scale at all, and :func:`applies` says so.
"""

from __future__ import annotations

from .data import FASHION_CLASSES

PARAMETRIC_UMAP = "Sainburg, McInnes & Gentner 2021, Parametric UMAP"
EXEMPLAR_VAE = "Norouzi, Fleet & Norouzi 2020, Exemplar VAE"

# key -> (what is measured, whose, [(model, figure)], their protocol)
ANCHORS = {
    "knn5": ("kNN-5 accuracy of the codes (higher is better)", PARAMETRIC_UMAP,
             [("64-d VAE", 0.883), ("64-d AE", 0.8756), ("PCA-64", 0.8568)],
             "kNN-5 fitted on the 60,000 training codes, scored on the 10,000 test codes"),
    "iw_nll": ("-log p(x) in nats, importance-weighted bound (lower is better)", EXEMPLAR_VAE,
               [("one-layer VAE, Gaussian prior", 228.70), ("Exemplar PixelSNAIL", 223.26)],
               "dynamically binarised training, test images binarised once, 5,000 importance samples"),
    "map": ("2-D map: kNN-5 accuracy / trustworthiness (higher is better)", PARAMETRIC_UMAP,
            [("t-SNE", (0.804, 0.991)), ("UMAP", (0.761, 0.978))],
            "kNN-5 fitted on the training points' positions, scored on the test points'; "
            "trustworthiness k = 5 on 10,000 training points"),
}


def applies(class_names, train_images: int, test_images: int) -> bool:
    """Whether the anchors are a scale for figures measured on this data: the full Fashion-MNIST."""
    return list(class_names or []) == list(FASHION_CLASSES) and train_images == 60_000 and test_images == 10_000


def _figure(value) -> str:
    return " / ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


def anchor_rows(rows: list[dict], iw_samples: int) -> list[list[str]]:
    """Rows of (figure, this comparison's best, the published figures, their protocol) for the
    figures an ``aelab compare`` measures: the codes' kNN-5 (the best row) and the
    variational row's importance-weighted bound."""
    def row(key, ours):
        what, who, figures, protocol = ANCHORS[key]
        return [what, ours, "; ".join(f"{m} {_figure(v)}" for m, v in figures) + f" ({who})", protocol]

    out = []
    knn = [r for r in rows if isinstance(r.get("knn5"), (int, float))]
    if knn:
        best = max(knn, key=lambda r: r["knn5"])
        out.append(row("knn5", f"{best['knn5']:.4f} ({best['name']}, {best['code_size']}-d)"))
    out += [row("iw_nll", f"{r['iw_nll']:.2f} ({r['name']}, K = {iw_samples})")
            for r in rows if isinstance(r.get("iw_nll"), (int, float))]
    return out
