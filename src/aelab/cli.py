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

from . import commands, commands_codec, commands_export, commands_results, commands_zoo, runlock
from .command import FMT
from .errors import AelabError, AelabWarning
from .ownership import check_out
from .version import __version__

ORDER = ('reproduce', 'train', 'denoise', 'evaluate', 'report', 'embed', 'compare', 'sample', 'rd', 'compress', 'decompress', 'explore', 'zoo', 'verify', 'export', 'data')  # `aelab --help` lists them so
COMMANDS = tuple(sorted(commands.COMMANDS + commands_results.COMMANDS + commands_codec.COMMANDS + commands_zoo.COMMANDS
                       + commands_export.COMMANDS, key=lambda cmd: ORDER.index(cmd.name)))

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
            command.run(args, command_line, main) if command.wants_main else command.run(args, command_line)
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
