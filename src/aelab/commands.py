"""The training commands (reproduce, train, compare, denoise) and the flags several commands share:
each a ``Command`` entry beside its ``_NAME_args(parser)`` and ``_NAME(args, command_line)``.

Each handler imports the library when it runs (torch and friends are heavy), so building
the parser stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap

from .command import Command
from .errors import ConfigError
from .settings import COMPARE, KEEP, OPTIMIZERS, REPRODUCE_FAST, TRAIN


# What `aelab train --help` lists; tests/test_cli.py checks it against the registries.
KINDS = {
    "undercomplete": "L1 reconstruction, a code smaller than the image; options reconstruction=l1|mse|bce|psnr",
    "sparse": "wide code with an L1 or KL(rho||rho_hat) activation penalty; options penalty=l1|kl, "
              "sparsity_weight, sparsity_target, reconstruction",
    "contractive": "squared Frobenius norm of the encoder's Jacobian; options contractive_weight, "
                   "jacobian=auto|closed_form|autograd|projection, projections, reconstruction",
    "denoising": "corrupt the input (gaussian:0.2 by default), compare with the clean image; option reconstruction",
    "variational": "Gaussian posterior, reparameterised, the ELBO; options beta, likelihood_scale, kl_warmup, "
                   "train_samples, binarize, reconstruction (the likelihood: bce|mse|l1), prior=standard|vamp, "
                   "pseudo_inputs, autoregressive=true|false (bce: each pixel also sees the pixels before it)",
    "codec": "learned image codec (rate + lambda * distortion); options lmbda, straight_through, "
             "prior=channel|element|context, slices (context), reconstruction",
}
NETS = {
    "conv": "the Keras tutorial's Conv2d encoder / ConvTranspose2d decoder; channels, latent_dim, code_activation",
    "dense": "fully connected; hidden, latent_dim, code_activation, decoder_hidden (default: hidden mirrored)",
    "unet": "a small U-Net with a residual output (the strong denoiser); widths, residual, latent_dim, "
            "code_activation",
    "gdn": "Balle et al.'s GDN transforms (the codec's); channels, latent_channels, stages, kernel, nonlinearity, "
           "latent_dim, code_activation",
}


def catalogue() -> str:
    """The kinds and networks, as `aelab train --help` ends."""
    def entry(name, text):
        return textwrap.fill(text, width=100, initial_indent=f"  {name:<14} ", subsequent_indent=" " * 17)
    return "\n\n".join(title + ":\n" + "\n".join(entry(k, v) for k, v in table.items())
                       for title, table in (("kinds (--kind)", KINDS), ("networks (--net)", NETS)))


# -- argument types ----------------------------------------------------------------------

def _size(text: str):
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W or one number, found {text!r}") from None
    return parts[0] if len(parts) == 1 else tuple(parts[:2])


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
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


# -- shared flags ------------------------------------------------------------------------

class _NoDownload(argparse.Action):
    """--no-download sets AELAB_OFFLINE=1 as it is parsed: the one switch aelab.download reads,
    whichever library call loads the data, in this process and the ones it starts."""

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ["AELAB_OFFLINE"] = "1"
        setattr(namespace, self.dest, True)


def _no_download_arg(p: argparse.ArgumentParser):
    p.add_argument("--no-download", action=_NoDownload, nargs=0, default=False,
                   help="never download Fashion-MNIST when it is nowhere aelab looks (as AELAB_OFFLINE=1)")


def _common_io(p: argparse.ArgumentParser, out_default: str, out_help: str | None = None, threads: int | None = None):
    """--data, --out, --threads, --no-progress and --no-download: the commands that load data and write runs."""
    p.add_argument("--data", default=None, help="Fashion-MNIST folder, image folder or .npz (default: locate Fashion-MNIST)")
    p.add_argument("--out", default=out_default, help=f"{out_help or 'run directory'} (default {out_default})")
    p.add_argument("--threads", type=int, default=threads,
                   help="CPU threads for torch" + (f" (default {threads})" if threads else ""))
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _no_download_arg(p)


def _common_train(p: argparse.ArgumentParser, out_default: str, fast: bool = False):
    """The flags of train and reproduce. They default to None (the help shows the real default),
    so the library tells a given flag from a default: ``--resume`` keeps the run's own plan
    unless a flag says otherwise, a new run takes :data:`TRAIN`'s (or with ``fast``, a preset's)."""
    fast_note = (lambda text: f"; {text} with --fast)") if fast else (lambda text: ")")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training set (default {TRAIN.epochs}" + fast_note(REPRODUCE_FAST.epochs))
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"images per step (default {TRAIN.batch_size}, as the tutorial"
                        + fast_note(REPRODUCE_FAST.batch_size))
    p.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate (default {TRAIN.lr:g}"
                        + fast_note(f"one-cycle peak {REPRODUCE_FAST.lr:g}"))
    p.add_argument("--seed", type=int, default=None,
                   help=f"drives initial weights, batch order and noise (default {TRAIN.seed})")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N images of each split")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoint, with its own settings unless given")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (removes the files aelab wrote there, nothing else)")
    _break_lock_arg(p)
    p.add_argument("--device", default=None, help=f"auto (CUDA when present), cpu or cuda (default {TRAIN.device})")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="write TensorBoard event files under OUT/tensorboard/ (loss terms, learning rate, an image grid "
                        "per epoch, the settings as hparams; then: tensorboard --logdir OUT); needs "
                        "pip install 'aelab[tensorboard]' (default off; with --resume the run's own)")
    _common_io(p, out_default)


def _break_lock_arg(p: argparse.ArgumentParser):
    p.add_argument("--break-lock", action="store_true",
                   help="take over --out's lock (.aelab.lock) left by a process that cannot be asked: another host's, "
                        "e.g. a container restarted under a new name (never a live process of this host)")


# -- the subcommands: flags, then what runs ----------------------------------------------

def _reproduce_args(p):
    _common_train(p, "runs/reproduce", fast=True)
    p.add_argument("--noise-factor", type=float, default=None,
                   help="Gaussian noise factor (default 0.2; with --resume the run's own)")
    p.add_argument("--fast", action="store_true",
                   help=f"time to quality: batch {REPRODUCE_FAST.batch_size}, one-cycle lr {REPRODUCE_FAST.lr:g}, "
                        f"{REPRODUCE_FAST.epochs} epochs (the tutorial's quality in less CPU)")


def _reproduce(args, command_line):
    from . import distributed  # heavy: torch
    from .reproduce import reproduce

    device = args.device or TRAIN.device
    distributed.setup(device)  # joins the process group under torchrun; no-op otherwise
    m = reproduce(out=args.out, epochs=args.epochs, noise_factor=args.noise_factor, batch_size=args.batch_size,
                  lr=args.lr, seed=args.seed, limit=args.limit, data=args.data, resume=args.resume,
                  device=device, threads=args.threads, progress=args.progress, command=command_line,
                  fast=args.fast, overwrite=args.overwrite, tensorboard=args.tensorboard)
    print(m["summary"]["text"])
    print(f"wrote {args.out}/ (report.html, metrics.json, figures/)")


def _train_args(p):
    _common_train(p, "runs/train")
    p.add_argument("--config", metavar="RUN/config.json", default=None,
                   help="train a new run in --out with that run's model, settings and data (the flags given here "
                        "override them): the same seed on the CPU gives the same weights")
    p.add_argument("--kind", default=None, help="the objective (default denoising; the kinds are listed below)")
    p.add_argument("--net", default=None, help="the network (default conv; listed below)")
    p.add_argument("--noise", default=None,
                   help="input corruption, e.g. gaussian:0.2, saltpepper:0.1, masking:0.25, shift:2 "
                        "(default: the kind's own, gaussian:0.2 for denoising)")
    p.add_argument("--size", type=_size, default=None, help="resize folder images to H,W")
    p.add_argument("--crop", type=_size, default=None,
                   help="train on a random H,W window of each image per epoch (photos, mixed sizes; validation "
                        "on the centre window); a fully convolutional model then cleans any size")
    p.add_argument("--crops-per-image", type=int, default=None,
                   help="with --crop: that many windows of each image an epoch (default 1; e.g. 100 for a dozen photos)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that read a streamed --data (a folder, an .npz) ahead of the training "
                        "(default 0: read in the loop; the weights are the same either way)")
    p.add_argument("--net-option", dest="net_options", type=_kv, action="append", default=[],
                   metavar="KEY=VALUE", help="a network option, e.g. latent_dim=32 (repeatable)")
    p.add_argument("--option", dest="options", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="a kind's hyper-parameter, e.g. reconstruction=mse (repeatable)")
    p.add_argument("--loss", dest="reconstruction", default=None, choices=["l1", "mse", "bce", "psnr"],
                   help="the reconstruction loss (the option reconstruction=); the variational kind's likelihood")
    p.add_argument("--beta", type=float, default=None, help="variational kind: the KL weight (beta-VAE; option beta=)")
    p.add_argument("--lambda", dest="lmbda", type=float, default=None,
                   help="codec kind: the distortion weight, larger = more bytes and PSNR (option lmbda=)")
    p.add_argument("--schedule", default=None,
                   help=f"learning rate per step: constant or onecycle (--lr is the peak) (default {TRAIN.schedule}, "
                        "the tutorial)")
    p.add_argument("--amp", default=None, choices=["auto", "bf16", "off"],
                   help="bf16 autocast: auto = on CUDA only (default); bf16 also on a CPU with bf16 units "
                        "(AMX, AVX512-BF16), where it measured 1.4-1.7x faster for the U-Net (benchmarks/amp_speed.py)")
    p.add_argument("--init", metavar="RUN", default=None,
                   help="start from this trained run's weights (same kind, network and shape; options may "
                        "differ, e.g. another --lambda): fine-tuning")
    p.add_argument("--freeze-encoder", action="store_true", default=None,
                   help="train all but the encoder, which keeps its --init weights (the codes stay as they are; "
                        "the network's options may then differ in the decoder, e.g. decoder_hidden=[...])")
    p.add_argument("--optimizer", default=None, choices=list(OPTIMIZERS),
                   help=f"adam, adamw (decoupled weight decay) or sgd (momentum 0.9) (default {TRAIN.optimizer})")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"weight decay: an L2 penalty for adam and sgd, decoupled for adamw, e.g. 0.01 "
                        f"(default {TRAIN.weight_decay:g})")
    p.add_argument("--keep", default=None, choices=list(KEEP),
                   help="best: also keep the weights of the epoch with the lowest validation loss "
                        "(model.best.safetensors), which the run then loads; the last stay in model.safetensors "
                        f"(default {TRAIN.keep})")
    p.add_argument("--patience", type=int, default=None, metavar="N",
                   help="stop early when the validation loss has not improved for N epochs (default: train every "
                        "epoch)")


def _once(flag: str, pairs, aliases=()) -> dict:
    """``flag KEY=VALUE`` pairs (and ``aliases``: (alias flag, KEY, value or None)) as a dict;
    a key given twice with different values is refused (the same value twice is fine)."""
    found: dict = {}
    given = [(f"{flag} {k}={v if isinstance(v, str) else json.dumps(v)}", k, v) for k, v in pairs]
    for label, key, value in given + [(f"{alias} {v:g}" if isinstance(v, float) else f"{alias} {v}", k, v)
                                      for alias, k, v in aliases if v is not None]:
        if key in found and found[key][1] != value:
            raise ConfigError(f"expected one value for {key}, found {found[key][0]} and {label}; give it once")
        found.setdefault(key, (label, value))
    return {k: v for k, (_, v) in found.items()}


def _train(args, command_line):
    from . import distributed  # heavy: torch
    from .train import train

    distributed.setup(args.device or TRAIN.device)  # joins the process group under torchrun; no-op otherwise
    flags = dict(kind=args.kind, net=args.net, data=args.data, out=args.out, epochs=args.epochs,
                 batch_size=args.batch_size, lr=args.lr, noise=args.noise, seed=args.seed, limit=args.limit,
                 resume=args.resume, device=args.device, threads=args.threads, progress=args.progress,
                 size=args.size, schedule=args.schedule, amp=args.amp, init=args.init, overwrite=args.overwrite,
                 freeze_encoder=args.freeze_encoder, crop=args.crop, crops_per_image=args.crops_per_image,
                 workers=args.workers, tensorboard=args.tensorboard, keep=args.keep, patience=args.patience,
                 optimizer=args.optimizer, weight_decay=args.weight_decay, replay=args.config)
    options = _once("--option", args.options, (("--loss", "reconstruction", args.reconstruction),
                                               ("--beta", "beta", args.beta), ("--lambda", "lmbda", args.lmbda)))
    for key in options.keys() & (flags.keys() | {"net_options"}):  # train() would take it twice
        flag = {"progress": "--no-progress", "net_options": "--net-option", "replay": "--config"}.get(
            key, "--" + key.replace("_", "-"))
        raise ConfigError(f"expected a kind's hyper-parameter in --option, found {key}, which has its own flag; "
                          f"pass {flag} instead")
    model = train(**flags, net_options=_once("--net-option", args.net_options), **options)
    if hasattr(model, "likelihood"):  # a kind whose terms are nats (the variational one)
        print(f"likelihood: {model.likelihood}; the terms in history.json are nats per image")
    print(f"wrote {args.out}/ (config.json, model.safetensors, history.json)")


def _overwrite_arg(p, what: str):
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace {what} already there (never an input: that is always refused)")


def _denoise_args(p):
    p.add_argument("--run", required=True, help="a run directory")
    p.add_argument("inputs", nargs="+", help="image files (PNG/JPEG) or one .npz")
    p.add_argument("--out", default=None, help="output folder (default RUN/denoised)")
    _overwrite_arg(p, "the NAME.denoised.png and side_by_side.png files")


def _denoise(args, command_line):
    from .inference import denoise  # heavy: torch

    print(f"wrote {denoise(args.run, args.inputs, out=args.out, overwrite=args.overwrite)}/")


def _compare_args(p):
    _common_io(p, "runs/compare", "output folder")
    p.add_argument("--net", default=COMPARE.net, help=f"the network shared by every kind (default {COMPARE.net})")
    p.add_argument("--latent-dim", type=int, default=COMPARE.latent_dim,
                   help=f"code size shared by the kinds (default {COMPARE.latent_dim})")
    p.add_argument("--net-option", dest="net_options", type=_kv, action="append", default=[],
                   metavar="KEY=VALUE", help="a network option for every kind, e.g. hidden=[512,256] (repeatable)")
    p.add_argument("--epochs", type=int, default=COMPARE.epochs, help=f"epochs per kind (default {COMPARE.epochs})")
    p.add_argument("--batch-size", type=int, default=COMPARE.batch_size,
                   help=f"images per step (default {COMPARE.batch_size})")
    p.add_argument("--lr", type=float, default=COMPARE.lr,
                   help=f"Adam learning rate, the peak of the one-cycle schedule (default {COMPARE.lr:g})")
    p.add_argument("--schedule", default=COMPARE.schedule,
                   help=f"learning rate schedule: onecycle or constant (default {COMPARE.schedule})")
    p.add_argument("--seed", type=int, default=COMPARE.seed, help="the same seed for every kind")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N images of each split")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the runs of an earlier comparison in --out (their aelab files, nothing else)")
    p.add_argument("--kinds", type=_names, default=None,
                   help="comma-separated kinds or rows to run (default all), e.g. undercomplete,variational")
    p.add_argument("--iw-samples", type=int, default=COMPARE.iw_samples,
                   help=f"samples K of the importance-weighted bound (default {COMPARE.iw_samples})")
    p.add_argument("--vae-net", default=None, help="the variational row's network (default: --net)")
    p.add_argument("--vae-net-option", dest="vae_net_options", type=_kv, action="append", default=[],
                   metavar="KEY=VALUE", help="a network option for the variational row only, e.g. hidden=[512,256]")
    p.add_argument("--vae-option", dest="vae_options", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="a hyper-parameter of the variational row, e.g. kl_warmup=4690 or train_samples=5")
    p.add_argument("--jacobian-images", type=int, default=COMPARE.jacobian_images,
                   help=f"test images for the exact ||J||_F (default {COMPARE.jacobian_images})")
    p.add_argument("--device", default=TRAIN.device, help="auto (CUDA when present), cpu or cuda")


def _compare(args, command_line):
    from .compare import compare  # heavy: torch
    from .report import write_report
    from .report.tables import compare_anchors_markdown, compare_markdown_table

    result = compare(data=args.data, out=args.out, net=args.net, latent_dim=args.latent_dim, epochs=args.epochs,
                     batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, seed=args.seed,
                     limit=args.limit, kinds=args.kinds,
                     iw_samples=args.iw_samples, jacobian_images=args.jacobian_images,
                     net_options=dict(args.net_options), device=args.device, threads=args.threads,
                     progress=args.progress, command=command_line, overwrite=args.overwrite, vae_net=args.vae_net,
                     vae_net_options=dict(args.vae_net_options) or None, vae_options=dict(args.vae_options) or None)
    for run in result["runs"]:  # every row is a run directory with its own report.html
        write_report(run, command=command_line)
    print(compare_markdown_table(result["rows"]))
    anchors = compare_anchors_markdown(result)
    if anchors:
        print("\n" + anchors)
    print(f"wrote {args.out}/ (compare.md, compare.json, reconstructions.png, denoised.png, one run per kind)")


# -- the commands this module defines (aelab.cli lists them) -----------------------------

COMMANDS = (
    Command("reproduce", "the whole denoising experiment, figures and report",
            "Train the tutorial's convolutional denoiser on Fashion-MNIST and write figures, metrics and\n"
            "report.html.\n\nexample:\n  aelab reproduce --epochs 10 --out runs/reproduce", _reproduce_args, _reproduce),
    Command("train", "train one kind of autoencoder",
            "Train an autoencoder and write a run directory.\n\nexamples:\n"
            "  aelab train --kind denoising --net conv --epochs 5 --out runs/dae\n"
            "  aelab train --kind variational --net dense --net-option latent_dim=2 --out runs/vae2d",
            _train_args, _train, epilog=catalogue()),
    Command("denoise", "clean image files or an .npz with a trained run",
            "example:\n  aelab denoise --run runs/reproduce noisy1.png noisy2.png --out cleaned/", _denoise_args, _denoise),
    Command("compare", "train every kind the same way and tabulate them",
            "Train undercomplete, sparse (l1, kl), contractive, denoising and variational\n"
            "autoencoders with the same network, code size and schedule; write compare.md, compare.json,\n"
            "reconstructions.png, denoised.png and one run directory per kind.\n\nexample:\n"
            "  aelab compare --net dense --latent-dim 32 --epochs 20 --out runs/compare", _compare_args, _compare),
)
