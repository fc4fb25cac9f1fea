#!/usr/bin/env python3
"""Compact ratio table from a pytest-benchmark JSON file.

    python benchmarks/ratios.py .benchmarks/latest.json

One row per benchmark group (block, shape, layout, pass, device, dtype): the
fused median, eager/fused and compile/fused median ratios (> 1: fused is
faster), and for training passes the memory kept for backward, fused/eager.
Standard library only, so it runs anywhere the JSON file is.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict


def load(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        sys.exit(f"ratios.py: cannot read {path}: {e.strerror}")
    except json.JSONDecodeError as e:
        sys.exit(f"ratios.py: {path} is not a pytest-benchmark JSON file: {e}")


def rows(data: dict):
    """(group, {impl: median seconds}, {impl: saved bytes}, fused_path) per group, in file order."""
    groups: "OrderedDict[str, dict]" = OrderedDict()
    for b in data.get("benchmarks", []):
        extra = b.get("extra_info", {})
        impl = extra.get("impl") or (b.get("params") or {}).get("impl")
        group = b.get("group") or b.get("name")
        g = groups.setdefault(group, {"median": {}, "saved": {}, "path": extra.get("fused_path", "")})
        if impl == "memory":
            g["saved"].setdefault("fused", extra.get("saved_bytes_fused"))
            g["saved"].setdefault("eager", extra.get("saved_bytes_eager"))
            continue
        g["median"][impl] = b["stats"]["median"]
        if "saved_bytes" in extra:
            g["saved"][impl] = extra["saved_bytes"]
    for name, g in groups.items():
        yield name, g["median"], g["saved"], g["path"]


def _ratio(med: dict, impl: str) -> str:
    if impl in med and med.get("fused"):
        return f"{med[impl] / med['fused']:.2f}x"
    return "n/a" if impl == "compile" else ""


def table(data: dict) -> str:
    header = ["group", "fused ms", "eager/fused", "compile/fused", "saved MiB f/e"]
    body = []
    paths = set()
    for name, med, saved, path in rows(data):
        if path:
            paths.add(path)
        mib = ""
        if saved.get("fused") and saved.get("eager"):
            mib = f"{saved['fused'] / 2**20:.1f}/{saved['eager'] / 2**20:.1f}"
        fused = f"{med['fused'] * 1e3:.3f}" if "fused" in med else ""
        body.append([name, fused, _ratio(med, "eager"), _ratio(med, "compile") if med else "", mib])
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]).rstrip()
             for r in [header] + body]
    info = data.get("machine_info", {})
    cpu = (info.get("cpu") or {}).get("brand_raw", "")
    lines.insert(0, f"{len(body)} groups | python {info.get('python_version', '?')} | {cpu}".rstrip(" |"))
    for p in sorted(paths):
        lines.append(f"fused = {p}")
    lines.append("ratio = other median / fused median (> 1: fused is faster); "
                 "saved MiB f/e = memory kept for backward, fused/eager")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json_file", help="output of pytest --benchmark-json=FILE")
    args = parser.parse_args(argv)
    data = load(args.json_file)
    if not data.get("benchmarks"):
        print(f"ratios.py: no benchmarks in {args.json_file}", file=sys.stderr)
        return 1
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
