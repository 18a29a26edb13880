"""The zoo's subcommands, `aelab zoo` (list, show, retrain) and `aelab verify`: their flags and what each runs.

Like :mod:`aelab.commands`, each handler imports the library only when it runs.
"""

from __future__ import annotations

import time

from .command import FMT, Command
from .errors import AelabError



def zoo_args(p):
    zsub = p.add_subparsers(dest="zoo_command", metavar="ACTION", help="list (default), show or retrain")
    zsub.add_parser("list", formatter_class=FMT, help="the models (the default action)",
                    description="example:\n  aelab zoo list")
    ps = zsub.add_parser("show", formatter_class=FMT, help="a model's card (JSON)",
                         description="example:\n  aelab zoo show denoiser-tutorial")
    ps.add_argument("name", help="a zoo model's name")
    pr = zsub.add_parser("retrain", formatter_class=FMT, help="rebuild a model from its card's recipe",
                         description="Run every command of the card's training chain, in order, into --out,\n"
                                     "then measure the rebuilt model against the card.\n\n"
                                     "example:\n  aelab zoo retrain denoiser-tutorial --out runs/rebuilt")
    pr.add_argument("name", help="a zoo model's name")
    pr.add_argument("--out", required=True, help="the folder the chain's runs go into")
    pr.add_argument("--quick", action="store_true", help="compare on the quick subset only")


def zoo(args, command_line, main=None):
    """``main``: the command line's own entry (aelab.cli.main), which runs a recipe's steps."""
    from . import zoo  # heavy: torch

    if args.zoo_command in (None, "list"):
        rows = zoo.listing()
        for r in rows:
            print(f"zoo:{r['name']:<22} {r['kind']:<13} {r['net']:<6} {r['bytes'] / 1e6:5.2f} MB  {r['headline']}")
            print(f"    {r['purpose']}")
            print(f"    trained by ({r['cpu_minutes']:g} CPU minutes): " + " && ".join(r["recipe"]))
        print(f"{len(rows)} models; `aelab zoo show NAME` prints a card, `aelab verify` re-measures them")
    elif args.zoo_command == "show":
        print(zoo.card_json(args.name))
    elif args.zoo_command == "retrain":
        folder = zoo.retrain(args.name, args.out, main)
        print_verdicts(zoo.verify(run=folder, against=args.name, quick=args.quick), f"{folder} against zoo:{args.name}")


def verify_args(p):
    p.add_argument("names", nargs="*", help="zoo models (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="the fixed quick subset (first 1,000 test images), a couple of minutes for all models")
    p.add_argument("--run", default=None, help="measure this run directory instead of the shipped weights")
    p.add_argument("--against", default=None, help="the zoo card to compare --run with, e.g. zoo:denoiser-tutorial")
    p.add_argument("--data", default=None, help="the Fashion-MNIST folder (default: locate it)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")


def print_verdicts(rows, what: str) -> None:
    for r in rows:
        measured = "missing" if r["measured"] is None else f"{r['measured']:.4f}"
        diff = "" if r["difference"] is None else f"{r['difference']:+.4f}"
        print(f"{r['model']:<24} {r['figure']:<16} card {r['card']:.4f}  measured {measured:>10}  "
              f"diff {diff:>8}  tol {r['tolerance']:.4f}  {'ok' if r['ok'] else 'OUT OF TOLERANCE'}")
    bad = [r for r in rows if not r["ok"]]
    if bad:
        raise AelabError(f"{len(bad)} of {len(rows)} figures of {what} are outside their tolerance "
                         f"({', '.join(sorted({r['model'] + ' ' + r['figure'] for r in bad})[:4])}); see the table above")


def verify(args, command_line):
    import torch  # heavy: torch and the library

    from . import zoo  # heavy: the library

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = zoo.verify(args.names or None, quick=args.quick, run=args.run, against=args.against, data=args.data,
                      log=lambda text: print(text, flush=True))
    print_verdicts(rows, args.run or "the zoo")
    print(f"{len(rows)} figures of {len({r['model'] for r in rows})} model(s) within tolerance "
          f"({'quick subset' if args.quick else 'whole test set'}) in {time.perf_counter() - t0:.0f} s")


# -- the commands this module defines (aelab.cli lists them) -----------------------------

COMMANDS = (
    Command("zoo", "the trained models shipped with aelab: list, show a card, retrain",
            "The zoo's models work wherever a run directory does: --run zoo:NAME.\n\nexamples:\n"
            "  aelab zoo\n  aelab zoo show denoiser-tutorial\n"
            "  aelab denoise --run zoo:denoiser-unet noisy.png --out cleaned/\n"
            "  aelab zoo retrain denoiser-tutorial --out runs/rebuilt", zoo_args,
            zoo, wants_main=True),  # the recipe's steps run through aelab.cli.main, handed in
    Command("verify", "re-measure the zoo's cards from the shipped weights",
            "Measure every figure of each card again on the real test set and print card / measured /\n"
            "difference / verdict; exit 2 when a figure is outside its tolerance.\n\nexamples:\n"
            "  aelab verify --quick\n  aelab verify denoiser-tutorial\n"
            "  aelab verify --run runs/rebuilt/reproduce --against zoo:denoiser-tutorial", verify_args, verify),
)
