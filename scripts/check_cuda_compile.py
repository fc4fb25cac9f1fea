#!/usr/bin/env python3
"""Compile-only check of every csrc/**/*.cu with nvcc, for sm_80 and sm_90.

Works on a machine without a GPU and with a CPU-only torch: the include paths
are built from the installed torch package directly, because
torch.utils.cpp_extension.include_paths() may try to add CUDA paths there.
Each file becomes an object file in a temporary directory that is thrown away.

Exit status: 0 all files compiled, 1 at least one failed (nvcc's output is
printed), 77 skipped because nvcc was not found (PATH, $CUDA_HOME/bin,
/usr/local/cuda/bin).

    python scripts/check_cuda_compile.py [-v] [files...]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

SKIPPED = 77
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ("80", "90")


def find_nvcc() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            cand = os.path.join(home, "bin", "nvcc")
            if os.access(cand, os.X_OK):
                return cand
    found = shutil.which("nvcc")
    if found:
        return found
    cand = "/usr/local/cuda/bin/nvcc"
    return cand if os.access(cand, os.X_OK) else None


def torch_flags() -> list[str]:
    import torch

    inc = os.path.join(os.path.dirname(torch.__file__), "include")
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    return [
        f"-I{inc}",
        f"-I{os.path.join(inc, 'torch', 'csrc', 'api', 'include')}",
        f"-I{os.path.join(ROOT, 'csrc')}",
        # CPU-only torch wheels lack the generated c10/cuda/impl/cuda_cmake_macros.h.
        "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
        # torch.utils.cpp_extension's COMMON_NVCC_FLAGS and extension defines.
        "-D__CUDA_NO_HALF_OPERATORS__",
        "-D__CUDA_NO_HALF_CONVERSIONS__",
        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-D__CUDA_NO_HALF2_OPERATORS__",
        "--expt-relaxed-constexpr",
        "-DTORCH_EXTENSION_NAME=_C",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        # What setup.py passes to nvcc.
        "-O3",
        "-DWITH_CUDA",
    ]


def default_sources() -> list[str]:
    """Every CUDA source of the extension, as setup.py globs them."""
    return sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True))


def object_name(src: str) -> str:
    """The object file's name: every op's kernel file is called cuda.cu, so the
    name is made from the path (relative to the repository)."""
    rel = os.path.relpath(os.path.abspath(src), ROOT)
    return rel.replace(os.sep, "_") + ".o"


def compile_one(nvcc: str, src: str, outdir: str, flags: list[str], threads: int,
                verbose: bool) -> tuple[str, bool, float, str]:
    obj = os.path.join(outdir, object_name(src))
    cmd = [nvcc, "-c", src, "-o", obj, "-std=c++20", "-Xcompiler", "-fPIC", *flags]
    for arch in ARCHS:
        cmd += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    if threads > 1:
        cmd += ["--threads", str(threads)]  # the two architectures in parallel
    if verbose:
        cmd += ["-Xptxas", "-v"]  # registers, spills and shared memory per kernel
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        output = "$ " + " ".join(cmd) + "\n" + output
    return src, proc.returncode == 0, elapsed, output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="sources to check (default: csrc/**/*.cu)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print ptxas resource usage and any warnings of files that compile")
    args = parser.parse_args(argv)

    nvcc = find_nvcc()
    if nvcc is None:
        print("CUDA compile check skipped: nvcc is absent (not on PATH, in $CUDA_HOME/bin "
              "or /usr/local/cuda/bin)")
        return SKIPPED
    files = args.files or default_sources()
    if not files:
        print("CUDA compile check: no csrc/**/*.cu sources, nothing to do")
        return 0
    try:
        flags = torch_flags()
    except ImportError as e:
        print(f"CUDA compile check failed: cannot import torch for its headers ({e})")
        return 1

    cpus = os.cpu_count() or 1
    jobs = max(1, min(len(files), cpus))
    threads = max(1, min(len(ARCHS), cpus // jobs))
    print(f"CUDA compile check with {nvcc}: {len(files)} file(s), sm_{' sm_'.join(ARCHS)}, "
          f"{jobs} job(s) x {threads} nvcc thread(s)", flush=True)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="gan_ext_nvcc_") as outdir, \
            concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(compile_one, nvcc, f, outdir, flags, threads, args.verbose)
                   for f in files]
        for fut in concurrent.futures.as_completed(futures):
            src, ok, elapsed, output = fut.result()
            rel = os.path.relpath(src, ROOT)
            print(f"{'OK    ' if ok else 'FAILED'} {rel} ({elapsed:.1f} s)", flush=True)
            if not ok:
                failed += 1
                print(output.rstrip(), flush=True)
            elif args.verbose and output.strip():
                print(output.rstrip(), flush=True)
    if failed:
        print(f"CUDA compile check: {failed} of {len(files)} file(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
