"""Usage: python benchmarks/amp_step.py [REPS]

DCGAN-64 (and DCGAN-28) training step, float32 vs bf16 autocast (what
`gan-ext train --amp` runs), fused gan_ext build, interleaved medians."""
import statistics
import sys
import time

import torch

from gan_ext import _backend
from gan_ext._info import cpu_name
from gan_ext.bench import models  # noqa: F401  (registers the model blocks)
from gan_ext.bench.registry import Case
from gan_ext.memory import retain_freed_memory


def main() -> None:
    retain_freed_memory()
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print(f"{cpu_name()}, {_backend.cpu_capability} kernels, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for name, batch in (("step_dcgan64", 64), ("step_dcgan28", 128)):
        case = Case(name, (batch,), "nchw", "fwd+bwd")
        steps = {}
        for impl in ("fused", "eager"):
            _, step, _ = case.spec.build(case, impl == "fused", torch.device("cpu"), torch.float32, 0)
            def amp_step(step=step):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    step()
            backend = "fused" if impl == "fused" else "reference"
            def wrap(f, backend=backend):
                def run():
                    with _backend.use_backend(backend):
                        f()
                return run
            steps[f"{impl} fp32"] = wrap(step)
            steps[f"{impl} bf16-autocast"] = wrap(amp_step)
        for f in steps.values():
            for _ in range(3):
                f()
        times = {k: [] for k in steps}
        for _ in range(reps):
            for k, f in steps.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(name, " | ".join(f"{k} {v:.1f} ms" for k, v in med.items()),
              f"| fused fp32/bf16 {med['fused fp32'] / med['fused bf16-autocast']:.2f}x"
              f" | eager fp32 / fused bf16 {med['eager fp32'] / med['fused bf16-autocast']:.2f}x")


if __name__ == "__main__":
    main()
