"""``gan-ext test``: a run's results on the user's images, one file per image
and a page to look at them, as the official CycleGAN/pix2pix ``test.py``
leaves ``results/NAME/test_latest/`` with its ``index.html``.

Every input image (a folder, recursively, or one file) is preprocessed as the
run was trained (center square, resized to the run's size, its channels),
and gives, named after it (``DIR/a/1.jpg`` -> ``a/1.png``):

* ``images/NAME.png``: the output: the translation (cyclegan in the chosen
  direction, pix2pix in the run's) or the reconstruction (ae, dae, vae: from
  the mean code, no sampling);
* ``input/NAME.png``: the input as the model saw it;
* ``cycle/NAME.png`` (cyclegan): the input translated there and back
  (G_B(G_A(x)) for AtoB), the cycle-consistency reconstruction;
* ``index.html``: one row per image, input | output (| cycle), each linked
  to its file.

``images/`` holds the outputs alone, so it can be handed to FID tools as is.
"""
from __future__ import annotations

import html
import os
import shutil
from typing import Dict, List, Optional, Tuple
from urllib.parse import quote

import torch
from torch import Tensor

from ..data import MNIST_SIZE, load_named_images
from .checkpoint import read_torch_file
from .grid import to_uint8
from .inference import _checkpoint_path, _is_examples_dcgan, _is_official_generator, load_trained
from . import _data
from .translation import _fits, translate

__all__ = ["TEST_MODELS", "write_results", "default_results_dir"]

TEST_MODELS = ("cyclegan", "pix2pix", "ae", "dae", "vae")
MARKER = "<!-- gan-ext test results -->"
_COLUMNS = {"input": "input", "images": "output", "cycle": "cycle"}
_LABELS = {("cyclegan", "AtoB"): ("real_A", "fake_B", "rec_A"),
           ("cyclegan", "BtoA"): ("real_B", "fake_A", "rec_B")}


def default_results_dir(checkpoint: str) -> str:
    """``RUN/test_latest`` (``RUN/test_best`` for a best.pt)."""
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))
    best = os.path.basename(checkpoint) == "best.pt"
    return os.path.join(folder, "test_best" if best else "test_latest")


def _prepare_dir(out: str) -> None:
    """An empty or new folder, or one this command wrote before (its
    subfolders are replaced); anything else is refused, never deleted."""
    if os.path.isdir(out) and os.listdir(out):
        page = os.path.join(out, "index.html")
        ours = False
        if os.path.isfile(page):
            with open(page, encoding="utf-8", errors="replace") as f:
                ours = MARKER in f.read(4096)
        if not ours:
            raise ValueError(f"-o {out!r} holds other files; give an empty or new folder "
                             "(results of an earlier 'gan-ext test' there are replaced)")
        for sub in _COLUMNS:
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    elif os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"-o {out!r} is a file; give a folder")
    os.makedirs(out, exist_ok=True)


def _save(image: Tensor, path: str) -> None:
    """(C, H, W) in [-1, 1] as a PNG (grey stays grey)."""
    from PIL import Image  # only here: pillow is slow to import
    os.makedirs(os.path.dirname(path), exist_ok=True)
    u8 = to_uint8(image[None])[0]
    arr = u8[0].numpy() if u8.shape[0] == 1 else u8.permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(arr).save(path)


def _run(trainer, x: Tensor, direction: str) -> Dict[str, Tensor]:
    """The columns of the page for inputs ``x`` (N, C, S, S) in [-1, 1]."""
    m, dev = trainer.model, trainer.device
    if trainer.name == "cyclegan":
        there, back = (m.G_A, m.G_B) if direction == "AtoB" else (m.G_B, m.G_A)
        out = translate(there, x, dev)
        return {"input": x, "images": out, "cycle": translate(back, out, dev)}
    if trainer.name == "pix2pix":
        return {"input": x, "images": translate(m.netG, x, dev)}
    u = (x + 1) / 2                                                    # [0, 1], as trained
    recon = []
    for i in range(0, len(u), 64):
        b = u[i:i + 64].to(dev)
        r = m.reconstruct(b, sample=False) if trainer.name == "vae" else m(b)
        recon.append(r.float().cpu())
    return {"input": x, "images": torch.cat(recon) * 2 - 1}


