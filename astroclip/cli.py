"""The ``astroclip`` command line: a thin layer over the Python functions.

Each sub-command lives in its own module under `astroclip.commands`, which
defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``.
"""

import argparse
import importlib
import sys
import traceback

from .exceptions import AstroclipError

__all__ = ["main", "COMMANDS", "USER_ERRORS"]

#: sub-command name -> module under astroclip.commands
COMMANDS = {
    "simulate": "simulate",
    "pretrain-spectra": "pretrain_spectra",
    "pretrain-images": "pretrain_images",
    "align": "align",
    "convert-weights": "convert_weights",
    "embed": "embed",
    "merge": "merge",
    "search": "search",
    "evaluate": "evaluate",
    "quickstart": "quickstart",
}


def _load(name):
    return importlib.import_module(f"astroclip.commands.{COMMANDS[name]}")


#: Errors shown as one line: the package's own diagnoses and the plain file-handling ones.
USER_ERRORS = (AstroclipError, FileNotFoundError, FileExistsError, PermissionError,
               IsADirectoryError, NotADirectoryError)


def _add_debug(parser, default):
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the Python traceback of an error")


def build_parser():
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="astroclip",
        description="AstroCLIP: cross-modal foundation models for galaxy images and spectra.")
    _add_debug(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        # SUPPRESS: ``astroclip --debug CMD`` is not undone by the sub-command's default
        _add_debug(p, argparse.SUPPRESS)
        p.set_defaults(_run=module.run)
    return parser


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv=None):
    """Entry point of the ``astroclip`` command.

    Problems that astroclip diagnoses (`~astroclip.exceptions.AstroclipError`)
    and missing or existing files are printed as one line naming the problem
    and the fix, with exit status 1; ``--debug`` prints their traceback too.
    Any other exception is a bug and propagates with its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        result = args._run(args)
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (--debug shows the traceback)"
        print(f"astroclip {args.command}: error: {_one_line(exc)}{hint}", file=sys.stderr)
        return 1
    return 0 if result is None else int(result)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
