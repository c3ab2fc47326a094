"""The `dtc` command line. Each sub-command lives in `dtc_training.commands.<name>` and provides
`HELP`, `add_arguments(parser)` and `run(args) -> int`; modules are imported only when used, so
`dtc --help` is fast and this file imports nothing heavy (the Slicer module reads the exit codes)."""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_ERROR = 1  # unexpected failure (traceback printed)
EXIT_BAD_INPUT = 2  # bad arguments or input data; the message names the file and the problem
EXIT_INTERRUPTED = 3  # stopped by SIGTERM/SIGINT after saving a checkpoint; `--resume` continues
EXIT_DIVERGED = 4  # the training's loss or weights became NaN or infinite; the last good checkpoint is kept
EXIT_CODES = ("exit codes: 0 success; 1 unexpected error, or a file that could not be written whole (one line "
              "naming it; the file there before is intact); 2 bad input or options (one line per problem); "
              "3 training stopped on request, checkpoint saved (a resume continues it); 4 training diverged "
              "(NaN or infinite loss or weights): the last good checkpoint is kept, no model is written; "
              "lower the learning rate")

COMMANDS = {
    "train": "train",
    "infer": "infer",
    "evaluate": "evaluate",
    "make-phantoms": "make_phantoms",
    "import-official": "import_official",
    "convert": "convert",
    "info": "info",
    "models": "models",
    "devices": "devices",
    "serve": "serve",
    "rank": "rank",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="dtc", description="Dual-task Consistency semi-supervised segmentation",
                                     epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"dtc_training {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, module in COMMANDS.items():
        if chosen is not None and name != chosen:
            sub.add_parser(name)  # listed, but its module is not imported
            continue
        mod = importlib.import_module(f".commands.{module}", __package__)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, epilog=EXIT_CODES)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_command(build_parser(argv).parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed sub-command; bad input becomes its message on stderr and EXIT_BAD_INPUT, a failed write
    (a full disk) one line naming the file and EXIT_ERROR."""
    from .errors import InputError
    from .files import DISK_FULL, WriteError

    try:
        with _warnings_as_messages(args.command):
            return args.run(args)
    except InputError as e:
        print(f"dtc {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        if e.errno not in DISK_FULL and not isinstance(e, WriteError):
            raise
        again = "run the command again" + (" with --resume" if args.command == "train" else "")
        advice = "Free some space" if e.errno in DISK_FULL else "Check the disk (is it full?)"
        print(f"dtc {args.command}: error: {e.filename}: {e.strerror}. Nothing was left half-written: the file "
              f"there before is intact. {advice} and {again}.", file=sys.stderr)
        return EXIT_ERROR


@contextmanager
def _warnings_as_messages(command: str):
    """This package's warnings read like its errors ("dtc train: warning: ..."), without a source line that
    means nothing to a user; other libraries' warnings keep Python's format, which says where they arise."""
    default = warnings.formatwarning
    package = Path(__file__).resolve().parent

    def format_warning(message, category, filename, lineno, line=None):
        if Path(filename).resolve().is_relative_to(package):
            return f"dtc {command}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        warnings.formatwarning = default


if __name__ == "__main__":
    sys.exit(main())
