"""``gan-ext info``: versions, what was compiled and which backend runs."""
from __future__ import annotations

import argparse
import json

import gan_ext

from .common import PROG, Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the fields as one JSON object")


def _format_value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) if v else "none"
    return str(v)


def run(args: argparse.Namespace) -> int:
    fields = gan_ext.info()
    if args.json:
        print(json.dumps(fields, indent=2))
        return 0
    width = max(len(k) for k in fields)
    for k, v in fields.items():
        print(f"{k.ljust(width)}  {_format_value(v)}")
    return 0


COMMAND = Command(
    help="show the version, what was compiled and which backend runs",
    description="Print gan_ext.info(): versions, whether the C++/CUDA extension loaded, "
                "the devices with compiled kernels and the active backend.",
    examples=f"  {PROG} info\n  {PROG} info --json",
    add_arguments=add_arguments,
    run=run,
)
