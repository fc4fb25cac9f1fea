"""Build gan_ext._C with torch.utils.cpp_extension.

CPU sources (every csrc/**/*.cpp: the module, each op's schemas + autograd and
its cpu.cpp) are always built, with OpenMP so that at::parallel_for uses every
core. CUDA sources (every csrc/**/*.cu: each op's cuda.cu) are built when torch
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


def _simd_flags():
    """at::vec::Vectorized picks its AVX2 implementation from CPU_CAPABILITY_AVX2;
    without it the header falls back to a generic array type. Enable AVX2+FMA on
    x86-64 hosts that have it (every GPU host does); GAN_EXT_PORTABLE=1 opts out."""
    if os.environ.get("GAN_EXT_PORTABLE", "0") == "1" or not sys.platform.startswith("linux"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return []
    if all(f" {f}" in flags for f in ("avx2", "fma", "f16c")):
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return []


def _extension():
    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True))
    openmp = ["-fopenmp"] if sys.platform != "darwin" else []
    cxx = ["-O3", "-std=c++20", *openmp]
    cxx += _simd_flags()
    link = [*openmp]
    use_cuda = _want_cuda()
    if use_cuda:
        ext_cls = cpp_extension.CUDAExtension
        sources = cpp + cu
        extra = {"cxx": cxx + ["-DWITH_CUDA"], "nvcc": ["-O3", "-DWITH_CUDA"]}
    else:
        ext_cls = cpp_extension.CppExtension
        sources = cpp
        extra = {"cxx": cxx}
    print(f"gan_ext build: CPU sources {len(cpp)}, CUDA sources {len(cu) if use_cuda else 0} "
          f"({'built' if use_cuda else 'skipped: no CUDA torch/toolkit and FORCE_CUDA!=1'})",
          file=sys.stderr)
    return ext_cls(
        "gan_ext._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args=extra,
        extra_link_args=link,
        py_limited_api=True,
    )


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
