"""How the shipped feature networks were trained (see ``classifier.py``), as
a library and as the script that retrains them::

    python -m gan_ext.metrics.retrain --train --out gan_ext/metrics/mnist_classifier.pt
    python -m gan_ext.metrics.retrain --train-domain --out gan_ext/metrics/domain_classifier.pt

Both: fixed seed, Adam with a one-cycle learning rate, random shifts of up to
2 pixels as the only augmentation, CPU with 2 threads by default. The test
split is used once, after training, to report the accuracy written to the
JSON next to the weights (no model selection on it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import load_mnist, mnist_pair
from ._checks import check_int, run_batched
from .classifier import (CLASSIFIER_FILE, DOMAIN_CLASSIFIER_FILE, DomainClassifier,
                         MNISTClassifier, weights_sha256)

__all__ = ["random_shift", "train_mnist_classifier", "train_domain_classifier", "save_weights",
           "mnist_test_accuracy", "domain_test_accuracies", "TEST_PAIR_SEED_OFFSET", "main"]

# The domain classifier's test pair is drawn with seed + this, so that its
# styles differ from the training pair's (drawn with seed).
TEST_PAIR_SEED_OFFSET = 1

_HERE = os.path.dirname(os.path.abspath(__file__))


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator,
                 mode: str = "constant") -> Tensor:
    """Each image of x (B, C, H, W) shifted by its own random (dy, dx) in
    [-max_shift, max_shift]^2; the uncovered border is zero (``mode="constant"``)
    or repeats the edge (``"replicate"``, for textured backgrounds)."""
    B, C, H, W = x.shape
    p = max_shift
    xp = F.pad(x, (p, p, p, p), mode=mode)                       # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * p + 1, (B,), generator=generator)
    dx = torch.randint(0, 2 * p + 1, (B,), generator=generator)
    rows = dy[:, None] + torch.arange(H)                          # (B, H)
    cols = dx[:, None] + torch.arange(W)                          # (B, W)
    b = torch.arange(B)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _mnist_unit(split: str, data_dir: Optional[str]) -> Tuple[Tensor, Tensor]:
    images, labels = load_mnist(split, data_dir=data_dir)  # uint8 (N, 28, 28), int64 (N,)
    return images.unsqueeze(1).float().div_(255.0), labels.long()


def _fit(model: nn.Module, n: int, epochs: int, batch_size: int, lr: float, seed: int,
         step_loss: Callable[[Tensor, torch.Generator], Tensor], log: Callable[[str], None]) -> None:
    """Adam + one-cycle over ``epochs`` passes of a shuffled index set of size n;
    ``step_loss(indices, generator)`` returns the batch loss."""
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = n // batch_size
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                                steps_per_epoch=steps_per_epoch)
    model.train()
    for epoch in range(epochs):
        t0, total = time.time(), 0.0
        perm = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            loss = step_loss(perm[i * batch_size:(i + 1) * batch_size], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        log(f"epoch {epoch + 1}/{epochs}: loss {total / steps_per_epoch:.4f} "
            f"({time.time() - t0:.0f} s)")
    model.eval()


def train_mnist_classifier(epochs: int = 5, seed: int = 0, batch_size: int = 128,
                           lr: float = 3e-3, data_dir: Optional[str] = None,
                           log: Callable[[str], None] = print) -> Tuple[MNISTClassifier, dict]:
    """Train :class:`MNISTClassifier` on the 60k MNIST training images; returns
    the model (eval mode) and a dict with its test accuracy."""
    torch.manual_seed(seed)
    model = MNISTClassifier()
    x, y = _mnist_unit("train", data_dir)  # (60000, 1, 28, 28), (60000,)

    def step_loss(idx: Tensor, gen: torch.Generator) -> Tensor:
        xb = random_shift(x[idx], 2, gen)
        return F.cross_entropy(model(xb), y[idx])

    t0 = time.time()
    _fit(model, x.shape[0], epochs, batch_size, lr, seed, step_loss, log)
    seconds = time.time() - t0
    acc, n_test = mnist_test_accuracy(model, data_dir)
    log(f"MNIST test accuracy {acc:.4f}")
    return model, dict(test_accuracy=round(acc, 6), epochs=epochs, seed=seed,
                       batch_size=batch_size, lr=lr, train_images=int(x.shape[0]),
                       test_images=n_test, train_seconds=round(seconds, 1))


def mnist_test_accuracy(model: MNISTClassifier, data_dir: Optional[str] = None
                        ) -> Tuple[float, int]:
    """(accuracy, images) of ``model`` on the 10k MNIST test images: the
    ``test_accuracy`` of mnist_classifier.json."""
    xt, yt = _mnist_unit("test", data_dir)
    pred = run_batched(lambda b: model(b).argmax(1), xt, 500)
    return (pred.long() == yt).double().mean().item(), int(xt.shape[0])


def train_domain_classifier(epochs: int = 3, seed: int = 0, n: int = 10000, batch_size: int = 128,
                            lr: float = 3e-3, data_dir: Optional[str] = None,
                            log: Callable[[str], None] = print) -> Tuple[DomainClassifier, dict]:
    """Train :class:`DomainClassifier` on ``gan_ext.data.mnist_pair("train", n)``:
    A images labelled 0, B images labelled 1, plus the digit of each; returns
    the model (eval mode) and a dict with its accuracies on the test pair."""
    torch.manual_seed(seed)
    model = DomainClassifier()
    pair = mnist_pair("train", n=n, data_dir=data_dir, seed=seed)
    x = torch.cat([pair.A, pair.B]).float()                          # (NA + NB, 3, 32, 32)
    domain = torch.cat([torch.zeros(len(pair.A)), torch.ones(len(pair.B))])
    digit = torch.cat([pair.labels_A, pair.labels_B]).long()

    def step_loss(idx: Tensor, gen: torch.Generator) -> Tensor:
        xb = random_shift(x[idx], 2, gen, mode="replicate")
        d_logit, c_logit = model(xb)
        return (F.binary_cross_entropy_with_logits(d_logit, domain[idx])
                + F.cross_entropy(c_logit, digit[idx]))

    t0 = time.time()
    _fit(model, x.shape[0], epochs, batch_size, lr, seed, step_loss, log)
    seconds = time.time() - t0
    stats = domain_test_accuracies(model, seed, data_dir)
    log(f"test: {stats}")
    return model, dict(stats, epochs=epochs, seed=seed, n=n, batch_size=batch_size, lr=lr,
                       train_images=int(x.shape[0]), train_seconds=round(seconds, 1))


def domain_test_accuracies(model: DomainClassifier, seed: int = 0,
                           data_dir: Optional[str] = None) -> dict:
    """Domain and digit accuracy of ``model`` on each style of the test pair
    of a run seeded ``seed``: the figures of domain_classifier.json."""
    test = mnist_pair("test", n=2000, data_dir=data_dir, seed=seed + TEST_PAIR_SEED_OFFSET)
    stats = {}
    for name, imgs, labels, target in (("A", test.A, test.labels_A, 0.0),
                                       ("B", test.B, test.labels_B, 1.0)):
        out = run_batched(_domain_and_digit(model), imgs.float(), 500)  # (N, 11)
        stats[f"domain_accuracy_{name}"] = round(((out[:, 0] > 0).float() == target)
                                                 .double().mean().item(), 6)
        stats[f"digit_accuracy_{name}"] = round((out[:, 1:].argmax(1) == labels.long())
                                                .double().mean().item(), 6)
    return stats


def _domain_and_digit(model: DomainClassifier) -> Callable[[Tensor], Tensor]:
    def fn(x: Tensor) -> Tensor:
        d, c = model(x)
        return torch.cat([d[:, None], c], 1)  # (N, 1 + 10)
    return fn


def save_weights(model: nn.Module, out: str, info: dict, command: str) -> dict:
    """Write the fp32 state_dict to ``out`` (atomically) and ``out`` with a
    .json suffix holding ``info``, the command and the file's sha256."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, out)
    with open(out, "rb") as f:
        data = f.read()
    meta = dict(file=os.path.basename(out), sha256=weights_sha256(data), bytes=len(data),
                parameters=sum(p.numel() for p in model.parameters()), command=command,
                torch=torch.__version__, **info)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gan_ext.metrics.retrain",
                                description="Train the feature networks shipped with gan_ext.metrics.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--train", action="store_true", help="the MNIST digit classifier")
    what.add_argument("--train-domain", action="store_true",
                      help="the A/B style classifier of the unpaired MNIST task")
    p.add_argument("--out", default=None, help="weights file (default: the shipped one)")
    p.add_argument("--epochs", type=int, default=None, help="default 5 (--train), 3 (--train-domain)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=10000, help="--train-domain: mnist_pair size")
    p.add_argument("--data-dir", default=None, help="MNIST IDX files (default: gan_ext.data's search)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--min-accuracy", type=float, default=0.99,
                   help="--train: refuse to write weights below this test accuracy")
    args = p.parse_args(argv)
    check_int("--threads", args.threads)
    torch.set_num_threads(args.threads)
    filename = CLASSIFIER_FILE if args.train else DOMAIN_CLASSIFIER_FILE
    out = args.out or os.path.join(_HERE, filename)
    log = lambda s: print(s, flush=True)  # noqa: E731
    flag = "--train" if args.train else "--train-domain"
    command = f"python -m gan_ext.metrics.retrain {flag} --out {os.path.relpath(out)}"
    for opt, value, default in (("--epochs", args.epochs, None), ("--seed", args.seed, 0),
                                ("--n", args.n if args.train_domain else 10000, 10000)):
        if value != default:
            command += f" {opt} {value}"
    if args.train:
        model, info = train_mnist_classifier(epochs=args.epochs or 5, seed=args.seed,
                                             data_dir=args.data_dir, log=log)
        if info["test_accuracy"] < args.min_accuracy:
            print(f"test accuracy {info['test_accuracy']:.4f} < --min-accuracy "
                  f"{args.min_accuracy}; weights not written", file=sys.stderr)
            return 1
    else:
        model, info = train_domain_classifier(epochs=args.epochs or 3, seed=args.seed, n=args.n,
                                              data_dir=args.data_dir, log=log)
    meta = save_weights(model, out, info, command)
    log(f"wrote {out} ({meta['bytes']} bytes, sha256 {meta['sha256']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
