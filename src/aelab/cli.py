"""The command line: a table of subcommands, each a thin layer of argparse over one library call.

A user error becomes one line on stderr and exit status 2; an interrupt, one line and 130.
Only argparse and aelab's light modules are imported before the arguments are parsed, so
``--help``, ``--version`` and argument errors answer at once; each subcommand imports the
library (and with it torch) when it runs (see :mod:`aelab.commands`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

from . import commands as c
from . import commands_codec as codec
from . import commands_export as cx
from . import runlock
from . import commands_zoo as cz
from .errors import AelabError, AelabWarning
from .ownership import check_out
from .version import __version__

FMT = argparse.RawDescriptionHelpFormatter


@dataclass(frozen=True)
class Command:
    name: str
    help: str                                   # one line in `aelab --help`
    description: str                            # `aelab NAME --help`, with an example
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, str], None]  # (args, the command line as typed)
    epilog: str | None = None


COMMANDS = (
    Command("reproduce", "the whole denoising experiment, figures and report",
            "Train the tutorial's convolutional denoiser on Fashion-MNIST and write figures, metrics and\n"
            "report.html.\n\nexample:\n  aelab reproduce --epochs 10 --out runs/reproduce", c._reproduce_args, c._reproduce),
    Command("train", "train one kind of autoencoder",
            "Train an autoencoder and write a run directory.\n\nexamples:\n"
            "  aelab train --kind denoising --net conv --epochs 5 --out runs/dae\n"
            "  aelab train --kind variational --net dense --net-option latent_dim=2 --out runs/vae2d",
            c._train_args, c._train, epilog=c.catalogue()),
    Command("denoise", "clean image files or an .npz with a trained run",
            "example:\n  aelab denoise --run runs/reproduce noisy1.png noisy2.png --out cleaned/", c._denoise_args, c._denoise),
    Command("evaluate", "measure a run against the classical denoisers",
            "PSNR and SSIM of the run's model and of every baseline (Gaussian, median, TV,\n"
            "wavelet, non-local means, BM3D when installed, PCA) at each noise factor, with the fixed\n"
            "evaluation noise; baselines tuned on training images. Writes evaluation.md, evaluation.json,\n"
            "figures/evaluate_*.png, metrics.json and report.html.\n\nexamples:\n"
            "  aelab evaluate --run runs/reproduce\n"
            "  aelab evaluate --run runs/unet --noise-factors 0.1,0.2,0.3,0.5 --baselines tv,nlmeans,pca --limit 1000",
            c._evaluate_args, c._evaluate),
    Command("report", "write report.html for a run",
            "Write RUN/report.html from what the run holds (training, evaluation, maps, rate-distortion):\n"
            "one self-contained page, images embedded.\n\nexample:\n  aelab report --run runs/reproduce",
            c._report_args, c._report),
    Command("embed", "2-D map of the codes (t-SNE, UMAP, PCA), scored",
            "Encode images with a run's model (a VAE's posterior mean), map the codes to 2-D\n"
            "and write figures/map_<method>.png (coloured by class), figures/map_<method>_thumbnails.png,\n"
            "embedding_<method>.npz and the map's trustworthiness@10 and 2-D kNN-5 accuracy in\n"
            "metrics.json; then rewrite report.html. --baseline maps PCA codes of the pixels instead."
            "\n\nexamples:\n  aelab embed --run runs/reproduce --method tsne\n"
            "  aelab embed --run runs/reproduce --baseline pca32 --method tsne", c._embed_args, c._embed),
    Command("compare", "train every kind the same way and tabulate them",
            "Train undercomplete, sparse (l1, kl), contractive, denoising and variational\n"
            "autoencoders with the same network, code size and schedule; write compare.md, compare.json,\n"
            "reconstructions.png, denoised.png and one run directory per kind.\n\nexample:\n"
            "  aelab compare --net dense --latent-dim 32 --epochs 20 --out runs/compare", c._compare_args, c._compare),
    Command("sample", "samples, latent manifold, traversals of a VAE run",
            "Write figures/vae_samples.png (a grid from the prior), vae_manifold.png (2-D latent\n"
            "only), vae_traversals.png and vae_interpolation.png for a variational run.\n\nexample:\n"
            "  aelab sample --run runs/vae --n 64", c._sample_args, c._sample),
    Command("rd", "rate-distortion: bytes per image against PSNR/SSIM, learned codec vs JPEG, WebP, AVIF, PCA, PNG",
            "Compress the test images to real bytes with each codec and back; write rd.json,\n"
            "rd.md (PSNR at ~50/~100/~200 bytes per image and every point), figures/rd_psnr.png,\n"
            "figures/rd_ssim.png and report.html into --out. Methods: jpeg, jpeg-scan, webp, avif,\n"
            "avif-payload, pca, png, xz (default all; also pca-laplace); --runs adds aelab codec runs.\n\n"
            "examples:\n  aelab rd --out runs/rd\n"
            "  aelab rd --runs runs/codec-a runs/codec-b --methods none --update --out runs/rd", codec._rd_args, codec._rd),
    Command("compress", "images to a compact byte stream with a codec run",
            "Encode images with a codec run (kind codec) and range-code the quantised latents\n"
            "into one file: a small header (model identity, image count, shapes) and the entropy-coded\n"
            "latents. Needs constriction (pip install 'aelab[codec]').\n\nexample:\n"
            "  aelab compress --run runs/codec-0.01 shirt.png shoe.png --out two.ael", codec._compress_args, codec._compress),
    Command("decompress", "a byte stream back to PNG images",
            "Decode a file written by `aelab compress` with the same run; writes 00000.png,\n"
            "00001.png, ... (8-bit) into --out. Another run's model is refused.\n\nexample:\n"
            "  aelab decompress two.ael --run runs/codec-0.01 --out decoded/", codec._decompress_args, codec._decompress),
    Command("explore", "an interactive page to look inside a model",
            "Write one self-contained page (no server, no network): the latent map of the test images\n"
            "(hover for the image, its reconstruction and neighbours), sliders that decode live in the\n"
            "browser (dense decoders), and a noise slider with the model's cleaned images.\n\n"
            "example:\n  aelab explore --run runs/vae --out explore.html", c._explore_args, c._explore),
    Command("zoo", "the trained models shipped with aelab: list, show a card, retrain",
            "The zoo's models work wherever a run directory does: --run zoo:NAME.\n\nexamples:\n"
            "  aelab zoo\n  aelab zoo show denoiser-tutorial\n"
            "  aelab denoise --run zoo:denoiser-unet noisy.png --out cleaned/\n"
            "  aelab zoo retrain denoiser-tutorial --out runs/rebuilt", cz.zoo_args,
            lambda args, line: cz.zoo(args, line, main)),  # the recipe's steps run through main, handed in
    Command("verify", "re-measure the zoo's cards from the shipped weights",
            "Measure every figure of each card again on the real test set and print card / measured /\n"
            "difference / verdict; exit 2 when a figure is outside its tolerance.\n\nexamples:\n"
            "  aelab verify --quick\n  aelab verify denoiser-tutorial\n"
            "  aelab verify --run runs/rebuilt/reproduce --against zoo:denoiser-tutorial", cz.verify_args, cz.verify),
    Command("export", "a run's model as ONNX files, checked by onnxruntime",
            cx.DESCRIPTION, cx.export_args, cx.export),
    Command("data", "look at the data", "example:\n  aelab data show --out runs/data", c._data_args, c._data),
)

EXAMPLES = """examples:
  aelab reproduce                                   the whole seed experiment, report in runs/reproduce/
  aelab train --kind variational --net dense --out runs/vae
  aelab denoise --run runs/reproduce noisy.png --out cleaned/
  aelab evaluate --run runs/reproduce               against Gaussian, median, TV, wavelet, NLM, BM3D, PCA
  aelab embed --run runs/vae --method tsne          a 2-D map of the codes

