"""The codec's subcommands (rd, compress, decompress): their flags and what each runs.

Each handler imports the library when it runs (torch and friends are heavy), so building
the parser stays instant.
"""

from __future__ import annotations

import sys

from .command import Command
from .commands import _common_io, _names, _overwrite_arg


def _rd_args(p):
    p.add_argument("--runs", nargs="+", default=[], metavar="DIR", help="codec run directories (one point each)")
    p.add_argument("--methods", type=_names, default=None,
                   help="comma-separated classical codecs (default all installed), or none")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--train-limit", type=int, default=None, help="training images PCA is fitted on (default all)")
    _common_io(p, "runs/rd", "output folder, or a run directory", threads=1)
    p.add_argument("--update", action="store_true",
                   help="keep the other methods and codec runs already in OUT/rd.json (measured on the same images)")
    _refine_arg(p)


def _refine_arg(p):
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="the codec's encoder search: STEPS gradient steps an image for fewer bytes at a better "
                        "picture (e.g. 30; slower to compress, any decoder reads it; default 0: none)")


def _rd(args, command_line):
    from .compression.rd import DEFAULT_METHODS, rd  # heavy: torch, Pillow
    from .report import write_report
    from .report.tables import rd_headline_markdown

    methods = DEFAULT_METHODS if args.methods is None else [m for m in args.methods if m != "none"]
    result = rd(out=args.out, runs=args.runs, methods=methods, limit=args.limit, data=args.data,
                train_limit=args.train_limit, update=args.update, threads=args.threads, progress=args.progress,
                command=command_line, refine=args.refine)
    write_report(args.out, command=command_line)
    print(rd_headline_markdown(result))
    print(f"wrote {args.out}/ (rd.json, rd.md, figures/rd_psnr.png, figures/rd_ssim.png, report.html)")


def _compress_args(p):
    p.add_argument("--run", required=True, help="a run directory of the codec kind")
    p.add_argument("inputs", nargs="+", help="image files (PNG/JPEG), one folder of images, or one .npz")
    p.add_argument("--out", required=True, help="the compressed file to write (e.g. images.ael)")
    _overwrite_arg(p, "a file at --out")
    _refine_arg(p)
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress on stderr while --refine searches")


def _search_progress(done: int, total: int) -> None:
    """The search's progress on stderr: one line rewritten on a terminal, a line a chunk otherwise."""
    from .loop import _is_terminal  # the training bar's own check (a closed or odd stderr: no terminal)

    end = "\r" if _is_terminal(sys.stderr) and done < total else "\n"
    print(f"searched {done}/{total} images", end=end, file=sys.stderr, flush=True)


def _compress(args, command_line):
    from .compression.files import compress_files  # heavy: torch; optional: constriction

    info = compress_files(args.run, args.inputs, args.out, refine=args.refine,
                          progress=_search_progress if args.progress and args.refine else None,
                          overwrite=args.overwrite)
    print(f"wrote {info['path']}: {info['images']} image(s), {info['bytes']} bytes "
          f"({info['bytes_per_image']:.1f} per image, header included)")


def _decompress_args(p):
    p.add_argument("file", help="a file written by `aelab compress`")
    p.add_argument("--run", default=None, help="the codec run that compressed it (default: the file's folder)")
    p.add_argument("--out", required=True, help="output folder for the PNG files")
    _overwrite_arg(p, "the PNG files (00000.png, ...)")


def _decompress(args, command_line):
    from .compression.files import decompress_file  # heavy: torch; optional: constriction

    written = decompress_file(args.file, args.out, run_dir=args.run, overwrite=args.overwrite)
    print(f"wrote {len(written)} file(s) to {args.out}/")


# -- the commands this module defines (aelab.cli lists them) -----------------------------

COMMANDS = (
    Command("rd", "rate-distortion: bytes per image against PSNR/SSIM, learned codec vs JPEG, WebP, AVIF, PCA, PNG",
            "Compress the test images to real bytes with each codec and back; write rd.json,\n"
            "rd.md (PSNR at ~50/~100/~200 bytes per image and every point), figures/rd_psnr.png,\n"
            "figures/rd_ssim.png and report.html into --out. Methods: jpeg, jpeg-scan, webp, avif,\n"
            "avif-payload, pca, png, xz (default all; also pca-laplace); --runs adds aelab codec runs.\n\n"
            "examples:\n  aelab rd --out runs/rd\n"
            "  aelab rd --runs runs/codec-a runs/codec-b --methods none --update --out runs/rd", _rd_args, _rd),
    Command("compress", "images to a compact byte stream with a codec run",
            "Encode images with a codec run (kind codec) and range-code the quantised latents\n"
            "into one file: a small header (model identity, image count, shapes) and the entropy-coded\n"
            "latents. Needs constriction (pip install 'aelab[codec]').\n\nexample:\n"
            "  aelab compress --run runs/codec-0.01 shirt.png shoe.png --out two.ael", _compress_args, _compress),
    Command("decompress", "a byte stream back to PNG images",
            "Decode a file written by `aelab compress` with the same run; writes 00000.png,\n"
            "00001.png, ... (8-bit) into --out. Another run's model is refused.\n\nexample:\n"
            "  aelab decompress two.ael --run runs/codec-0.01 --out decoded/", _decompress_args, _decompress),
)
