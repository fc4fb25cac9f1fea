"""Build gan_ext._C with torch.utils.cpp_extension.

CPU sources (every csrc/**/*.cpp: the module, each op's schemas + autograd and
its cpu.cpp) are always built, with OpenMP so that at::parallel_for uses every
core; each cpu.cpp once per CPU variant (baseline, AVX2, AVX-512; the baseline
alone with GAN_EXT_PORTABLE=1), chosen at load time (csrc/cpu_dispatch.cpp). CUDA sources (every csrc/**/*.cu: each op's cuda.cu) are built when torch
is a CUDA build and a toolkit is found, or when FORCE_CUDA=1.
"""
import glob
import os
import sys

from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    import torch

    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


# The CPU kernel variants (csrc/common/cpu_capability.h): name, GAN_EXT_CPU_VARIANT,
# and the gcc flags of ATen's own variants. ATen's vec headers pick the vector
# width from CPU_CAPABILITY_AVX2 / _AVX512 and name their inline namespace
# after CPU_CAPABILITY, so the three copies of at::vec never collide.
_VARIANTS = (
    ("default", 0, ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"]),
    ("avx2", 1, ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]),
    ("avx512", 2, ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
                   "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]),
)


def _variants():
    """Every variant on x86-64 Linux, whatever the build host runs: the choice
    happens at load time. GAN_EXT_PORTABLE=1 (or another platform) builds the
    baseline alone."""
    import platform

    if (os.environ.get("GAN_EXT_PORTABLE", "0") == "1" or not sys.platform.startswith("linux")
            or platform.machine() not in ("x86_64", "AMD64")):
        return _VARIANTS[:1]
    return _VARIANTS


def _runtime_libstdcxx() -> list:
    """Link arguments that make the extension use the C++ runtime torch runs on.

    A toolchain without a shared libstdc++ (or whose specs force
    -static-libstdc++) copies the runtime into the extension, where its
    std::locale and iostream state shadow and mix with the process's: seen on
    a CUDA image, where every error message holding a number segfaulted. There,
    link the libstdc++.so.6 this process (torch) has loaded, by its full path;
    elsewhere add nothing."""
    if not sys.platform.startswith("linux"):
        return []
    import shutil
    import subprocess

    cxx = (os.environ.get("CXX") or "c++").split()[0]
    if shutil.which(cxx) is None:
        return []
    try:
        found = subprocess.run([cxx, "-print-file-name=libstdc++.so"], capture_output=True,
                               text=True, timeout=60).stdout.strip()
        specs = subprocess.run([cxx, "-dumpspecs"], capture_output=True, text=True,
                               timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    try:  # a wrapper script may add the flag itself
        with open(shutil.which(cxx), "rb") as f:
            wrapper = f.read(1 << 16)
    except OSError:
        wrapper = b""
    static = "static-libstdc++" in specs or (b"static-libstdc++" in wrapper and b"\0" not in wrapper)
    if os.path.isabs(found) and os.path.exists(found) and not static:
        return []  # the usual case: the compiler links its shared runtime
    import torch  # noqa: F401  (loads the runtime torch was built to use)

    with open("/proc/self/maps") as f:
        loaded = sorted({line.split()[-1] for line in f if "/libstdc++.so" in line})
    if not loaded:
        return []
    print(f"gan_ext build: {cxx} has no shared libstdc++ (it would be linked in statically); "
          f"linking {loaded[0]}", file=sys.stderr)
    return [loaded[0]]


class BuildExtension(cpp_extension.BuildExtension):
    """Compiles each csrc/ops/*/cpu.cpp once per variant, with that variant's
    flags, into its own folder, then links those objects with the rest.
    setuptools gives one set of flags to every source of an extension, so the
    variant objects are compiled here, through the same (ninja) compiler
    torch's BuildExtension has set up: the same include paths, ABI and
    limited-API flags, with or without ninja, and in `pip install -e .`."""

    def build_extension(self, ext):
        variant_sources = getattr(ext, "gan_ext_variant_sources", [])
        objects = []
        for name, level, flags in _variants():
            cxx = ext.extra_compile_args["cxx"] + flags + [f"-DGAN_EXT_CPU_VARIANT={level}"]
            objects += self.compiler.compile(
                variant_sources,
                output_dir=os.path.join(self.build_temp, f"cpu_{name}"),
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs={**ext.extra_compile_args, "cxx": cxx},
                depends=ext.depends,
            )
        # Baseline objects first: the linker keeps the first copy of an inline
        # function (c10, std) that several variants instantiate, so code shared
        # with the baseline is never taken from an AVX-512 object.
        ext.extra_objects = objects + [o for o in ext.extra_objects if o not in objects]
        super().build_extension(ext)


def _extension():
    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    kernels = sorted(glob.glob("csrc/ops/*/cpu.cpp"))
    cpp = [f for f in cpp if f not in kernels]
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True))
    openmp = ["-fopenmp"] if sys.platform != "darwin" else []
    cxx = ["-O3", "-std=c++20", *openmp]
    cxx += [f"-DGAN_EXT_MAX_CPU_CAPABILITY={_variants()[-1][1]}"]
    link = [*openmp, *_runtime_libstdcxx()]
    use_cuda = _want_cuda()
    if use_cuda:
        ext_cls = cpp_extension.CUDAExtension
        sources = cpp + cu
        extra = {"cxx": cxx + ["-DWITH_CUDA"], "nvcc": ["-O3", "-DWITH_CUDA"]}
    else:
        ext_cls = cpp_extension.CppExtension
        sources = cpp
        extra = {"cxx": cxx}
    print(f"gan_ext build: CPU sources {len(cpp)} + {len(kernels)} kernels x "
          f"{'/'.join(v[0] for v in _variants())}, CUDA sources {len(cu) if use_cuda else 0} "
          f"({'built' if use_cuda else 'skipped: no CUDA torch/toolkit and FORCE_CUDA!=1'})",
          file=sys.stderr)
    ext = ext_cls(
        "gan_ext._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args=extra,
        extra_link_args=link,
        depends=kernels,  # so that a kernel edit alone still relinks
        py_limited_api=True,
    )
    ext.gan_ext_variant_sources = kernels
    return ext


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
