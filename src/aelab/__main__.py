"""``python -m aelab`` and the ``aelab`` console script: start the command line, a Ctrl-C while it loads included."""

import sys

STARTING = "aelab: interrupted: Ctrl-C while aelab was starting, before it did anything; run the command again"


def run() -> int:
    """Load the command line and run it; a Ctrl-C while aelab.cli (argparse and aelab's light
    modules, some 50 ms) loads is one line and exit status 130, as it is later in main()."""
    try:
        from .cli import main  # here, not at the top: a Ctrl-C during this import is caught
    except KeyboardInterrupt:
        print(STARTING, file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