def _input_shape(trainer, direction: str) -> Tuple[int, int]:
    """(size, channels) of the inputs the run was trained on."""
    if trainer.name in ("ae", "dae", "vae"):
        return MNIST_SIZE, 1   # the autoencoders train on 28x28 grey (MNIST or --data)
    cfg = trainer.model.config
    ch = cfg.input_nc if trainer.name == "pix2pix" or direction == "AtoB" else cfg.output_nc
    return trainer.image_size(), ch


def _preprocess(trainer):
    """A --data cyclegan/pix2pix run's --preprocess (its evaluation plan is
    what the inputs get, as the run's own test images); None: the centre
    square at the run's size (MNIST runs, the autoencoders)."""
    if trainer.name not in ("cyclegan", "pix2pix") or trainer.opts.data is None:
        return None
    return _data.preprocess(trainer.opts, _fits(trainer.model.config)[0])


def _page(out: str, title: str, names: List[str], columns: Dict[str, str], size: int) -> str:
    width = max(size, 128)
    head = "".join(f"<th>{html.escape(label)}</th>" for label in columns.values())
    rows = []
    for name in names:
        cells = "".join(
            f'<td><a href="{quote(f"{sub}/{name}.png")}"><img src="{quote(f"{sub}/{name}.png")}" '
            f'width="{width}" alt="{html.escape(sub)}"></a></td>' for sub in columns)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    text = (f"<!DOCTYPE html>\n{MARKER}\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
            "img{image-rendering:pixelated}td,th{padding:4px;text-align:center}</style>"
            f"</head><body><h2>{html.escape(title)}</h2><table><tr><th>image</th>{head}</tr>\n"
            + "\n".join(rows) + "\n</table></body></html>\n")
    path = os.path.join(out, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def write_results(path: str, inputs: str, out: Optional[str] = None,
                    direction: Optional[str] = None, device: str = "auto") -> Tuple[str, int]:
    """Writes the results of the run at ``path`` on the images ``inputs``
    into ``out`` (default ``RUN/test_latest``); returns (index.html, number
    of images)."""
    path = _checkpoint_path(path)
    raw = read_torch_file(path)
    if _is_official_generator(raw) or _is_examples_dcgan(raw):
        raise ValueError(f"{path!r} is a bare generator file, not a gan_ext run; 'gan-ext test' "
                         "needs a run (translate with 'gan-ext sample FILE --input DIR')")
    trainer, ckpt = load_trained(path, device, raw)
    if trainer.name not in TEST_MODELS:
        raise ValueError(f"--input does not apply to {trainer.name}: it samples from noise, it "
                         f"has no input images; 'gan-ext test' is for {', '.join(TEST_MODELS)} "
                         f"(use 'gan-ext sample {path}' for samples)")
    if direction is not None and trainer.name != "cyclegan":
        raise ValueError(f"--direction applies to cyclegan only; {trainer.name} "
                         + ("translates in the direction it was trained in (--direction of "
                            "'train')" if trainer.name == "pix2pix" else "reconstructs its input"))
    direction = direction or "AtoB"
    size, channels = _input_shape(trainer, direction)
    x, names = load_named_images(inputs, size, channels, _preprocess(trainer))
    h, size = x.shape[-2:]                                             # (N, C, H, W)
    out = out or default_results_dir(path)
    _prepare_dir(out)
    with torch.no_grad():
        cols = _run(trainer, x, direction)
    for sub, images in cols.items():
        for name, im in zip(names, images):
            _save(im, os.path.join(out, sub, f"{name}.png"))
    labels = _LABELS.get((trainer.name, direction))
    columns = {sub: (f"{_COLUMNS[sub]} ({labels[i]})" if labels else _COLUMNS[sub])
               for i, sub in enumerate(cols)}
    what = f"{trainer.name} {direction}" if trainer.name == "cyclegan" else trainer.name
    title = (f"{what}: {os.path.basename(os.path.dirname(os.path.abspath(path)))}, "
             f"{os.path.basename(path)} at step {int(ckpt.get('step', 0))}, {len(names)} images "
             f"at {size}x{h}")
    return _page(out, title, names, columns, size), len(names)
