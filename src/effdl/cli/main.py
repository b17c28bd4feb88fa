"""Entry point of the ``effdl`` command."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import traceback

from effdl import __version__
from effdl.cli import commands
from effdl.cli.common import add_log_flags
from effdl.core.errors import EffdlError

__all__ = ["build_parser", "main", "os_error_message"]


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
    """Runs the command line; returns the exit status (0 ok, 2 bad input or an OS fault, 1 an unexpected error,
    130 interrupted). Errors are one line on stderr; ``--verbose`` adds the traceback of unexpected ones."""
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
    except OSError as exc:  # disk full, read-only folder, permissions, a file where a folder should be
        print(f"effdl {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        _traceback(args)
        return 2
    except MemoryError:
        print(f"effdl {args.command}: error: out of memory; use a smaller batch size, model or dataset",
              file=sys.stderr)  # fmt: skip
        return 2
    except Exception as exc:  # noqa: BLE001 - the one boundary: no input ends in a raw traceback
        print(
            f"effdl {args.command}: error: {type(exc).__name__}: {exc}\n(this input is not checked by effdl yet, or "
            "it is a bug: rerun with --verbose for the traceback and report it)",
            file=sys.stderr,
        )
        _traceback(args)
        return 1


def os_error_message(exc: OSError) -> str:
    """What an operating-system error means for the user, with the fix.

    Example:
        >>> import errno
        >>> os_error_message(OSError(errno.ENOSPC, "No space left on device", "runs/x/model.safetensors"))
        'cannot write runs/x/model.safetensors: No space left on device; free disk space or choose another --out'
    """
    where = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc)
    fixes = {
        errno.ENOSPC: "free disk space or choose another --out",
        errno.EDQUOT: "free disk space or choose another --out",
        errno.EROFS: "the file system is read-only: choose a writable --out",
        errno.EACCES: "check the permissions, or choose another path",
        errno.EPERM: "check the permissions, or choose another path",
        errno.ENOTDIR: "a file stands where a folder is needed: choose another path",
        errno.EISDIR: "a folder stands where a file is needed: choose another path",
        errno.ENOENT: "check the path",
    }
    verb = "cannot write" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "cannot use"
    return f"{verb}{where}: {reason}; {fixes.get(exc.errno, 'check the path, its permissions and the free space')}"


def _traceback(args: argparse.Namespace) -> None:
    if getattr(args, "verbose", False):
        traceback.print_exc()


if __name__ == "__main__":
    raise SystemExit(main())
