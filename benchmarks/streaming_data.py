"""Usage: python benchmarks/streaming_data.py [N] [FOLDER]

Peak memory and speed of reading an image folder for training: N (default
2000) synthetic 64x64 JPEGs (made in FOLDER, default a temporary folder),
loaded whole as float32 (``load_image_folder``, what the trainers did before
gan_ext.data.stream) against one epoch of a ``StreamingLoader`` (batch 64)
with 0 and 2 workers. Each variant runs in a fresh process; peak RSS is its
``resource.getrusage`` maxrss (its workers' separately), next to the same
figure for a process that only imports."""
import os
import subprocess
import sys
import tempfile

VARIANT = r"""
import resource, sys, time
import torch
from gan_ext.data import Preprocess, StreamingLoader, folder_source, load_image_folder
from gan_ext.data.preprocess import CENTER
kind, folder = sys.argv[1], sys.argv[2]
t = time.perf_counter()
n = 0
if kind == "in-memory":
    x = load_image_folder(folder, 64)
    n = len(x)
elif kind.startswith("stream"):
    loader = StreamingLoader(folder_source(folder, Preprocess(CENTER, crop_size=64), 3),
                             batch_size=64, workers=int(kind[-1]))
    for _, (x,) in loader.batches(len(loader)):
        n += len(x)
    loader.close()
dt = time.perf_counter() - t
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{kind:10s} peak RSS {own:7.1f} MiB (workers: {kids:5.1f} MiB each at most)  "
      f"{n} images in {dt:5.2f} s = {n / max(dt, 1e-9):7.0f} images/s")
"""


def make_images(folder: str, n: int) -> None:
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(n):
        base = (np.sin(xx / rng.uniform(3, 12)) + np.cos(yy / rng.uniform(3, 12))) * 60 + 128
        img = np.stack([base * rng.uniform(0.5, 1) for _ in range(3)], -1)
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    folder = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="gan_ext_stream_")
    os.makedirs(folder, exist_ok=True)
    if len([f for f in os.listdir(folder) if f.endswith(".jpg")]) != n:
        make_images(folder, n)
    print(f"{n} synthetic 64x64 JPEGs in {folder}; {os.cpu_count()} CPUs (shared machine: "
          "speeds vary with the other load)")
    for kind in ("imports", "in-memory", "stream-w0", "stream-w2"):
        subprocess.run([sys.executable, "-c", VARIANT, kind, folder], check=True)


if __name__ == "__main__":
    main()
