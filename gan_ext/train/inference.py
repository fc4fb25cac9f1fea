"""``gan-ext sample`` and ``gan-ext eval``: rebuild a trained model from its
checkpoint (or a published official CycleGAN/pix2pix generator file) and
sample, translate or evaluate it."""
from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..data import MNIST_SIZE, load_image_folder
from ..models import (DCGAN, DCGANConfig, ResnetGenerator, UnetGenerator,
                      load_official_state_dict)
from .base import trainer_class
from .checkpoint import (FORMAT, CheckpointError, atomic_save, check_complete, check_config_sizes,
                         read_torch_file)
from .gan import GENERATE_BATCH, gan_metrics
from .grid import interleave_rows, save_grid
from .image_metrics import IMAGE_SCORE_MODELS, image_scores
from .latents import EXAMPLES_DCGAN_EVAL_SEED
from .runtime import resolve_device
from .monitor import append_jsonl
from .options import DEFAULTS, MODELS, TrainOptions, check_applicable
from .translation import translate

__all__ = ["load_trained", "sample_checkpoint", "evaluate_checkpoint", "load_images",
           "is_tensor_file", "official_generator"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _checkpoint_path(path: str) -> str:
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "checkpoint.pt")):
        return os.path.join(path, "checkpoint.pt")
    return path


def load_trained(path: str, device: str = "auto", ckpt: Optional[Any] = None):
    """(trainer with the checkpoint's weights, in eval mode; the checkpoint dict).
    ``ckpt``: the file's content when the caller has read it already."""
    path = _checkpoint_path(path)
    if ckpt is None:
        ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is a PyTorch file but not a gan_ext training "
                              "checkpoint (no gan_ext format tag), nor a generator file "
                              "'gan-ext sample' knows (official CycleGAN/pix2pix, "
                              "pytorch/examples DCGAN)")
    check_complete(ckpt, path)
    if ckpt["model_name"] not in MODELS:
        raise CheckpointError(f"{path!r} names an unknown model {ckpt['model_name']!r}")
    try:
        opts = TrainOptions.from_dict({**ckpt["options"], "resume": False})
        dev = resolve_device(device)
        trainer = trainer_class(ckpt["model_name"])(opts, dev)
        trainer.build(ckpt["model_config"])
    except (TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path!r}: its options or model settings are malformed "
                              f"({type(e).__name__}: {str(e)[:120]}); the file is damaged") from None
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
    try:
        return _official_generator(state_dict)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"the official generator's state_dict is malformed "
                              f"({type(e).__name__}: {str(e)[:120]})") from None


def _official_generator(state_dict: dict) -> torch.nn.Module:
    sd = {k.replace("module.", "", 1): v for k, v in state_dict.items()}
    blocks = {int(m.group(1)) for k in sd for m in [re.match(r"model\.(\d+)\.conv_block\.", k)] if m}
    if blocks:
        first = sd["model.1.weight"]                        # (ngf, input_nc, 7, 7)
        last_idx = max(int(k.split(".")[1]) for k in sd if k.endswith(".weight")
                       and k.count(".") == 2)
        last = sd[f"model.{last_idx}.weight"]               # (output_nc, ngf, 7, 7)
        norm = "batch" if "model.2.running_mean" in sd else "instance"
        dims = dict(input_nc=first.shape[1], output_nc=last.shape[0], ngf=first.shape[0],
                    n_blocks=len(blocks))
        check_config_sizes(dims, "the official generator")
        G = ResnetGenerator(dims["input_nc"], dims["output_nc"], dims["ngf"], len(blocks), norm)
    elif "model.model.0.weight" in sd:
        first = sd["model.model.0.weight"]                  # (ngf, input_nc, 4, 4)
        depth = max(k.count("model.1.") for k in sd) + 1
        out_w = [v for k, v in sd.items() if k.startswith("model.model.3.") and k.endswith("weight")]
        output_nc = out_w[0].shape[1] if out_w else 3
        norm = "batch" if any(k.endswith("running_mean") for k in sd) else "instance"
        dims = dict(input_nc=first.shape[1], output_nc=output_nc, ngf=first.shape[0],
                    num_downs=depth)
        check_config_sizes(dims, "the official generator")
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


# ---------------------------------------------- pytorch/examples DCGAN generator
def _is_examples_dcgan(sd) -> bool:
    """A bare ``netG_epoch_N.pth`` of pytorch/examples dcgan: main.0 ... main.12."""
    return (isinstance(sd, dict) and "main.0.weight" in sd and "main.12.weight" in sd
            and all(isinstance(v, Tensor) for v in sd.values())
            and all(str(k).startswith("main.") for k in sd))


