"""The export subcommand (`aelab export`): its flags and what it runs.

The handler imports the library when it runs (torch, onnx), so building the parser stays instant.
"""

from __future__ import annotations

from .command import Command
from .commands import _overwrite_arg

DESCRIPTION = (
    "Write a run's model as ONNX files into --out: model.onnx (the whole model), encoder.onnx and\n"
    "decoder.onnx (a codec: its analysis and synthesis transforms only; the entropy coding stays in\n"
    "Python), and export.json (what each file takes and gives). The batch axis is dynamic, and H and W\n"
    "too for a fully convolutional model (conv without latent_dim, unet). Each file is run by\n"
    "onnxruntime on the run's test images (random ones when there are none) and compared with PyTorch\n"
    "before anything is written; a difference above 1e-5 (of the output's largest value, where that\n"
    "is above 1) is refused. The autoregressive VAE cannot be exported (its decode runs pixel by\n"
    "pixel). Needs onnx and onnxruntime: pip install 'aelab[export]'.\n\n"
    "examples:\n"
    "  aelab export --run zoo:denoiser-unet --format onnx --out export/\n"
    "  aelab export --run runs/vae --out runs/vae/onnx --overwrite")


def export_args(p):
    p.add_argument("--run", required=True, help="a run directory or zoo:NAME")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="the file format (default onnx)")
    p.add_argument("--out", required=True, help="output folder for the .onnx files and export.json")
    p.add_argument("--data", default=None,
                   help="test images for the check: Fashion-MNIST folder, image folder or .npz "
                        "(default: the run's data)")
    _overwrite_arg(p, "model.onnx, encoder.onnx, decoder.onnx and export.json")


def export(args, command_line):
    from .export import export_onnx, summary  # heavy: torch; optional: onnx, onnxruntime

    result = export_onnx(args.run, args.out, overwrite=args.overwrite, data=args.data, fmt=args.format)
    print("\n".join(summary(result)))


# -- the commands this module defines (aelab.cli lists them) -----------------------------

COMMANDS = (
    Command("export", "a run's model as ONNX files, checked by onnxruntime",
            DESCRIPTION, export_args, export),
)
