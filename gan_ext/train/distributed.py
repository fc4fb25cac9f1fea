"""Training on several processes (``torchrun`` or ``gan-ext train
--nproc-per-node N``): the process group, what each rank trains on, the
gradient and loss averages, and what a checkpoint keeps of every rank.

The design, and why:

* ``--batch-size`` is the global batch. Every rank's loader yields the same
  global batch (same seed, same position) and each rank keeps its contiguous
  share, so the loader state is the same on every rank and rank 0's
  checkpoint resumes all of them.
* The latents (z, and cgan's fake labels) of the global batch are drawn on
  every rank from one shared generator, a copy of the global RNG as a single
  process would have it; each rank keeps its share. With ``--sync-bn`` a run
  on N processes therefore computes what one process computes on the global
  batch. Everything else random (dropout) draws from the global RNG, seeded
  per rank so ranks do not repeat each other's masks.
* Gradients are averaged by one all-reduce per optimizer step, in a step
  pre-hook (summed where the loss is a batch sum, as the VAE's), rather
  than by DDP: a GAN step runs G with grad for the D step
  but backpropagates only into D, then runs D frozen inside G's backward.
  DDP's reducer expects every forward with grad to be followed by a backward
  into all its parameters, which needs ``find_unused_parameters`` and
  per-network ``no_sync`` bookkeeping; averaging ``p.grad`` of the network
  about to be stepped is exact (each rank's loss is the mean over an equal
  share) and needs neither.
"""
from __future__ import annotations

import functools
import hashlib
import os
import signal
import threading
from datetime import timedelta
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Context", "PeerFailed", "from_env", "world_size_from_env",
           "in_collective", "peer_failed", "rank_seed", "Quiet"]

# Options whose effect depends on the whole batch in one place (a statistic
# over samples, a look-ahead on D's optimizer): on N processes they would
# compute something else than on one, so they are refused. (--pack is not
# among them: a pack is M consecutive samples, and a rank's share of the
# global batch is whole packs.)
_SINGLE_PROCESS_OPTIONS = {"minibatch_stddev": "--minibatch-stddev",
                           "minibatch_discrimination": "--minibatch-discrimination",
                           "feature_matching": "--feature-matching", "unrolled": "--unrolled"}
# Test hook: GAN_EXT_TEST_FAIL=RANK:STEP makes that rank raise at that step.
FAIL_ENV = "GAN_EXT_TEST_FAIL"
LAUNCH_HINT = "torchrun / --nproc-per-node"


class PeerFailed(RuntimeError):
    """A collective failed: another rank died or was stopped."""


