"""One subcommand of the command line: its name, help, example, flags and what it runs.

Each ``commands*`` module defines its subcommands as :class:`Command` entries beside their
flags and handlers; :mod:`aelab.cli` lists them and runs the one asked for.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

FMT = argparse.RawDescriptionHelpFormatter


@dataclass(frozen=True)
class Command:
    name: str
    help: str                                   # one line in `aelab --help`
    description: str                            # `aelab NAME --help`, with an example
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[..., None]                    # (args, the command line as typed[, aelab.cli.main])
    epilog: str | None = None
    wants_main: bool = False                    # run also gets aelab.cli.main (a command that runs commands)
