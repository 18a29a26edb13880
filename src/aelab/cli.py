"""The command line: a thin layer of argparse over the library. Each subcommand parses its
flags and calls one library function with the same names; a user error becomes one line
on stderr and exit status 2."""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings

from .errors import AelabError, AelabWarning


def _size(text: str):
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W or one number, found {text!r}") from None
    return parts[0] if len(parts) == 1 else tuple(parts[:2])


def _common_io(p: argparse.ArgumentParser, out_default: str, out_help: str | None = None, threads: int | None = None):
    """--data, --out, --threads and --no-progress, shared by the commands that load data and write runs."""
    p.add_argument("--data", default=None, help="Fashion-MNIST folder, image folder or .npz (default: locate Fashion-MNIST)")
    p.add_argument("--out", default=out_default, help=f"{out_help or 'run directory'} (default {out_default})")
    p.add_argument("--threads", type=int, default=threads,
                   help="CPU threads for torch" + (f" (default {threads})" if threads else ""))
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _common_train(p: argparse.ArgumentParser, out_default: str, fast: bool = False):
    """The flags of train and reproduce; with ``fast`` the schedule flags default to None (a preset picks)."""
    p.add_argument("--epochs", type=int, default=None if fast else 10,
                   help="passes over the training set (default 10" + ("; 3 with --fast)" if fast else ")"))
    p.add_argument("--batch-size", type=int, default=None if fast else 32,
                   help="images per step (default 32, as the tutorial" + ("; 64 with --fast)" if fast else ")"))
    p.add_argument("--lr", type=float, default=None if fast else 1e-3,
                   help="Adam learning rate (default 1e-3" + ("; one-cycle peak 1e-2 with --fast)" if fast else ")"))
    p.add_argument("--seed", type=int, default=0, help="drives initial weights, batch order and noise")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N images of each split")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    _common_io(p, out_default)


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.1,0.2, found {text!r}") from None


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _kv(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, found {text!r}")
    import json
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="aelab", description="Autoencoders on images: train, denoise, "
                                     "measure and report. `aelab reproduce` runs the whole seed experiment.")
    parser.add_argument("--version", action="version", version=f"aelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("reproduce", formatter_class=fmt, help="the whole denoising experiment, figures and report",
                       description="Train the tutorial's convolutional denoiser on Fashion-MNIST and write "
                       "figures, metrics and report.html.\n\nexample:\n  aelab reproduce --epochs 10 --out runs/reproduce")
    _common_train(p, "runs/reproduce", fast=True)
    p.add_argument("--noise-factor", type=float, default=0.2, help="Gaussian noise factor (default 0.2)")
    p.add_argument("--fast", action="store_true",
                   help="time to quality: batch 64, one-cycle lr 1e-2, 3 epochs (the tutorial's quality in less CPU)")

    p = sub.add_parser("train", formatter_class=fmt, help="train one kind of autoencoder",
                       description="Train an autoencoder and write a run directory.\n\nexample:\n"
                       "  aelab train --kind denoising --net conv --epochs 5 --out runs/dae")
    _common_train(p, "runs/train")
    p.add_argument("--kind", default="denoising", help="the objective (see `aelab train --help`)")
    p.add_argument("--net", default="conv", help="the network: conv, dense, unet (the strong denoiser) or gdn (the codec's)")
    p.add_argument("--noise", default=None, help="input corruption, e.g. gaussian:0.2, saltpepper:0.1, masking:0.25")
    p.add_argument("--size", type=_size, default=None, help="resize folder images to H,W")
    p.add_argument("--net-option", dest="net_options", type=_kv, action="append", default=[],
                   metavar="KEY=VALUE", help="a network option, e.g. latent_dim=32 (repeatable)")
    p.add_argument("--option", dest="options", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="a kind's hyper-parameter, e.g. reconstruction=mse (repeatable)")
    p.add_argument("--loss", dest="reconstruction", default=None, choices=["l1", "mse", "bce"],
                   help="the reconstruction loss (the option reconstruction=); the variational kind's likelihood")
    p.add_argument("--beta", type=float, default=None, help="variational kind: the KL weight (beta-VAE; option beta=)")
    p.add_argument("--lambda", dest="lmbda", type=float, default=None,
                   help="codec kind: the distortion weight, larger = more bytes and PSNR (option lmbda=)")
    p.add_argument("--schedule", default="constant",
                   help="learning rate per step: constant (default, the tutorial) or onecycle (--lr is the peak)")
    p.add_argument("--init", metavar="RUN", default=None,
                   help="start from this trained run's weights (same kind, network and shape; options may "
                        "differ, e.g. another --lambda): fine-tuning")

    p = sub.add_parser("denoise", formatter_class=fmt, help="clean image files or an .npz with a trained run",
                       description="example:\n  aelab denoise --run runs/reproduce noisy1.png noisy2.png --out cleaned/")
    p.add_argument("--run", required=True, help="a run directory")
    p.add_argument("inputs", nargs="+", help="image files (PNG/JPEG) or one .npz")
    p.add_argument("--out", default=None, help="output folder (default RUN/denoised)")

    p = sub.add_parser("evaluate", formatter_class=fmt, help="measure a run against the classical denoisers",
                       description="PSNR and SSIM of the run's model and of every baseline (Gaussian, median, TV,\n"
                       "wavelet, non-local means, BM3D when installed, PCA) at each noise factor, with the fixed\n"
                       "evaluation noise; baselines tuned on training images. Writes evaluation.md, evaluation.json,\n"
                       "figures/evaluate_*.png, metrics.json and report.html.\n\nexamples:\n"
                       "  aelab evaluate --run runs/reproduce\n"
                       "  aelab evaluate --run runs/unet --noise-factors 0.1,0.2,0.3,0.5 --baselines tv,nlmeans,pca --limit 1000")
    p.add_argument("--run", required=True, help="a run directory")
    p.add_argument("--noise-factors", type=_floats, default=[0.1, 0.2, 0.3, 0.5],
                   help="comma-separated Gaussian noise factors (default 0.1,0.2,0.3,0.5)")
    p.add_argument("--baselines", type=_names, default=None,
                   help="comma-separated baselines (default: every installed one): gaussian, median, tv, wavelet, "
                   "nlmeans, bm3d, pca")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--slow-limit", type=int, default=1000,
                   help="slow baselines (BM3D) run on the first N test images (default 1000, PROTOCOLS.md)")
    p.add_argument("--tune-images", type=int, default=None,
                   help="training images to tune each baseline on (default: 200; PCA 20,000)")
    p.add_argument("--data", default=None, help="the data (default: the run's)")
    p.add_argument("--hardest", type=int, default=8, help="images in the gallery of the hardest (default 8)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines")

    p = sub.add_parser("report", help="write report.html for a run", description="example:\n  aelab report --run runs/reproduce",
                       formatter_class=fmt)
    p.add_argument("--run", required=True)

    p = sub.add_parser("embed", formatter_class=fmt, help="2-D map of the codes (t-SNE, UMAP, PCA), scored",
                       description="Encode images with a run's model (a VAE's posterior mean), map the codes to 2-D\n"
                       "and write figures/map_<method>.png (coloured by class), figures/map_<method>_thumbnails.png,\n"
                       "embedding_<method>.npz and the map's trustworthiness@10 and 2-D kNN-5 accuracy in\n"
                       "metrics.json; then rewrite report.html. --baseline maps PCA codes of the pixels instead."
                       "\n\nexamples:\n  aelab embed --run runs/reproduce --method tsne\n"
                       "  aelab embed --run runs/reproduce --baseline pca32 --method tsne")
    p.add_argument("--run", default=None, help="a run directory: its model gives the codes and its folder gets the files")
    p.add_argument("--method", default="tsne", help="tsne (openTSNE, else scikit-learn), umap, pca or ptsne (parametric t-SNE) (default tsne)")
    p.add_argument("--on", default="test", choices=["test", "train"], help="which split to encode (default test)")
    p.add_argument("--baseline", default=None, help="codes without a model: pcaN (e.g. pca32) or pixels")
    p.add_argument("--data", default=None, help="data source (default: what the run was trained on)")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N images")
    p.add_argument("--out", default=None, help="where the files go (default: the run directory)")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    p.add_argument("--exaggeration", type=float, default=None, help="t-SNE exaggeration after the early phase (default 1)")
    p.add_argument("--n-neighbors", type=int, default=15, help="UMAP neighbourhood size (default 15)")
    p.add_argument("--min-dist", type=float, default=0.1, help="UMAP minimum distance (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random state of the map")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    p = sub.add_parser("compare", formatter_class=fmt, help="train every kind the same way and tabulate them",
                       description="Train undercomplete, sparse (l1, kl), contractive, denoising and variational\n"
                       "autoencoders with the same network, code size and schedule; write compare.md, compare.json,\n"
                       "reconstructions.png, denoised.png and one run directory per kind.\n\nexample:\n"
                       "  aelab compare --net dense --latent-dim 32 --epochs 20 --out runs/compare")
    _common_io(p, "runs/compare", "output folder")
    p.add_argument("--net", default="dense", help="the network shared by every kind (default dense)")
    p.add_argument("--latent-dim", type=int, default=32, help="code size shared by the kinds (default 32)")
    p.add_argument("--net-option", dest="net_options", type=_kv, action="append", default=[],
                   metavar="KEY=VALUE", help="a network option for every kind, e.g. hidden=[512,256] (repeatable)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per kind (default 20)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate, the peak of the one-cycle schedule (default 3e-3)")
    p.add_argument("--schedule", default="onecycle", help="learning rate schedule: onecycle (default) or constant")
    p.add_argument("--seed", type=int, default=0, help="the same seed for every kind")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N images of each split")
    p.add_argument("--kinds", type=lambda t: [k for k in t.split(",") if k], default=None,
                   help="comma-separated kinds or rows to run (default all), e.g. undercomplete,variational")
    p.add_argument("--iw-samples", type=int, default=1000, help="samples K of the importance-weighted bound (default 1000)")
    p.add_argument("--vae-net", default=None, help="the variational row's network (default: --net)")
    p.add_argument("--vae-net-option", dest="vae_net_options", type=_kv, action="append", default=[],
                   metavar="KEY=VALUE", help="a network option for the variational row only, e.g. hidden=[512,256]")
    p.add_argument("--vae-option", dest="vae_options", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="a hyper-parameter of the variational row, e.g. kl_warmup=4690 or train_samples=5")
    p.add_argument("--jacobian-images", type=int, default=1000, help="test images for the exact ||J||_F (default 1000)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")

    p = sub.add_parser("sample", formatter_class=fmt, help="samples, latent manifold, traversals of a VAE run",
                       description="Write figures/vae_samples.png (a grid from the prior), vae_manifold.png (2-D latent\n"
                       "only), vae_traversals.png and vae_interpolation.png for a variational run.\n\nexample:\n"
                       "  aelab sample --run runs/vae --n 64")
    p.add_argument("--run", required=True, help="a run directory of the variational kind")
    p.add_argument("--out", default=None, help="output folder (default RUN/figures)")
    p.add_argument("--n", type=int, default=64, help="samples from the prior (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior draws")
    p.add_argument("--data", default=None, help="test images for traversals and interpolation (default: the run's data)")
    p.add_argument("--steps", type=int, default=10, help="points per traversal, interpolation and manifold side")

    p = sub.add_parser("rd", formatter_class=fmt, help="rate-distortion: bytes per image against PSNR/SSIM, "
                       "learned codec vs JPEG, WebP, AVIF, PCA, PNG",
                       description="Compress the test images to real bytes with each codec and back; write rd.json,\n"
                       "rd.md (PSNR at ~50/~100/~200 bytes per image and every point), figures/rd_psnr.png,\n"
                       "figures/rd_ssim.png and report.html into --out. Methods: jpeg, jpeg-scan, webp, avif,\n"
                       "avif-payload, pca, png, xz (default all; also pca-laplace); --runs adds aelab codec runs.\n\n"
                       "examples:\n  aelab rd --out runs/rd\n"
                       "  aelab rd --runs runs/codec-a runs/codec-b --methods none --update --out runs/rd")
    p.add_argument("--runs", nargs="+", default=[], metavar="DIR", help="codec run directories (one point each)")
    p.add_argument("--methods", type=_names, default=None,
                   help="comma-separated classical codecs (default all installed), or none")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--train-limit", type=int, default=None, help="training images PCA is fitted on (default all)")
    _common_io(p, "runs/rd", "output folder, or a run directory", threads=1)
    p.add_argument("--update", action="store_true",
                   help="keep the other methods already in OUT/rd.json (measured on the same images)")

    p = sub.add_parser("compress", formatter_class=fmt, help="images to a compact byte stream with a codec run",
                       description="Encode images with a codec run (kind codec) and range-code the quantised latents\n"
                       "into one file: a small header (model identity, image count, shapes) and the entropy-coded\n"
                       "latents. Needs constriction (pip install 'aelab[codec]').\n\nexample:\n"
                       "  aelab compress --run runs/codec-0.01 shirt.png shoe.png --out two.ael")
    p.add_argument("--run", required=True, help="a run directory of the codec kind")
    p.add_argument("inputs", nargs="+", help="image files (PNG/JPEG), one folder of images, or one .npz")
    p.add_argument("--out", required=True, help="the compressed file to write (e.g. images.ael)")

    p = sub.add_parser("decompress", formatter_class=fmt, help="a byte stream back to PNG images",
                       description="Decode a file written by `aelab compress` with the same run; writes 00000.png,\n"
                       "00001.png, ... (8-bit) into --out. Another run's model is refused.\n\nexample:\n"
                       "  aelab decompress two.ael --run runs/codec-0.01 --out decoded/")
    p.add_argument("file", help="a file written by `aelab compress`")
    p.add_argument("--run", default=None, help="the codec run that compressed it (default: the file's folder)")
    p.add_argument("--out", required=True, help="output folder for the PNG files")

    p = sub.add_parser("data", help="look at the data")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    ps = dsub.add_parser("show", formatter_class=fmt, help="draw the first 50 images, clean and noisy",
                         description="example:\n  aelab data show --out runs/data")
    ps.add_argument("--data", default=None)
    ps.add_argument("--out", default="runs/data")
    ps.add_argument("--split", default="train", choices=["train", "test"])
    ps.add_argument("--noise-factor", type=float, default=0.2)
    return parser