def examples_dcgan_generator(state_dict: dict, device) -> Tuple[torch.nn.Module, Any]:
    """(G, its DCGANConfig): the 64x64 DCGAN generator of pytorch/examples, shaped
    after its state_dict (nz, ngf, nc), weights loaded strictly, in eval mode."""
    try:
        w0, wl = state_dict["main.0.weight"], state_dict["main.12.weight"]  # (nz, 8 ngf, 4, 4), (ngf, nc, 4, 4)
        cfg = DCGANConfig(nz=int(w0.shape[0]), ngf=int(wl.shape[0]), nc=int(wl.shape[1]),
                          image_size=64)
        check_config_sizes(dict(nz=cfg.nz, ngf=cfg.ngf, nc=cfg.nc), "the DCGAN generator")
        G = DCGAN(cfg).G
        G.load_state_dict(state_dict)
    except (IndexError, RuntimeError, ValueError, TypeError) as e:
        if isinstance(e, CheckpointError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"the pytorch/examples DCGAN generator does not load: "
                              f"{first[:160]}") from None
    return G.to(device).eval(), cfg


def _examples_dcgan_samples(G, nz: int, n: int, generator: torch.Generator, device) -> Tensor:
    z = torch.randn(n, nz, 1, 1, generator=generator)
    with torch.no_grad():
        return torch.cat([G(z[i:i + GENERATE_BATCH].to(device)).float().cpu()
                          for i in range(0, n, GENERATE_BATCH)])


def load_images(path: str, image_size: int, channels: int) -> Tensor:
    """A folder (via gan_ext.data.load_image_folder) or one image file ->
    (N, C, S, S) in [-1, 1]."""
    if os.path.isdir(path):
        return load_image_folder(path, image_size, channels=channels)
    if not os.path.isfile(path):
        raise ValueError(f"--input {path!r} does not exist")
    from PIL import Image, UnidentifiedImageError  # only here: pillow is slow to import
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            w, h = img.size
            s = min(w, h)
            img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            img = img.resize((image_size, image_size), Image.BICUBIC)
            a = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).float() / 127.5 - 1
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"--input {path!r} is not a readable image ({e})") from None
    return (a[None] if channels == 1 else a.permute(2, 0, 1))[None]


# ------------------------------------------------------------------ commands
def is_tensor_file(out: str) -> bool:
    """Whether ``sample -o out`` asks for the raw samples (a ``.pt`` file), not a picture."""
    return out.lower().endswith(".pt")


def save_samples(samples: Tensor, out: str, nrow: int, write_picture=None) -> str:
    """``out`` ending in ``.pt``: the raw samples as a tensor file (atomic);
    else the picture (``write_picture(samples, out, nrow)``, default a grid)."""
    if is_tensor_file(out):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        atomic_save(samples.detach().cpu().contiguous(), out)
        return out
    return (write_picture or save_grid)(samples, out, nrow=nrow)


def sample_checkpoint(path: str, out: str, n: int = 64, interpolate: bool = False,
                      inputs: Optional[str] = None, seed: int = 0, device: str = "auto",
                      direction: str = "AtoB", image_size: Optional[int] = None,
                      labels: Optional[Sequence[int]] = None) -> str:
    """Writes a grid image to ``out`` (a scatter plot for the 2-D benchmarks;
    the raw samples as a tensor when ``out`` ends in ``.pt``); returns its
    path. ``labels``: cgan classes to sample, one row each."""
    path = _checkpoint_path(path)
    raw = read_torch_file(path)
    g = torch.Generator().manual_seed(seed)
    if _is_official_generator(raw) or _is_examples_dcgan(raw):
        _refuse(labels is not None, "--label", "a cgan checkpoint")
        _refuse(interpolate, "--interpolate", "a gan_ext checkpoint")
    if _is_examples_dcgan(raw):
        _refuse(inputs is not None, "--input", "translation and autoencoder models")
        dev = resolve_device(device)
        G, cfg = examples_dcgan_generator(raw, dev)
        images = _examples_dcgan_samples(G, cfg.nz, n, g, dev)
        return save_samples(images, out, nrow=max(1, math.isqrt(n - 1) + 1))
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
        if is_tensor_file(out):
            return save_samples(y, out, per)
        return save_grid(interleave_rows([x, y], per), out, nrow=per)
    trainer, ckpt = load_trained(path, device, raw)
    _refuse(labels is not None and trainer.name != "cgan", "--label", "cgan")
    x = None
    if inputs is not None:
        if trainer.name not in ("cyclegan", "pix2pix", "ae", "dae"):
            raise ValueError(f"--input is for translation and autoencoder models; a "
                             f"{trainer.name} samples from noise")
        cfg = trainer.model.config
        if trainer.name in ("ae", "dae"):
            x = (load_images(inputs, MNIST_SIZE, 1) + 1) / 2
        else:
            ch = cfg.input_nc if direction == "AtoB" else cfg.output_nc
            s = image_size or trainer.image_size()
            x = load_images(inputs, s, ch)
        x = x[:n]
    with torch.no_grad():
        kw = {"direction": direction} if trainer.name in ("cyclegan", "pix2pix") else {}
        if trainer.name in ("cyclegan", "pix2pix", "ae", "dae") and is_tensor_file(out):
            kw["raw"] = True                  # the outputs alone, not input/output rows
        if labels is not None:
            kw["labels"] = labels
        images, nrow = trainer.sample(n, interpolate, g, inputs=x, **kw)
    return save_samples(images, out, nrow, trainer.write_picture)


