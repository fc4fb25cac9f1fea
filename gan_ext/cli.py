"""The ``gan-ext`` command line.

Subcommands live in :data:`COMMANDS` (name -> :class:`Command`); a later
subcommand (``train``, ``sample``, ``eval``) is one more entry with its own
argument builder and run function, nothing else changes.

Mistakes a user can make (a bad option value, asking for CUDA on a machine
without it) end with one line on stderr and exit code 2, never a traceback;
``GAN_EXT_DEBUG=1`` shows the traceback anyway.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

PROG = "gan-ext"


class UsageError(Exception):
    """An error the user caused and can fix: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (usage stays available via --help)."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


@dataclass
class Command:
    help: str                                          # one line, shown in `gan-ext --help`
    examples: str                                      # shown at the end of `gan-ext NAME --help`
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]           # returns the exit code
    description: Optional[str] = None


# ------------------------------------------------------------------------ info
def _info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the fields as one JSON object")


def _format_value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) if v else "none"
    return str(v)


def _info_run(args: argparse.Namespace) -> int:
    import gan_ext

    fields = gan_ext.info()
    if args.json:
        print(json.dumps(fields, indent=2))
        return 0
    width = max(len(k) for k in fields)
    for k, v in fields.items():
        print(f"{k.ljust(width)}  {_format_value(v)}")
    return 0


# ----------------------------------------------------------------------- bench
def _positive_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a handful of cases with fewer repetitions (seconds, not minutes)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to run (default: cuda when available, else cpu)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="input and parameter dtype (default: float32)")
    p.add_argument("--reps", type=_positive_int, default=None, metavar="N",
                   help="timed repetitions per case; the median is reported "
                        "(default: 50, 20 with --quick)")
    p.add_argument("--warmup", type=_positive_int, default=None, metavar="N",
                   help="untimed repetitions before timing (default: 5, 3 with --quick)")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile of the eager block (compiles every case: slow)")
    p.add_argument("--models", action="store_true",
                   help="time whole training steps of the models (DCGAN, MLP GAN, VAE, "
                        "CycleGAN) instead of single blocks: fused model vs the plain-PyTorch "
                        "build (slow: use --reps 10)")
    p.add_argument("-k", "--filter", default=None, metavar="WORDS",
                   help="only cases whose name contains every word, e.g. 'bn_lrelu fwd+bwd'")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")


def _bench_run(args: argparse.Namespace) -> int:
    import torch

    from . import bench
    from .memory import retain_freed_memory

    retain_freed_memory()  # both sides of every ratio run in this process with it

    kind = "model" if args.models else "all"
    selected = bench.select(bench.cases(quick=args.quick, kind=kind), args.filter)
    if not selected:
        raise UsageError(f"no benchmark case matches --filter {args.filter!r} "
                         f"(see '{PROG} bench --list')")
    if args.list:
        for c in selected:
            print(c.group)
        return 0

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise UsageError(f"--device cuda was requested but {why} (torch {torch.__version__}); "
                         "use --device cpu")
    dtype = getattr(torch, args.dtype)
    reps = args.reps or (20 if args.quick else 50)
    warmup = args.warmup or (3 if args.quick else 5)
    print(f"{PROG} bench: {len(selected)} case{'s' if len(selected) != 1 else ''}"
          f"{' (quick)' if args.quick else ''}, fused gan_ext vs eager PyTorch"
          f"{' vs torch.compile' if args.compile else ''}")
    bench.run(selected, device=device, dtype=dtype, reps=reps, warmup=warmup, compile=args.compile)
    return 0


# -------------------------------------------------------------------- registry
COMMANDS: Dict[str, Command] = {
    "info": Command(
        help="show the version, what was compiled and which backend runs",
        description="Print gan_ext.info(): versions, whether the C++/CUDA extension loaded, "
                    "the devices with compiled kernels and the active backend.",
        examples=f"  {PROG} info\n  {PROG} info --json",
        add_arguments=_info_arguments,
        run=_info_run,
    ),
    "bench": Command(
        help="time the fused layers and losses against eager PyTorch",
        description="Time fused gan_ext blocks and losses against the same code in eager "
                    "PyTorch (and torch.compile with --compile): norm+activation blocks at "
                    "the DCGAN batch-64 shapes, GAN/L1 losses and the VAE reparameterization "
                    "at the shapes of the models. "
                    "Repetitions are interleaved after warm-up; the median is reported. "
                    "Ratios > 1 mean the fused block is faster.",
        examples=(f"  {PROG} bench --quick\n"
                  f"  {PROG} bench --device cuda --dtype bfloat16\n"
                  f"  {PROG} bench --compile -k 'bn_relu fwd+bwd'\n"
                  f"  {PROG} bench -k reparam_kl\n"
                  f"  {PROG} bench --models --reps 10 -k dcgan64\n"
                  f"  {PROG} bench --list"),
        add_arguments=_bench_arguments,
        run=_bench_run,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG, formatter_class=fmt,
        description="gan_ext: fused kernels, layers and tools that make generative models train faster.",
        epilog="examples:\n" + "\n".join(c.examples.splitlines()[0] for c in COMMANDS.values())
               + f"\n\nRun '{PROG} COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=textwrap.fill(cmd.description or cmd.help),
                           epilog="examples:\n" + cmd.examples, formatter_class=fmt)
        cmd.add_arguments(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