def _run(args, argv) -> int:
    from . import use
    from .report import write_report
    from .reproduce import reproduce
    from .train import train

    command_line = "aelab " + " ".join(shlex.quote(a) for a in argv)
    if args.command in ("train", "reproduce"):
        from . import distributed
        distributed.setup(args.device)  # joins the process group under torchrun; no-op otherwise
    if args.command == "reproduce":
        m = reproduce(out=args.out, epochs=args.epochs, noise_factor=args.noise_factor, batch_size=args.batch_size,
                      lr=args.lr, seed=args.seed, limit=args.limit, data=args.data, resume=args.resume,
                      device=args.device, threads=args.threads, progress=args.progress, command=command_line,
                      fast=args.fast)
        print(m["summary"]["text"])
        print(f"wrote {args.out}/ (report.html, metrics.json, figures/)")
    elif args.command == "train":
        aliases = {k: v for k, v in (("reconstruction", args.reconstruction), ("beta", args.beta),
                                      ("lmbda", args.lmbda)) if v is not None}
        model = train(kind=args.kind, net=args.net, data=args.data, out=args.out, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, noise=args.noise, seed=args.seed, limit=args.limit,
                      resume=args.resume, device=args.device, threads=args.threads, progress=args.progress,
                      size=args.size, net_options=dict(args.net_options), schedule=args.schedule,
                      init=args.init, **{**dict(args.options), **aliases})
        if hasattr(model, "likelihood"):  # a kind whose terms are nats (the variational one)
            print(f"likelihood: {model.likelihood}; the terms in history.json are nats per image")
        print(f"wrote {args.out}/ (config.json, model.safetensors, history.json)")
    elif args.command == "denoise":
        out = use.denoise(args.run, args.inputs, out=args.out)
        print(f"wrote {out}/")
    elif args.command == "embed":
        from .embed import embed
        e = embed(run=args.run, method=args.method, on=args.on, baseline=args.baseline, data=args.data,
                  limit=args.limit, out=args.out, perplexity=args.perplexity, exaggeration=args.exaggeration,
                  n_neighbors=args.n_neighbors, min_dist=args.min_dist, seed=args.seed, threads=args.threads,
                  progress=args.progress, command=command_line)
        print(f"{e['source']} + {e['method']} on {e['points']:,} {e['split']} images: trustworthiness@"
              f"{e['trustworthiness_neighbors']} {e['trustworthiness']:.4f}, 2-D kNN-{e['knn_neighbors']} "
              f"{e['knn_accuracy']:.4f} (codes {e['codes_knn_accuracy']:.4f}), map {e['seconds_map']:.1f} s")
        print("wrote " + ", ".join(e["files"]))
    elif args.command == "evaluate":
        from .evaluate import evaluate, evaluation_markdown
        ev = evaluate(run=args.run, noise_factors=args.noise_factors, baselines=args.baselines, limit=args.limit,
                      slow_limit=args.slow_limit, tune_images=args.tune_images, data=args.data,
                      hardest=args.hardest, threads=args.threads, progress=args.progress)
        print(evaluation_markdown(ev))
        print(f"wrote {args.run}/ (evaluation.md, evaluation.json, figures/evaluate_*.png, report.html)")
    elif args.command == "report":
        print(f"wrote {write_report(args.run)}")
    elif args.command == "compare":
        from .compare import compare
        result = compare(data=args.data, out=args.out, net=args.net, latent_dim=args.latent_dim, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, seed=args.seed,
                         limit=args.limit, kinds=args.kinds,
                         iw_samples=args.iw_samples, jacobian_images=args.jacobian_images,
                         net_options=dict(args.net_options), device=args.device, threads=args.threads,
                         progress=args.progress, command=command_line, vae_net=args.vae_net,
                         vae_net_options=dict(args.vae_net_options) or None, vae_options=dict(args.vae_options) or None)
        from .compare import markdown_table
        print(markdown_table(result["rows"]))
        print(f"wrote {args.out}/ (compare.md, compare.json, reconstructions.png, denoised.png, one run per kind)")
    elif args.command == "sample":
        from .generate import sample
        for p in sample(args.run, out=args.out, n=args.n, seed=args.seed, data=args.data, steps=args.steps):
            print(f"wrote {p}")
    elif args.command == "rd":
        from .compression import DEFAULT_METHODS, headline_markdown, rd
        methods = DEFAULT_METHODS if args.methods is None else [m for m in args.methods if m != "none"]
        result = rd(out=args.out, runs=args.runs, methods=methods, limit=args.limit, data=args.data,
                    train_limit=args.train_limit, update=args.update, threads=args.threads, progress=args.progress,
                    command=command_line)
        write_report(args.out, command=command_line)
        print(headline_markdown(result))
        print(f"wrote {args.out}/ (rd.json, rd.md, figures/rd_psnr.png, figures/rd_ssim.png, report.html)")
    elif args.command == "compress":
        from .compression import compress_files
        info = compress_files(args.run, args.inputs, args.out)
        print(f"wrote {info['path']}: {info['images']} image(s), {info['bytes']} bytes "
              f"({info['bytes_per_image']:.1f} per image, header included)")
    elif args.command == "decompress":
        from .compression import decompress_file
        written = decompress_file(args.file, args.out, run_dir=args.run)
        print(f"wrote {len(written)} file(s) to {args.out}/")
    elif args.command == "data":
        if args.data_command != "show":
            raise AelabError("expected `aelab data show`, found no action; see `aelab data --help`")
        for p in use.show_data(args.data, args.out, args.noise_factor, args.split):
            print(f"wrote {p}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    shown = warnings.showwarning

    def one_line(message, category, *rest, **kw):  # aelab's own warnings as one line, others as usual
        if issubclass(category, AelabWarning):
            print(f"aelab: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
            return _run(args, argv)
    except AelabError as exc:
        print(f"aelab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"aelab: interrupted: {exc or 'stopped'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
