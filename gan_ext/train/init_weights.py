"""``gan-ext train --init-g FILE`` / ``--init-d FILE``: a new run starts its
generator(s) or discriminator(s) from published or earlier weights (to
fine-tune) instead of the random init. The optimizers, schedules and RNGs
start fresh; ``--resume`` (which restores everything) is refused with them.

What FILE may be:

* a bare state_dict: pytorch/examples DCGAN ``netG_epoch_N.pth`` /
  ``netD_epoch_N.pth`` (keys ``main.0.weight`` ...; dcgan at ``--image-size
  64``), an official CycleGAN/pix2pix ``latest_net_G_A.pth`` /
  ``latest_net_D.pth`` (loaded as the official ``load_networks`` does: a
  ``module.`` prefix stripped, pre-0.4 InstanceNorm statistics dropped), or any
  file of tensors with the network's own keys;
* a gan_ext checkpoint (a run's ``checkpoint.pt``/``best.pt``, or the run
  folder): its G (or D), by the family's names (``G``, ``netG``, ``G_A`` and
  ``G_B``);
* for cyclegan, which starts two generators: ``A.pth,B.pth`` (G_A: A -> B,
  then G_B: B -> A; the two directions are published as separate
  ``latest_net_G.pth`` files), a folder of an official run holding
  ``latest_net_G_A.pth`` and ``latest_net_G_B.pth`` (``_D_A``/``_D_B`` for
  ``--init-d``), or a cyclegan checkpoint. pix2pix: a folder with
  ``latest_net_G.pth`` (``latest_net_D.pth``) works too.

Every load is strict: a file that does not fit is one line naming the option,
the first mismatching key and, where the file's network is recognised, the
architecture options that would build it.
"""
from __future__ import annotations

import os
import re
from typing import Callable, List, Tuple

import torch
from torch import Tensor, nn

from ..models.official import drop_untracked_instance_norm_stats, load_official_state_dict
from .checkpoint import FORMAT, CheckpointError, read_torch_file

__all__ = ["apply_init", "network_names", "arch_hint"]


def network_names(model: str, role: str) -> List[str]:
    """The attributes of ``model``'s module that hold its G (or D) networks."""
    if model == "cyclegan":
        return [f"{role}_A", f"{role}_B"]
    return [f"net{role}"] if model == "pix2pix" else [role]


def _flag(role: str) -> str:
    return f"--init-{role.lower()}"


def _state_dict(raw) -> dict:
    """A bare state_dict, ``module.`` (DataParallel) stripped; {} if ``raw`` is none."""
    if not (isinstance(raw, dict) and raw and all(isinstance(v, Tensor) for v in raw.values())):
        return {}
    keys = [str(k) for k in raw]
    strip = all(k.startswith("module.") for k in keys)
    return {(str(k)[len("module."):] if strip else str(k)): v for k, v in raw.items()}


def _official_files(folder: str, model: str, role: str) -> List[str]:
    suffixes = ["_A", "_B"] if model == "cyclegan" else [""]
    return [os.path.join(folder, f"latest_net_{role}{s}.pth") for s in suffixes]


def _sources(value: str, model: str, role: str, want: int) -> List[Tuple[str, dict]]:
    """[(label, state_dict)] for the ``want`` networks, from ``value``."""
    flag = _flag(role)
    paths = [p.strip() for p in value.split(",")]
    if len(paths) == 1 and os.path.isdir(paths[0]):
        folder = paths[0]
        if os.path.isfile(os.path.join(folder, "checkpoint.pt")):
            paths = [os.path.join(folder, "checkpoint.pt")]
        else:
            paths = _official_files(folder, model, role)
            missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
            if missing:
                raise ValueError(f"{flag} {folder}: the folder has neither a gan_ext "
                                 f"checkpoint.pt nor {' and '.join(missing)}")
    out: List[Tuple[str, dict]] = []
    for path in paths:
        try:
            raw = read_torch_file(path)
        except CheckpointError as e:
            raise ValueError(f"{flag}: {e}") from None
        if isinstance(raw, dict) and raw.get("format") == FORMAT:
            src = raw.get("model_name")
            models = raw.get("models") if isinstance(raw.get("models"), dict) else {}
            for name in network_names(str(src), role):
                sd = {k[len(name) + 1:]: v for k, v in models.items()
                      if isinstance(k, str) and k.startswith(name + ".")}
                if not sd:
                    raise ValueError(f"{flag} {path}: the {src} checkpoint holds no {name} "
                                     "network")
                out.append((f"{path} ({src} {name})", sd))
            continue
        sd = _state_dict(raw)
        if not sd:
            raise ValueError(f"{flag} {path}: neither a state_dict (a dict of tensors) nor a "
                             "gan_ext checkpoint")
        out.append((path, sd))
    if len(out) != want:
        names = " and ".join(network_names(model, role))
        if model == "cyclegan":
            how = (f"two files ({flag} A.pth,B.pth), a folder with "
                   f"{' and '.join(os.path.basename(p) for p in _official_files('', model, role))}"
                   ", or a cyclegan run's checkpoint")
        else:
            how = "one file or checkpoint"
        raise ValueError(f"{flag} {value}: {model} starts {names} ({want} network"
                         f"{'s' if want > 1 else ''}), the option gave {len(out)}: give {how}")
    return out


