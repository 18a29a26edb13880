"""A run's t-SNE map of the codes scored two ways: aelab's protocol and the Parametric UMAP paper's.

    python benchmarks/map_protocols.py --run runs/codes [--with-pixels 1] [--seed 0] [--json OUT]

- ours (``aelab embed``, docs/protocols.md "2-D maps"): t-SNE of the 10,000 test codes alone;
  5-fold kNN-5 accuracy of the 2-D test points; trustworthiness@10 of the test points against
  their pixels;
- the paper's (Sainburg, McInnes & Gentner 2021): t-SNE fitted on the 60,000 training codes,
  the test codes placed into that map (openTSNE's ``transform``); kNN-5 fitted on the
  training points' positions and scored on the test points'; trustworthiness with k = 5 on
  10,000 training points (the first 10,000) against their pixels.

Both maps use openTSNE with the same settings (perplexity 30, PCA initialisation, the seed);
``--with-pixels W`` maps the codes joined with W x PCA-50 of the pixels, as ``aelab embed``
does. Needs openTSNE (pip install 'aelab[embed]'). About 8 CPU minutes on one thread.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from aelab import runs
from aelab.anchors import ANCHORS
from aelab.data import load_dataset
from aelab.embed import JOINT_COMPONENTS, baseline_codes, joint_codes, map_scores, reduce
from aelab.inference import model_codes
from aelab.metrics import knn_accuracy, trustworthiness

TRAIN_TRUST_POINTS = 10_000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained run (its codes are mapped)")
    p.add_argument("--with-pixels", type=float, default=0.0, help="join W x PCA-50 of the pixels (as aelab embed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None, help="default: the run's data")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    import openTSNE  # optional: pip install 'aelab[embed]'

    torch.set_num_threads(args.threads)
    data = args.data or runs.read_config(args.run).get("train", {}).get("data")
    train, test = load_dataset(data, "train"), load_dataset(data, "test")
    model = runs.load_model(args.run)
    codes_train, codes_test = model_codes(model, train.x), model_codes(model, test.x)
    ours = codes_test
    if args.with_pixels > 0:  # ours: the test codes alone, as aelab embed joins them; the paper's: all of them
        pix_train, _ = baseline_codes(f"pca{JOINT_COMPONENTS}", train.x, lambda: train.x, args.seed)
        pix_test, _ = baseline_codes(f"pca{JOINT_COMPONENTS}", test.x, lambda: train.x, args.seed)
        ours = joint_codes(codes_test, pix_test, args.with_pixels)
        both = joint_codes(np.concatenate([codes_train, codes_test]), np.concatenate([pix_train, pix_test]),
                           args.with_pixels)
        codes_train, codes_test = both[:len(train)], both[len(train):]
    rows = {}

    t0 = time.process_time()
    points, _ = reduce(ours, method="tsne", seed=args.seed, threads=args.threads, progress=False)
    s = map_scores(test.x.numpy(), points, test.y.numpy())
    rows["ours"] = {"knn5": s["knn_accuracy"], "trustworthiness": s["trustworthiness"],
                    "knn": "5-fold on the 10,000 test points", "trust": "k = 10 on the 10,000 test points",
                    "cpu_s": round(time.process_time() - t0, 1)}

    t0 = time.process_time()
    tsne = openTSNE.TSNE(n_components=2, perplexity=30, initialization="pca", n_jobs=args.threads,
                         random_state=args.seed)
    emb_train = tsne.fit(codes_train)
    emb_test = np.asarray(emb_train.transform(codes_test))
    emb_train = np.asarray(emb_train)
    n = min(TRAIN_TRUST_POINTS, len(train))
    rows["paper"] = {"knn5": round(knn_accuracy(emb_train, train.y.numpy(), emb_test, test.y.numpy()), 4),
                     "trustworthiness": round(trustworthiness(train.x[:n].flatten(1).numpy(), emb_train[:n],
                                                              n_neighbors=5), 4),
                     "knn": "fitted on the 60,000 training positions, scored on the test positions",
                     "trust": f"k = 5 on the first {n:,} training points",
                     "cpu_s": round(time.process_time() - t0, 1)}

    print(f"{args.run}: t-SNE of the codes{f' joined with {args.with_pixels:g} x PCA-50 of the pixels' if args.with_pixels else ''}, seed {args.seed}")
    print("| protocol | kNN-5 | trustworthiness | kNN-5 measured | trustworthiness measured | CPU s |")
    print("|---|---:|---:|---|---|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['knn5']:.4f} | {r['trustworthiness']:.4f} | {r['knn']} | {r['trust']} | {r['cpu_s']:.0f} |")
    what, who, figures, protocol = ANCHORS["map"]
    for method, (knn, trust) in figures:  # the published maps, measured by their authors
        print(f"| {method}, published ({who}) | {knn} | {trust} | {protocol} | | |")
    if args.json:
        runs.write_json(args.json, {"run": str(args.run), "with_pixels": args.with_pixels, "seed": args.seed,
                                    "protocols": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