`aelab COMMAND --help` says more about each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aelab", formatter_class=FMT, epilog=EXAMPLES,
                                     description="Autoencoders on images: train, denoise, measure and report. "
                                                 "`aelab reproduce` runs the whole seed experiment.")
    parser.add_argument("--version", action="version", version=f"aelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        cmd.arguments(sub.add_parser(cmd.name, formatter_class=FMT, help=cmd.help, description=cmd.description,
                                     epilog=cmd.epilog))
    return parser


def _one_line_warnings():
    shown = warnings.showwarning

    def one_line(message, category, *rest, **kw):  # aelab's own warnings as one line, others as usual
        if issubclass(category, AelabWarning):
            print(f"aelab: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)
    return one_line


def main(argv: list[str] | None = None) -> int:
    name = "aelab"
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        command = next(cmd for cmd in COMMANDS if cmd.name == args.command)
        name = f"aelab {command.name}"
        if getattr(args, "out", None) is not None:  # every command's --out: never "" (the current folder) nor /
            check_out(args.out)
        if getattr(args, "break_lock", False):
            broken = runlock.break_lock(args.out)
            if broken is not None:
                print(f"aelab: took over the lock of {args.out} (process {broken.get('pid', '?')} on host "
                      f"{broken.get('host', '?')} since {broken.get('since', '?')})", file=sys.stderr)
        command_line = "aelab " + " ".join(shlex.quote(a) for a in argv)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings()
            command.run(args, command_line)
        return 0
    except AelabError as exc:
        print(f"aelab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # also during start-up, while torch is imported
        # str(exc) is the reason a step gave (e.g. "checkpoint written; resume with ..."); a bare
        # Ctrl-C has none, and the exception itself is always true, so test the text
        reason = str(exc).strip() or f"stopped by Ctrl-C in `{name}`; the files it had finished are whole, run it again"
        print(f"aelab: interrupted: {' '.join(reason.split())}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
