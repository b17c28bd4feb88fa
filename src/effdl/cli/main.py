"""Entry point of the ``effdl`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from effdl import __version__
from effdl.cli import commands
from effdl.cli.common import add_log_flags
from effdl.core.errors import EffdlError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="effdl",
        description="Efficient deep learning on PyTorch: train, measure and compress models.",
        epilog="Run `effdl COMMAND --help` for a command's options. Commands that take --out DIR write report.json "
        "there (schema: docs/report.md).",
    )
    parser.add_argument("--version", action="version", version=f"effdl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in commands.REGISTER:
        register(sub)
    for command in sub.choices.values():  # the logging flags work after the command name too
        add_log_flags(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("effdl").setLevel(level)
    try:
        return int(args.func(args) or 0)
    except EffdlError as exc:
        print(f"effdl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"effdl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
