"""The commands that measure and show a trained run or the data (evaluate, report, embed, sample,
explore, data): their flags and what each runs.

Each handler imports the library when it runs (torch and friends are heavy), so building
the parser stays instant.
"""

from __future__ import annotations

from .command import FMT, Command
from .commands import _floats, _names, _no_download_arg
from .errors import AelabError
from .settings import EMBED, EVALUATE


def _evaluate_args(p):
    p.add_argument("--run", required=True, help="a run directory")
    p.add_argument("--noise-factors", type=_floats, default=list(EVALUATE.noise_factors),
                   help="comma-separated Gaussian noise factors (default "
                        + ",".join(f"{f:g}" for f in EVALUATE.noise_factors) + ")")
    p.add_argument("--baselines", type=_names, default=None,
                   help="comma-separated baselines (default: every installed one): gaussian, median, tv, wavelet, "
                   "nlmeans, bm3d, pca")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--slow-limit", type=int, default=EVALUATE.slow_limit,
                   help=f"slow baselines (BM3D) run on the first N test images (default {EVALUATE.slow_limit}, "
                        "docs/protocols.md)")
    p.add_argument("--tune-images", type=int, default=None,
                   help="training images to tune each baseline on (default: 200; PCA 20,000)")
    p.add_argument("--data", default=None, help="the data (default: the run's)")
    p.add_argument("--hardest", type=int, default=EVALUATE.hardest,
                   help=f"images in the gallery of the hardest (default {EVALUATE.hardest})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines")
    _no_download_arg(p)


def _evaluate(args, command_line):
    from .evaluate import evaluate  # heavy: torch, scikit-image
    from .report import write_report
    from .report.tables import evaluation_markdown

    ev = evaluate(run=args.run, noise_factors=args.noise_factors, baselines=args.baselines, limit=args.limit,
                  slow_limit=args.slow_limit, tune_images=args.tune_images, data=args.data,
                  hardest=args.hardest, threads=args.threads, progress=args.progress)
    write_report(args.run)
    print(evaluation_markdown(ev))
    print(f"wrote {args.run}/ (evaluation.md, evaluation.json, figures/evaluate_*.png, report.html)")


def _report_args(p):
    p.add_argument("--run", required=True, help="a run directory (a training run, or an `aelab rd` folder)")


def _report(args, command_line):
    from .report import write_report  # heavy: torch

    print(f"wrote {write_report(args.run)}")


def _embed_args(p):
    p.add_argument("--run", default=None, help="a run directory: its model gives the codes and its folder gets the files")
    p.add_argument("--method", default=EMBED.method,
                   help="tsne (openTSNE, else scikit-learn), umap, pca or ptsne (parametric t-SNE) "
                        f"(default {EMBED.method})")
    p.add_argument("--on", default="test", choices=["test", "train"], help="which split to encode (default test)")
    p.add_argument("--baseline", default=None, help="codes without a model: pcaN (e.g. pca32) or pixels")
    p.add_argument("--data", default=None, help="data source (default: what the run was trained on)")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N images")
    p.add_argument("--out", default=None, help="where the files go (default: the run directory)")
    p.add_argument("--perplexity", type=float, default=EMBED.perplexity,
                   help=f"t-SNE perplexity (default {EMBED.perplexity:g})")
    p.add_argument("--exaggeration", type=float, default=EMBED.exaggeration,
                   help="t-SNE exaggeration after the early phase (default 1)")
    p.add_argument("--n-neighbors", type=int, default=EMBED.n_neighbors,
                   help=f"UMAP neighbourhood size (default {EMBED.n_neighbors})")
    p.add_argument("--min-dist", type=float, default=EMBED.min_dist,
                   help=f"UMAP minimum distance (default {EMBED.min_dist:g})")
    p.add_argument("--seed", type=int, default=EMBED.seed, help="random state of the map")
    p.add_argument("--with-pixels", type=float, default=0.0, metavar="W",
                   help="map the codes joined with W x the pixels' first 50 principal components (each part "
                        "scaled to unit variance), so the map keeps pixel neighbourhoods too (default 0: off)")
    p.add_argument("--threads", type=int, default=EMBED.threads, help=f"CPU threads (default {EMBED.threads})")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write the codes with their classes and thumbnails for TensorBoard's projector, in "
                        "OUT/tensorboard/embedding_KEY/ (then: tensorboard --logdir OUT/tensorboard); needs "
                        "pip install 'aelab[tensorboard]'")
    _no_download_arg(p)


