"""``gan-ext sample`` and ``gan-ext eval``: rebuild a trained model from its
checkpoint (or a published official CycleGAN/pix2pix generator file) and
sample, translate or evaluate it."""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .checkpoint import FORMAT, CheckpointError, read_torch_file
from .grid import save_grid
from .loop import resolve_device
from .monitor import append_jsonl
from .options import TrainOptions
from .registry import trainer_class
from .translation import _rows, translate

__all__ = ["load_trained", "sample_checkpoint", "evaluate_checkpoint", "load_images",
           "official_generator"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _checkpoint_path(path: str) -> str:
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "checkpoint.pt")):
        return os.path.join(path, "checkpoint.pt")
    return path


def load_trained(path: str, device: str = "auto"):
    """(trainer with the checkpoint's weights, in eval mode; the checkpoint dict)."""
    path = _checkpoint_path(path)
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is a PyTorch file but not a gan_ext training "
                              "checkpoint (no gan_ext format tag), nor an official "
                              "CycleGAN/pix2pix generator")
    opts = TrainOptions.from_dict({**ckpt["options"], "resume": False})
    dev = resolve_device(device)
    trainer = trainer_class(ckpt["model_name"])(opts, dev)
    trainer.build(ckpt["model_config"])
    trainer.load_state(ckpt, weights_only=True)
    trainer.model.eval()
    return trainer, ckpt


# ------------------------------------------------------ official generators
def _is_official_generator(sd) -> bool:
    return (isinstance(sd, dict) and bool(sd) and all(isinstance(v, Tensor) for v in sd.values())
            and all(str(k).replace("module.", "", 1).startswith("model.") for k in sd))


def official_generator(state_dict: dict) -> torch.nn.Module:
    """A ResnetGenerator (CycleGAN) or UnetGenerator (pix2pix) shaped after a
    bare official state_dict (``latest_net_G_A.pth``), weights loaded."""
    from ..models import ResnetGenerator, UnetGenerator, load_official_state_dict
    sd = {k.replace("module.", "", 1): v for k, v in state_dict.items()}
    blocks = {int(m.group(1)) for k in sd for m in [re.match(r"model\.(\d+)\.conv_block\.", k)] if m}
    if blocks:
        first = sd["model.1.weight"]                        # (ngf, input_nc, 7, 7)
        last_idx = max(int(k.split(".")[1]) for k in sd if k.endswith(".weight")
                       and k.count(".") == 2)
        last = sd[f"model.{last_idx}.weight"]               # (output_nc, ngf, 7, 7)
        norm = "batch" if "model.2.running_mean" in sd else "instance"
        G = ResnetGenerator(first.shape[1], last.shape[0], first.shape[0], len(blocks), norm)
    elif "model.model.0.weight" in sd:
        first = sd["model.model.0.weight"]                  # (ngf, input_nc, 4, 4)
        depth = max(k.count("model.1.") for k in sd) + 1
        out_w = [v for k, v in sd.items() if k.startswith("model.model.3.") and k.endswith("weight")]
        output_nc = out_w[0].shape[1] if out_w else 3
        norm = "batch" if any(k.endswith("running_mean") for k in sd) else "instance"
        G = UnetGenerator(first.shape[1], output_nc, depth, first.shape[0], norm)
    else:
        raise CheckpointError("the state_dict is neither an official ResnetGenerator nor a "
                              "UnetGenerator")
    try:
        load_official_state_dict(G, sd)
    except RuntimeError as e:
        raise CheckpointError(f"the official generator does not load: "
                              f"{str(e).splitlines()[0][:200]}") from e
    return G.eval()


def load_images(path: str, image_size: int, channels: int) -> Tensor:
    """A folder (via gan_ext.data.load_image_folder) or one image file ->
    (N, C, S, S) in [-1, 1]."""
    if os.path.isdir(path):
        from ..data import load_image_folder
        return load_image_folder(path, image_size, channels=channels)
    if not os.path.isfile(path):
        raise ValueError(f"--input {path!r} does not exist")
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            w, h = img.size
            s = min(w, h)
            img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            img = img.resize((image_size, image_size), Image.BICUBIC)
            import numpy as np
            a = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).float() / 127.5 - 1
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"--input {path!r} is not a readable image ({e})") from None
    return (a[None] if channels == 1 else a.permute(2, 0, 1))[None]