def _refuse(given: bool, option: str, what: str) -> None:
    if given:
        raise ValueError(f"{option} applies to {what} only")


DEFAULT_EVAL_N = 10_000   # `gan-ext eval` without --n, where the model has no protocol count

# Below these sample counts a metric is biased (IS low, FID high): issue 13
# reports one DCGAN run at IS 6.3 from 200 samples and 7.0 from 2,000.
MIN_SAMPLES = {"inception_score": 2000, "mnist_fid": 2000}


def _sample_size_warnings(metrics: Dict[str, Any], n: int) -> None:
    short = [k for k, need in MIN_SAMPLES.items() if k in metrics and n < need]
    if short:
        need = max(MIN_SAMPLES[k] for k in short)
        metrics.setdefault("warnings", []).append(
            f"{' and '.join(short)} from only {n} samples are biased (IS low, FID high); use "
            f"--n {need} or more, and compare scores only at the same --n")


def evaluate_checkpoint(path: str, n: Optional[int] = None, device: str = "auto",
                        fid_backend: Optional[str] = None,
                        report: Optional[Callable[[Dict[str, Any]], Any]] = None,
                        options: Optional[Dict[str, Any]] = None
                        ) -> Tuple[Dict[str, Any], Optional[str]]:
    """The family's metrics, handed to ``report`` first, then appended to the
    run's metrics.jsonl. Returns (metrics, metrics.jsonl path, or None when
    the folder is not writable: a warning says so). ``n``: samples or test
    images; None: the model's protocol count (ring/grid 2,500, stacked-mnist
    26,000), else 10,000. ``options``: evaluation options of the run replaced
    for this evaluation (``{"iw_k": 1000, "iw_n": 10000}``; None values are
    not given), refused with a ValueError where the model does not use them."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    path = _checkpoint_path(path)
    raw = read_torch_file(path)
    if _is_official_generator(raw):
        raise ValueError(f"{path!r} is an official CycleGAN/pix2pix generator: its metrics need "
                         "the test images of its own dataset, which the file does not name; "
                         "translate them with 'gan-ext sample FILE --input DIR'")
    if _is_examples_dcgan(raw):
        check_applicable(TrainOptions(model="dcgan", **options), options)
        if fid_backend is not None:
            raise ValueError("--fid-backend scores a gan_ext run against its own images; a "
                             "pytorch/examples generator file names no dataset")
        n = DEFAULT_EVAL_N if n is None else n
        metrics = _evaluate_examples_dcgan(raw, n, device)
        _sample_size_warnings(metrics, n)
        if report is not None:
            report(metrics)
        return metrics, None
    trainer, ckpt = load_trained(path, device, raw)
    if options:
        trainer.opts = dataclasses.replace(trainer.opts, **options)   # validated there
        check_applicable(trainer.opts, options)
    if n is None:
        n = DEFAULTS[trainer.name].get("eval_n", DEFAULT_EVAL_N)
    if fid_backend is not None and trainer.name not in IMAGE_SCORE_MODELS:
        raise ValueError(f"--fid-backend applies to the generative models "
                         f"({', '.join(IMAGE_SCORE_MODELS)}), not {trainer.name}")
    trainer.fid_backend = fid_backend
    metrics = trainer.run_eval(n)
    if fid_backend is not None and "fid" not in metrics:   # MNIST runs: vs the test digits
        metrics.update(image_scores(trainer, n, fid_backend))
    _sample_size_warnings(metrics, int(metrics.get("n", n)))
    if report is not None:
        report(metrics)
    log = os.path.join(os.path.dirname(os.path.abspath(path)), "metrics.jsonl")
    try:
        append_jsonl(log, {"step": int(ckpt.get("step", 0)), "epoch": int(ckpt.get("epoch", 0)),
                           "eval": metrics, "source": "gan-ext eval"})
    except OSError as e:
        warnings.warn(f"the metrics were not appended to {log} ({e.strerror or e})")
        return metrics, None
    return metrics, log


def _evaluate_examples_dcgan(raw: dict, n: int, device: str) -> Dict[str, Any]:
    """A pytorch/examples DCGAN trained on MNIST (1 channel, 64x64): its samples
    are scaled to 28x28 for the MNIST metrics."""
    dev = resolve_device(device)
    G, cfg = examples_dcgan_generator(raw, dev)
    if cfg.nc != 1:
        raise ValueError(f"this DCGAN generator makes {cfg.nc}-channel images; the built-in "
                         "metrics are MNIST's (1 channel): sample it with 'gan-ext sample'")
    g = torch.Generator().manual_seed(EXAMPLES_DCGAN_EVAL_SEED)
    images = _examples_dcgan_samples(G, cfg.nz, n, g, dev)
    images = torch.nn.functional.interpolate(images, size=(MNIST_SIZE,) * 2, mode="area")
    return gan_metrics((images.clamp(-1, 1) + 1) / 2)