def _embed(args, command_line):
    from . import runs  # heavy: torch
    from .embed import embed
    from .report import write_report

    e = embed(run=args.run, method=args.method, on=args.on, baseline=args.baseline, data=args.data,
              limit=args.limit, out=args.out, perplexity=args.perplexity, exaggeration=args.exaggeration,
              n_neighbors=args.n_neighbors, min_dist=args.min_dist, seed=args.seed, threads=args.threads,
              with_pixels=args.with_pixels, tensorboard=args.tensorboard,
              progress=args.progress, command=command_line)
    out = args.out if args.out is not None else args.run
    if out is not None and runs.has_config(out):
        write_report(out)
    print(f"{e['source']} + {e['method']} on {e['points']:,} {e['split']} images: trustworthiness@"
          f"{e['trustworthiness_neighbors']} {e['trustworthiness']:.4f}, 2-D kNN-{e['knn_neighbors']} "
          f"{e['knn_accuracy']:.4f} (codes {e['codes_knn_accuracy']:.4f}), map {e['seconds_map']:.1f} s")
    print("wrote " + ", ".join(e["files"]))


def _sample_args(p):
    p.add_argument("--run", required=True, help="a run directory of the variational kind")
    p.add_argument("--out", default=None, help="output folder (default RUN/figures)")
    # the bounds are generate.MAX_SAMPLES and MAX_STEPS (that module imports torch; the test checks they agree)
    p.add_argument("--n", type=int, default=64, help="samples from the prior, 1 to 400 (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior draws")
    p.add_argument("--data", default=None, help="test images for traversals and interpolation (default: the run's data)")
    p.add_argument("--steps", type=int, default=10,
                   help="points per traversal, interpolation and manifold side, 2 to 30 (default 10)")
    _no_download_arg(p)


def _sample(args, command_line):
    from .generate import sample  # heavy: torch

    for p in sample(args.run, out=args.out, n=args.n, seed=args.seed, data=args.data, steps=args.steps):
        print(f"wrote {p}")


def _explore_args(p):
    p.add_argument("--run", required=True, help="a run directory (any kind; a dense decoder can be walked live)")
    p.add_argument("--out", default=None, help="the page to write (default RUN/explore.html)")


def _explore(args, command_line):
    from .explore import explore  # heavy: torch, scikit-learn

    print(f"wrote {explore(args.run, out=args.out)}")


def _data_args(p):
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", help="what to do with the data (`aelab data ACTION --help`)")
    ps = dsub.add_parser("show", formatter_class=FMT, help="draw the first 50 images, clean and noisy",
                         description="Draw the first 50 images of a split with their class names, clean\n"
                         "(samples.png) and with the evaluation noise (noisy_samples.png).\n\n"
                         "example:\n  aelab data show --out runs/data --split test --noise-factor 0.3")
    ps.add_argument("--data", default=None, help="Fashion-MNIST folder, image folder or .npz (default: locate "
                                                 "Fashion-MNIST)")
    ps.add_argument("--out", default="runs/data", help="output folder (default runs/data)")
    ps.add_argument("--split", default="train", choices=["train", "test"], help="which split (default train)")
    ps.add_argument("--noise-factor", type=float, default=0.2, help="noise of the second grid (default 0.2)")
    _no_download_arg(ps)
    pp = dsub.add_parser("photos", formatter_class=FMT, help="write the real photos' train/test split as PNG files",
                         description="Write the natural photos that ship inside scikit-image and scikit-learn into\n"
                         "OUT/train/ and OUT/test/ (whole photos: no test photo's crop is in training), to\n"
                         "train on with --data OUT --crop H,W. Colour photos stay RGB; --grey writes every photo\n"
                         "in grey (luma).\n\nexample:\n  aelab data photos --out runs/photos\n"
                         "  aelab train --net unet --data runs/photos --crop 64,64 --crops-per-image 100 --out runs/photo-unet")
    pp.add_argument("--out", default="runs/photos", help="output folder (default runs/photos)")
    pp.add_argument("--grey", action="store_true", help="every photo in grey")


