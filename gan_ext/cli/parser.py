"""The ``gan-ext`` parser and :func:`main`: the commands, their dispatch and
the one-line error handling."""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Dict, List, Optional

from .. import __version__
from .bench import COMMAND as BENCH
from .common import PROG, Command, UsageError
from .eval import COMMAND as EVAL
from .info import COMMAND as INFO
from .sample import COMMAND as SAMPLE
from .test import COMMAND as TEST
from .train import COMMAND as TRAIN

COMMANDS: Dict[str, Command] = {"info": INFO, "bench": BENCH, "train": TRAIN, "sample": SAMPLE,
                                "eval": EVAL, "test": TEST}


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (usage stays available via --help)."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG, formatter_class=fmt,
        description="gan_ext: fused kernels, layers and tools that make generative models train faster.",
        epilog="examples:\n" + "\n".join(c.examples.splitlines()[0] for c in COMMANDS.values())
               + f"\n\nRun '{PROG} COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.subcommands = {}
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=textwrap.fill(cmd.description or cmd.help),
                           epilog="examples:\n" + cmd.examples, formatter_class=fmt)
        cmd.add_arguments(p)
        parser.subcommands[name] = p
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        # What was typed, for `train --nproc-per-node` to hand on to torchrun.
        args.argv = list(sys.argv[1:] if argv is None else argv)
        if extra:  # reported by the subcommand's parser, so the hint names its --help
            owner = parser.subcommands.get(args.command, parser)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command is None:
            raise UsageError(f"missing command, one of: {', '.join(COMMANDS)} (see '{PROG} --help')")
        return COMMANDS[args.command].run(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `gan-ext bench | head`: stop quietly; point stdout at devnull so the
        # interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as e:
        # Library errors caused by input (STYLE: ValueError with what to do) and
        # missing/unreadable files: one line unless debugging.
        if os.environ.get("GAN_EXT_DEBUG", "0") == "1":
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