# ------------------------------------------------------------------ commands
def sample_checkpoint(path: str, out: str, n: int = 64, interpolate: bool = False,
                      inputs: Optional[str] = None, seed: int = 0, device: str = "auto",
                      direction: str = "AtoB", image_size: Optional[int] = None) -> str:
    """Writes a grid PNG to ``out``; returns its path."""
    path = _checkpoint_path(path)
    raw = read_torch_file(path)
    g = torch.Generator().manual_seed(seed)
    if _is_official_generator(raw):
        if inputs is None:
            raise ValueError("an official generator file translates images: pass --input "
                             "DIR_OR_IMAGE")
        G = official_generator(raw)
        dev = resolve_device(device)
        G.to(dev)
        x = load_images(inputs, image_size or 256, G.input_nc)[:n]
        with torch.no_grad():
            y = translate(G, x, dev, batch=8)
        per = min(8, len(x))
        return save_grid(_rows([x, y], per), out, nrow=per)
    trainer, ckpt = load_trained(path, device)
    x = None
    if inputs is not None:
        if trainer.name not in ("cyclegan", "pix2pix", "ae", "dae"):
            raise ValueError(f"--input is for translation and autoencoder models; a "
                             f"{trainer.name} samples from noise")
        cfg = trainer.model.config
        if trainer.name in ("ae", "dae"):
            x = (load_images(inputs, 28, 1) + 1) / 2
        else:
            ch = cfg.input_nc if direction == "AtoB" else cfg.output_nc
            s = image_size or trainer.image_size()
            x = load_images(inputs, s, ch)
        x = x[:n]
    with torch.no_grad():
        kw = {"direction": direction} if trainer.name in ("cyclegan", "pix2pix") else {}
        images, nrow = trainer.sample(n, interpolate, g, inputs=x, **kw)
    return save_grid(images, out, nrow=nrow)


def evaluate_checkpoint(path: str, n: int = 10000, device: str = "auto",
                        fid_backend: Optional[str] = None) -> Tuple[Dict[str, Any], str]:
    """The family's metrics; appended to the run's metrics.jsonl. Returns
    (metrics, metrics.jsonl path)."""
    path = _checkpoint_path(path)
    trainer, ckpt = load_trained(path, device)
    metrics = trainer.run_eval(n)
    if fid_backend is not None:
        metrics[f"fid_{fid_backend}"] = _backend_fid(trainer, fid_backend, n)
    log = os.path.join(os.path.dirname(os.path.abspath(path)), "metrics.jsonl")
    append_jsonl(log, {"step": int(ckpt.get("step", 0)), "epoch": int(ckpt.get("epoch", 0)),
                       "eval": metrics, "source": "gan-ext eval"})
    return metrics, log


def _backend_fid(trainer, backend: str, n: int) -> float:
    """FID through torch-fidelity / clean-fid on image folders (real MNIST
    test images vs samples), when that package is installed."""
    import tempfile

    from PIL import Image

    from .. import metrics
    from . import _data
    if trainer.name not in ("gan", "dcgan", "cgan", "vae"):
        raise ValueError(f"--fid-backend applies to the generative models, not {trainer.name}")
    fn = getattr(metrics, "fid_with_backend", None)
    if fn is None:
        raise ValueError("this gan_ext.metrics has no fid_with_backend")
    g = torch.Generator().manual_seed(123)
    fake, _ = trainer.sample(n, False, g)
    real = _data.mnist_signed("test", trainer.opts.mnist_dir)[0][:n]
    with tempfile.TemporaryDirectory() as tmp:
        for name, imgs in (("real", real), ("fake", fake)):
            d = os.path.join(tmp, name)
            os.makedirs(d)
            u8 = ((imgs.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            for i, im in enumerate(u8):
                Image.fromarray(im[0].numpy()).convert("RGB").save(os.path.join(d, f"{i:05d}.png"))
        return float(fn(backend, os.path.join(tmp, "real"), os.path.join(tmp, "fake")))