def _data(args, command_line):
    if args.data_command == "photos":
        from .photos import write_split  # heavy: numpy, Pillow

        written = write_split(args.out, grey=args.grey)
        print(f"wrote {len(written['train'])} training and {len(written['test'])} held-out photos to {args.out}/")
        return
    if args.data_command != "show":
        raise AelabError("expected `aelab data show` or `aelab data photos`, found no action; see `aelab data --help`")
    from .show import show_data  # heavy: torch, matplotlib

    for p in show_data(args.data, args.out, args.noise_factor, args.split):
        print(f"wrote {p}")


# -- the commands this module defines (aelab.cli lists them) -----------------------------

COMMANDS = (
    Command("evaluate", "measure a run against the classical denoisers",
            "PSNR and SSIM of the run's model and of every baseline (Gaussian, median, TV,\n"
            "wavelet, non-local means, BM3D when installed, PCA) at each noise factor, with the fixed\n"
            "evaluation noise; baselines tuned on training images. Writes evaluation.md, evaluation.json,\n"
            "figures/evaluate_*.png, metrics.json and report.html.\n\nexamples:\n"
            "  aelab evaluate --run runs/reproduce\n"
            "  aelab evaluate --run runs/unet --noise-factors 0.1,0.2,0.3,0.5 --baselines tv,nlmeans,pca --limit 1000",
            _evaluate_args, _evaluate),
    Command("report", "write report.html for a run",
            "Write RUN/report.html from what the run holds (training, evaluation, maps, rate-distortion):\n"
            "one self-contained page, images embedded.\n\nexample:\n  aelab report --run runs/reproduce",
            _report_args, _report),
    Command("embed", "2-D map of the codes (t-SNE, UMAP, PCA), scored",
            "Encode images with a run's model (a VAE's posterior mean), map the codes to 2-D\n"
            "and write figures/map_<method>.png (coloured by class), figures/map_<method>_thumbnails.png,\n"
            "embedding_<method>.npz and the map's trustworthiness@10 and 2-D kNN-5 accuracy in\n"
            "metrics.json; then rewrite report.html. --baseline maps PCA codes of the pixels instead."
            "\n\nexamples:\n  aelab embed --run runs/reproduce --method tsne\n"
            "  aelab embed --run runs/reproduce --baseline pca32 --method tsne", _embed_args, _embed),
    Command("sample", "samples, latent manifold, traversals of a VAE run",
            "Write figures/vae_samples.png (a grid from the prior), vae_manifold.png (2-D latent\n"
            "only), vae_traversals.png and vae_interpolation.png for a variational run.\n\nexample:\n"
            "  aelab sample --run runs/vae --n 64", _sample_args, _sample),
    Command("explore", "an interactive page to look inside a model",
            "Write one self-contained page (no server, no network): the latent map of the test images\n"
            "(hover for the image, its reconstruction and neighbours), sliders that decode live in the\n"
            "browser (dense decoders), and a noise slider with the model's cleaned images.\n\n"
            "example:\n  aelab explore --run runs/vae --out explore.html", _explore_args, _explore),
    Command("data", "look at the data", "example:\n  aelab data show --out runs/data", _data_args, _data),
)
