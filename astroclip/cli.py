"""The ``astroclip`` command line: a thin layer over the Python functions.

Each sub-command lives in its own module under `astroclip.commands`, which
defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``.
"""

import argparse
import importlib
import sys

from .exceptions import AstroclipError

__all__ = ["main", "COMMANDS"]

#: sub-command name -> module under astroclip.commands
COMMANDS = {
    "simulate": "simulate",
    "pretrain-spectra": "pretrain_spectra",
    "pretrain-images": "pretrain_images",
    "align": "align",
    "convert-weights": "convert_weights",
    "embed": "embed",
    "search": "search",
    "evaluate": "evaluate",
    "quickstart": "quickstart",
}


def _load(name):
    return importlib.import_module(f"astroclip.commands.{COMMANDS[name]}")


def build_parser():
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="astroclip",
        description="AstroCLIP: cross-modal foundation models for galaxy images and spectra.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    """Entry point of the ``astroclip`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        result = args._run(args)
    except (AstroclipError, ValueError, FileExistsError, FileNotFoundError, KeyError,
            OSError) as exc:
        print(f"astroclip {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0 if result is None else int(result)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
