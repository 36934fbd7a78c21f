"""``medfoundry`` entry point: subcommands, logging, and one-line errors.

Every user error is printed as ``medfoundry: error: <what>`` (exit 2); an unexpected failure as one
line too (exit 1), with the traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from medfoundry import MedfoundryError, __version__
from medfoundry.cli import commands
from medfoundry.utils.cache_dir import route_library_caches


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medfoundry",
        description="Build, adapt and run medical-imaging segmentation foundation models.",
        epilog="Typical flow: synth or your datasets -> pool build -> plan -> preprocess. "
        "'medfoundry run' does all of it.",
    )
    parser.add_argument("--version", action="version", version=f"medfoundry {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars, warnings only"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_all(sub, _common_options())
    return parser


def _common_options() -> argparse.ArgumentParser:
    """-q/--debug accepted after the subcommand too (SUPPRESS keeps the top-level value otherwise)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logs",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars, warnings only",
    )
    return common


class Terminated(BaseException):
    """Raised in the main thread when the process gets SIGTERM (``kill``, ``timeout``, a scheduler)."""


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s" if not args.debug else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    route_library_caches()  # their files go to the machine cache, not HOME or TMPDIR
    if threading.current_thread() is not threading.main_thread():
        return _run(args)  # only the main thread may set signal handlers (embedded use)
    previous = signal.signal(signal.SIGTERM, _terminated)  # stop like Ctrl-C: workers ended
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    """The command, with every failure turned into one line and an exit code."""
    try:
        return int(args.func(args) or 0)
    except Terminated:
        print("medfoundry: stopped (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except MedfoundryError as err:
        report = getattr(err, "report", None)
        if callable(report):
            print(report(), file=sys.stderr)
        print(f"medfoundry: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medfoundry: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - never a bare traceback for users
        if args.debug or os.environ.get("MEDFOUNDRY_DEBUG"):
            raise
        if isinstance(err, OSError):  # the system's own words: a full disk, a refused permission
            print(f"medfoundry: error: {err}", file=sys.stderr)
            return 1
        print(
            f"medfoundry: internal error: {type(err).__name__}: {err} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