class Quiet(SystemExit):
    """A refusal every rank reaches alike: rank 0 says it, the others exit
    with the same code silently, so the user reads one line."""


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a whole number "
                         "(set by torchrun)") from None


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps ``seed`` (so its stream is the single process's); other
    ranks get a hash of (seed, rank)."""
    if rank == 0:
        return seed
    digest = hashlib.blake2b(f"gan_ext.rank:{seed}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class Context:
    """This process's place in the run: ``rank``, ``world`` (1: not
    distributed) and the device it trains on."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0,
                 device: Optional[torch.device] = None) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.device = device if device is not None else torch.device("cpu")
        self.latents: Optional[torch.Generator] = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def refuse(self, message: str, code: int = 2):
        """Raises the same refusal on every rank: rank 0 says it."""
        if self.main:
            raise ValueError(message)
        raise Quiet(code)

    # ------------------------------------------------------------ checks
    def check_options(self, opts, batch_size: int) -> None:
        if not self.active:
            if opts.sync_bn:
                raise ValueError("--sync-bn needs several processes: run with --nproc-per-node N "
                                 "or under torchrun --nproc-per-node N (N >= 2)")
            return
        for name, flag in _SINGLE_PROCESS_OPTIONS.items():
            if getattr(opts, name):
                self.refuse(f"{flag} is not supported on several processes ({LAUNCH_HINT}): it "
                            "needs the whole batch or D's optimizer in one process")
        if batch_size % self.world:
            self.refuse(f"--batch-size {batch_size} is the global batch and must be divisible by "
                        f"the {self.world} processes (e.g. {batch_size // self.world * self.world or self.world})")

    def check_resume(self, ckpt: dict, run_dir: str) -> None:
        saved = int(ckpt.get("distributed", {}).get("world_size", 1))
        if saved != self.world:
            self.refuse(f"--resume: the run in {run_dir} was trained on {saved} process(es) and "
                        f"this is {self.world}; resume it with the same number "
                        f"(--nproc-per-node {saved}) so its data order and random streams "
                        "continue exactly")

    # ------------------------------------------------------------ setup
    def share_latents(self, device: torch.device) -> None:
        """The shared generator: the global RNG's state now, which every
        rank has alike (same seed, same draws so far)."""
        if not self.active:
            return
        self.latents = torch.Generator(device=device)
        state = (torch.cuda.get_rng_state(device) if device.type == "cuda"
                 else torch.get_rng_state())
        self.latents.set_state(state)

    def broadcast_(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if self.active:
            with torch.no_grad():
                for t in module.state_dict().values():
                    self._call(dist.broadcast, t, 0)

    def average_gradients(self, optimizer: torch.optim.Optimizer, reduction: str = "mean") -> None:
        """Before each ``optimizer.step()``: every rank's gradients combined
        in one all-reduce of all of them: their mean (``"mean"``: each
        rank's loss is a mean over an equal share, so the mean is the global
        batch's gradient) or their sum (``"sum"``: the loss is a batch sum)."""
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if not self.active:
            return

        def hook(opt, args, kwargs):
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if not grads:
                return
            # float32 at least (bf16/fp16 gradients summed in float32), float64 kept.
            dtype = functools.reduce(torch.promote_types, (g.dtype for g in grads), torch.float32)
            flat = torch.cat([g.reshape(-1).to(dtype) for g in grads])
            self._call(dist.all_reduce, flat)
            if reduction == "mean":
                flat /= self.world
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
        optimizer.register_step_pre_hook(hook)

    def shared_normal(self, shape: Tuple[int, ...], device: torch.device,
                      dtype=torch.float32) -> Tensor:
        """This rank's share (rows ``rank * n .. rank * n + n - 1``) of one
        N(0, 1) draw of the global batch ``(n * world, *shape[1:])`` from
        the shared generator: what one process draws for the global batch."""
        n = shape[0]
        whole = torch.randn((n * self.world, *shape[1:]), device=device, dtype=dtype,
                            generator=self.latents)
        return whole[self.rank * n:(self.rank + 1) * n]

    def sampler_kwargs(self, nz: int, num_classes: Optional[int]) -> Dict[str, Callable]:
        """``sample_z`` (and ``sample_labels``) for the GAN train_step: the
        global batch's draw from the shared generator, this rank's share."""
        if not self.active:
            return {}
        gen, rank, world = self.latents, self.rank, self.world

        def sample_z(n: int, device: torch.device, dtype=torch.float32) -> Tensor:
            return self.shared_normal((n, nz), device, dtype)

        kw = {"sample_z": sample_z}
        if num_classes is not None:
            kw["sample_labels"] = lambda n, device: torch.randint(
                num_classes, (n * world,), device=device, generator=gen)[rank * n:(rank + 1) * n]
        return kw

    # ------------------------------------------------------------ per step
    def reduce_stats(self, stats: Dict[str, Tensor], stop: bool,
                     summed: Tuple[str, ...] = ()) -> Tuple[Dict[str, Tensor], bool]:
        """The step's losses over ranks: averaged (the global batch's means,
        as the shares are equal), or summed for the keys in ``summed`` (batch
        sums); and whether any rank was asked to stop: all ranks stop after
        the same step."""
        if not self.active:
            return stats, stop
        keys = list(stats)
        packed = torch.stack([stats[k].detach().float() for k in keys]
                             + [torch.ones_like(stats[keys[0]], dtype=torch.float32)
                                * float(stop)])
        self._call(dist.all_reduce, packed)
        return ({k: packed[i] if k in summed else packed[i] / self.world
                 for i, k in enumerate(keys)}, bool(packed[-1] > 0))

    def map_rows(self, fn: Callable[[Tensor], Tensor], n: int) -> Tensor:
        """``fn(torch.arange(n))`` computed by all ranks together: each runs
        ``fn`` on its contiguous share of the indices, and every rank gets
        the rows of all, in order (so an evaluation's samples are generated
        once, split across the ranks). Every rank must call it alike. With
        fewer rows than ranks each computes them all."""
        idx = torch.arange(n)
        per = -(-n // self.world) if self.active else n
        if not self.active or per * (self.world - 1) >= n:
            return fn(idx)
        mine = fn(idx[self.rank * per:(self.rank + 1) * per]).contiguous()
        pad = mine.new_zeros((per, *mine.shape[1:]))
        pad[:len(mine)] = mine
        pad = pad.to(self.device)   # NCCL gathers CUDA tensors
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        self._call(dist.all_gather, parts, pad)
        return torch.cat([p[:min(per, n - r * per)] for r, p in enumerate(parts)]).to(mine.device)

    def gather_state(self, state: dict) -> Optional[List[dict]]:
        """Every rank's own state (its RNG, a CycleGAN's image pools), on
        rank 0 (None elsewhere)."""
        out = [None] * self.world if self.main else None
        self._call(dist.gather_object, state, out, 0)
        return out

    def check_sync_bn(self, model: torch.nn.Module, name: str, device: torch.device) -> None:
        """After ``convert_sync_batchnorm``: --sync-bn must have something to
        sync, and nothing it cannot run (torch's ``SyncBatchNorm``, which the
        1-D/3-D batch norms become, runs on CUDA only)."""
        from ..nn import SyncBatchNormAct2d
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            self.refuse(f"--sync-bn does not apply: the {name} networks have no batch norm "
                        "(nothing to sync)")
        torch_sync = [m for m in norms if not isinstance(m, SyncBatchNormAct2d)]
        if torch_sync and device.type != "cuda":
            self.refuse(f"--sync-bn: the {name} networks' 1-D batch norms need torch's "
                        "SyncBatchNorm, which runs on CUDA only; on the CPU leave --sync-bn out")

    def agree_on_error(self, error: Optional[BaseException]) -> None:
        """Rank 0's refusal (None: none) reaches every rank: rank 0 raises
        it, the others exit quietly."""
        box = [None if error is None else str(error)]
        self._call(dist.broadcast_object_list, box, 0)
        if box[0] is not None:
            if error is not None:
                raise error
            raise Quiet(2)

    def barrier(self) -> None:
        if self.active:
            self._call(dist.barrier)

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, kind, error, tb) -> None:
        """Every rank destroys the process group before it exits: left to
        interpreter shutdown, gloo's worker threads can abort a rank
        (SIGABRT, "terminate called without an active exception") after a
        run that succeeded. After a success the ranks first meet at a
        barrier, so none tears its connections down while a peer still
        talks to it; after an error this rank's peers, if still waiting on
        it, fail at once (PeerFailed) rather than at the timeout. After a
        PeerFailed the group is left to the launcher: destroying it could
        wait on the dead peer."""
        if not self.active or not dist.is_initialized():
            return
        if kind is not None and issubclass(kind, PeerFailed):
            return
        if kind is None:
            self.barrier()
        dist.destroy_process_group()

    def maybe_fail(self, step: int) -> None:
        spec = os.environ.get(FAIL_ENV)
        if spec and spec == f"{self.rank}:{step}":
            raise RuntimeError(f"rank {self.rank}: test failure at step {step} ({FAIL_ENV})")

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except RuntimeError as e:
            raise peer_failed(e) from e


def in_collective(e: BaseException) -> bool:
    """Whether ``e`` was raised inside torch.distributed (a collective whose
    peer died: gloo says so with a plain RuntimeError), not by our own code."""
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("torch.distributed"):
            return True
        tb = tb.tb_next
    return False


def peer_failed(e: BaseException) -> PeerFailed:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    first = first.split("] ", 1)[-1][:120]   # gloo prefixes its source location
    return PeerFailed(f"another process of the run failed or was stopped ({first})")


BACKEND_ENV = "GAN_EXT_DIST_BACKEND"   # gloo | nccl: the process group's backend
SHARE_GPU_ENV = "GAN_EXT_SHARE_GPU"    # 1: ranks beyond the GPUs share them (checks, tests)


def from_env(device: torch.device) -> Tuple[Context, torch.device]:
    """The process group from torchrun's environment (gloo on CPU, nccl on
    CUDA, each rank on cuda:LOCAL_RANK) and the device this rank trains on;
    outside torchrun, or with one process, a Context of one.
    ``GAN_EXT_DIST_BACKEND=gloo`` runs CUDA tensors over gloo (where NCCL is
    missing); ``GAN_EXT_SHARE_GPU=1`` lets more ranks than GPUs share them
    (rank on cuda:LOCAL_RANK % GPUs: for checks on one GPU, not for speed)."""
    world = world_size_from_env()
    if world <= 1:
        return Context(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.type == "cuda"
    backend = os.environ.get(BACKEND_ENV) or ("nccl" if cuda else "gloo")
    refuse = Context(rank, world).refuse   # the same on every rank: rank 0 says it
    if backend not in ("gloo", "nccl"):
        refuse(f"{BACKEND_ENV}={backend!r}: choose gloo or nccl")
    if backend == "nccl" and not cuda:
        refuse(f"{BACKEND_ENV}=nccl needs CUDA (--device cuda); the CPU uses gloo")
    if cuda:
        count = torch.cuda.device_count()
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        if backend == "nccl" and 0 < count < per_node and os.environ.get(SHARE_GPU_ENV) == "1":
            # Seen on one H200 (session 26): NCCL fails with "invalid usage".
            refuse(f"NCCL cannot run two ranks on one GPU ({per_node} processes, {count} GPU"
                   f"{'s' if count > 1 else ''}); with {SHARE_GPU_ENV}=1 set {BACKEND_ENV}=gloo")
        if local >= count:
            if os.environ.get(SHARE_GPU_ENV) != "1" or count == 0:
                raise ValueError(f"LOCAL_RANK {local} has no CUDA device (this node has "
                                 f"{count}); start at most that many processes per node, or "
                                 "use --device cpu")
            local_device = local % count
        else:
            local_device = local
        device = torch.device("cuda", local_device)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=10))
    _outlive_the_launchers_signals()
    return Context(rank, world, local, device), device


def _outlive_the_launchers_signals() -> None:
    """When a rank fails, torchrun SIGTERMs the others at once, racing their
    own discovery of the failure: killed by it, rank 0 would end without its
    one line (or a Ctrl-C mid-save without its checkpoint). So a rank takes
    SIGINT/SIGTERM as a request: in training the loop's StopFlag stops after
    the step, elsewhere the rank finishes what it does; the launcher SIGKILLs
    a rank that has not ended 30 s after its signal."""
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM"):
            signal.signal(getattr(signal, name), lambda signum, frame: None)