def _first_mismatch(net: nn.Module, sd: dict) -> str:
    """'' when ``sd`` fits ``net`` strictly, else the first mismatching key and why."""
    target = net.state_dict()
    for k, v in target.items():
        if k not in sd:
            if k.endswith("num_batches_tracked"):   # absent from old files; filled in on load
                continue
            return f"{k} is missing from the file"
        if tuple(sd[k].shape) != tuple(v.shape):
            return (f"{k} has shape {tuple(sd[k].shape)} in the file, {tuple(v.shape)} in the "
                    "model")
    for k in sd:
        if k not in target:
            return f"{k} is in the file but not in the model"
    return ""


def _load(net: nn.Module, sd: dict, role: str, label: str, what: str) -> None:
    sd = dict(sd)
    drop_untracked_instance_norm_stats(net, sd, "")
    why = _first_mismatch(net, sd)
    if not why:
        try:
            load_official_state_dict(net, sd)
            return
        except (RuntimeError, ValueError) as e:
            why = str(e).strip().splitlines()[0][:200]
    hint = arch_hint(sd, role)
    raise ValueError(f"{_flag(role)} {label} does not fit the {what}: first mismatching key "
                     f"{why}" + (f" (the file's network matches {hint})" if hint else ""))


def apply_init(trainer, log: Callable[[str], None] = print) -> None:
    """Loads ``--init-g``/``--init-d`` into a freshly built trainer's model."""
    o, model = trainer.opts, trainer.model
    for role, value in (("G", o.init_g), ("D", o.init_d)):
        if value is None:
            continue
        names = network_names(o.model, role)
        sources = _sources(value, o.model, role, len(names))
        for name, (label, sd) in zip(names, sources):
            _load(getattr(model, name), sd, role, label, f"{o.model} {name}")
        if role == "G" and getattr(model, "G_ema", None) is not None:   # --ema starts at G
            model.G_ema.load_state_dict(model.G.state_dict())
        log(f"note: {_flag(role)}: " + ", ".join(f"{n} from {label}"
                                                for n, (label, _) in zip(names, sources)))


# ------------------------------------------------------------------ hints
_DCGAN_SIZES = {(7, 2): 28, (4, 3): 32, (4, 4): 64}   # (first/last side, stages) -> pixels


def _weights(sd: dict, prefix: str) -> List[Tuple[int, Tensor]]:
    """(index, weight) of ``prefix<i>.weight`` 4-D entries, by index."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.weight$")
    found = [(int(m.group(1)), v) for k, v in sd.items() for m in [pat.match(k)] if m]
    return sorted((i, v) for i, v in found if v.dim() == 4)


def _norm(sd: dict, conv_bias_key: str) -> str:
    if any(k.endswith("running_mean") for k in sd):
        return "batch"
    return "instance" if conv_bias_key in sd else "none"


def arch_hint(sd: dict, role: str) -> str:
    """The architecture options that build the network of ``sd`` (a
    recognised family: the DCGAN, the official ResNet/U-Net generators and
    PatchGAN/pixel discriminators, the MLP GAN's G), else ''."""
    try:
        return _hint(sd, role)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        return ""


def _hint(sd: dict, role: str) -> str:
    blocks = {m.group(1) for k in sd for m in [re.match(r"model\.(\d+)\.conv_block\.", k)] if m}
    if blocks:
        n, ngf = len(blocks), sd["model.1.weight"].shape[0]
        net = f"--netG resnet_{n}blocks" if n in (6, 9) else f"--n-blocks {n}"
        return f"{net} --ngf {ngf} --norm {_norm(sd, 'model.1.bias')}"
    if "model.model.0.weight" in sd:
        depth = max(k.count("model.1.") for k in sd) + 1
        net = (f"--netG unet_{2 ** depth}" if depth in (7, 8)
               else f"pix2pix's default U-Net at --image-size {2 ** depth}")
        return (f"{net} --ngf {sd['model.model.0.weight'].shape[0]} "
                f"--norm {_norm(sd, 'model.model.0.bias')}")
    if "net.0.weight" in sd:
        return f"--netD pixel --ndf {sd['net.0.weight'].shape[0]} --norm {_norm(sd, 'net.2.bias')}"
    convs = _weights(sd, "model.")
    if convs and convs[0][0] == 0:
        n, ndf = len(convs) - 2, convs[0][1].shape[0]
        net = "--netD basic" if n == 3 else f"--netD n_layers --n-layers-d {n}"
        return f"{net} --ndf {ndf} --norm {_norm(sd, 'model.2.bias')}"
    if not all(k.startswith("main.") for k in sd):
        return ""
    convs = _weights(sd, "main.")
    if not convs:   # the MLP GAN
        w = sd["main.0.weight"]
        return f"--nz {w.shape[1]}" if role == "G" else ""
    first, last = convs[0][1], convs[-1][1]
    if role == "G":   # ConvTranspose weights: (in, out, k, k)
        size = _DCGAN_SIZES[(first.shape[2], len(convs) - 1)]
        return f"--nz {first.shape[0]} --ngf {last.shape[0]} --image-size {size}"
    size = _DCGAN_SIZES[(last.shape[2], len(convs) - 1)]
    return f"--ndf {first.shape[0]} --image-size {size}"
