"""Data-parallel training through ``torch.distributed`` (DDP), launched by ``torchrun``.

``torchrun --nproc_per_node=N -m resnet_repro train ...`` starts N processes with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:func:`setup` reads them and joins the process group: NCCL when training on CUDA (one
GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU. Without those variables
everything here degrades to a single process and no collective is ever called.

Rules the ImageNet loop (:mod:`resnet_repro.train.imagenet_loop`) builds on:

* The global batch (paper Sec. 3.4: 256) is split evenly: each of the ``W`` processes
  takes ``batch / W`` images of every iteration (:func:`per_rank_batch` refuses a batch
  that ``W`` does not divide). :class:`ShardedBatchSampler` draws each epoch's order
  with torch's :class:`~torch.utils.data.DistributedSampler` seeded by ``(seed, epoch)``,
  so the union of the ranks' shares of iteration ``k`` is the very set of images a
  single process takes at iteration ``k``; only the order inside the batch differs.
* Only rank 0 touches the run directory (lock, logs, checkpoints); it reads and
  broadcasts what the other ranks need (:func:`run_on_main`, :func:`broadcast_object`),
  so multi-node runs do not need a shared file system for the run directory.
* Evaluation shards the images without padding (:func:`eval_shard`): rank ``r`` takes
  images ``r, r+W, r+2W, ...`` and the counts are summed, so every image is counted
  exactly once (torch's ``DistributedSampler`` would pad with duplicates).
* Batch normalisation: under plain DDP each process normalises over its own
  ``batch / W`` images (the paper's setting with 8 GPUs of 32 images). ``sync_bn``
  normalises over the whole global batch instead: torch's
  :class:`~torch.nn.SyncBatchNorm` on CUDA; on the CPU, where torch's SyncBatchNorm
  refuses to run, :class:`CpuSyncBatchNorm` does the same with gloo all-reduces.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from resnet_repro.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly one-process) job.

    Attributes:
        rank: global rank, 0 .. world_size - 1.
        world_size: number of processes.
        local_rank: rank on this node (the GPU index under torchrun).
        backend: ``"nccl"``, ``"gloo"`` or None (single process, no process group).
        owns_group: True if :func:`setup` created the process group (and
            :func:`teardown` should destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when collectives run (more than one process)."""
        return self.world_size > 1 and self.backend is not None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer; launch with torchrun") from None


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def env_rank() -> int:
    """``RANK`` from the environment (0 when not launched by torchrun)."""
    return _env_int("RANK", 0)


def setup(device: str) -> tuple[DistContext, str]:
    """Join the process group torchrun describes, or stay a single process.

    Args:
        device: the run's device, ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.

    Returns:
        ``(context, device of this process)``: under torchrun with CUDA each process
        takes ``cuda:LOCAL_RANK``; the backend is NCCL on CUDA and gloo on the CPU.

    Raises:
        UserError: malformed torchrun variables, or more processes on a node than
            visible GPUs.
    """
    world, rank, local = env_world_size(), env_rank(), _env_int("LOCAL_RANK", 0)
    if world <= 1:
        return DistContext(), device
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} is outside 0..{world - 1}; launch with torchrun")
    on_cuda = device.startswith("cuda")
    if on_cuda:
        n = torch.cuda.device_count()
        if local >= n:
            raise UserError(
                f"LOCAL_RANK={local} but only {n} GPUs are visible; use --nproc_per_node={n} or fewer"
            )
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    backend = "nccl" if on_cuda else "gloo"
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local, dist.get_backend(), owns), device


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """The images each process takes per iteration.

    Raises:
        UserError: if ``world_size`` does not divide ``global_batch``.
    """
    if global_batch % world_size:
        raise UserError(
            f"--batch-size {global_batch} is not divisible by the {world_size} processes; "
            f"choose a multiple of {world_size} (the batch is the global batch over all processes)"
        )
    return global_batch // world_size


def broadcast_object(obj: T, ctx: DistContext) -> T:
    """``obj`` of rank 0 on every rank (any picklable value; tensors travel on the CPU)."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_on_main(ctx: DistContext, fn: Callable[[], T]) -> T:
    """Call ``fn`` on rank 0 only and return its result on every rank.

    A :class:`UserError` raised by ``fn`` is raised on every rank with the same message,
    so all processes stop together with the one-line error.
    """
    result: Any = None
    error: str | None = None
    crash: BaseException | None = None
    if ctx.is_main:
        try:
            result = fn()
        except UserError as exc:
            error = str(exc)
        except BaseException as exc:  # tell the other ranks, then re-raise here
            crash = exc
            error = f"rank 0 failed ({type(exc).__name__}: {exc})"
    if ctx.distributed:
        result, error = broadcast_object((result, error), ctx)
    if crash is not None:
        raise crash
    if error is not None:
        raise UserError(error)
    return result


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over all ranks in place (a no-op for one process); returns ``t``."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, ctx: DistContext, device: torch.device | str = "cpu") -> bool:
    """True on every rank if ``flag`` is True on any rank (e.g. a SIGTERM seen by one)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    all_reduce_sum(t, ctx)
    return bool(t.item() > 0)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if ctx.distributed:
        dist.barrier()


def eval_shard(n: int, ctx: DistContext) -> list[int]:
    """Indices ``rank, rank + W, ...`` of ``range(n)``: the ranks' shards partition the
    images, no padding, so summed counts see each image exactly once."""
    return list(range(ctx.rank, n, ctx.world_size))


class ShardedBatchSampler:
    """This rank's share of every iteration's global mini-batch, for iterations
    ``start .. end - 1``; a batch sampler for :class:`torch.utils.data.DataLoader`.

    Each epoch is one pass in the order of torch's :class:`DistributedSampler`
    (``shuffle=True, seed=seed, drop_last=True``, ``set_epoch(epoch)``): the permutation
    depends only on ``(seed, epoch)``, and rank ``r`` holds elements ``r, r+W, ...`` of
    it. Iteration ``k`` of an epoch takes the ``k``-th run of ``batch / W`` elements of
    the rank's list, so over all ranks it covers elements ``k*batch .. (k+1)*batch - 1``
    of the permutation: the same images for any ``W``. The last partial batch of an
    epoch is dropped, so an epoch has ``n // batch`` iterations whatever ``W`` is.

    Yields:
        lists of ``(index, epoch)`` keys (the epoch seeds the per-image augmentation,
        see :class:`resnet_repro.data.imagenet.TrainView`).

    Raises:
        UserError: if the data set has fewer images than one global batch.
    """

    def __init__(self, n: int, global_batch: int, ctx: DistContext, seed: int, start: int, end: int) -> None:
        self.n, self.seed, self.start, self.end = n, seed, start, end
        self.ctx = ctx
        self.local = per_rank_batch(global_batch, ctx.world_size)
        self.iters_per_epoch = n // global_batch
        if self.iters_per_epoch == 0:
            raise UserError(
                f"only {n} training images for a global batch of {global_batch}; lower --batch-size"
            )
        self._epoch: int | None = None
        self._order: list[int] = []

    def _rank_order(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            s = DistributedSampler(range(self.n), num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                   shuffle=True, seed=self.seed, drop_last=True)
            s.set_epoch(epoch)
            self._epoch, self._order = epoch, list(iter(s))
        return self._order

    def keys(self, iteration: int) -> list[tuple[int, int]]:
        """The ``(index, epoch)`` keys of this rank at 0-based ``iteration``."""
        epoch, k = divmod(iteration, self.iters_per_epoch)
        order = self._rank_order(epoch)
        return [(i, epoch) for i in order[k * self.local:(k + 1) * self.local]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.end):
            yield self.keys(it)

    def __len__(self) -> int:
        return max(0, self.end - self.start)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: forward all-reduces the input, backward all-reduces
    the gradient (each rank's loss depends on every rank's contribution)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        g = grad.clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g, None


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """Batch normalisation over the global batch of all processes, for CPU/gloo runs.

    The same computation as :class:`torch.nn.SyncBatchNorm` (which in this torch
    version refuses CPU tensors): in training mode the per-channel mean and (biased)
    variance are taken over the ``N*H*W`` values of all ranks (by two differentiable
    all-reduces when a process group of more than one rank exists; over the local
    batch otherwise), the output is ``(x - mean) / sqrt(var + eps) * weight + bias``,
    and the running statistics are updated with the mean and the unbiased variance. In
    eval mode it is plain :class:`~torch.nn.BatchNorm2d`.

    One process runs the same explicit formula, not torch's fused kernel: the two
    agree in exact arithmetic but not in float32 (the gradient of a BN bias is a sum
    with heavy cancellation; we measured ~1e-3 relative differences between them), so
    a 1-process run and a W-process run with ``sync_bn`` differ only by the summation
    order of the all-reduce.

    The all-reduces run in their own process group (``process_group``, made by
    :func:`convert_sync_bn`): DDP all-reduces gradient buckets on the default group
    while the backward pass runs, and gloo collectives of one group issued from two
    threads could pair up wrongly across ranks.

    Input and output ``(N, C, H, W)``.
    """

    process_group: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        sync = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        c, group = x.shape[1], self.process_group

        def total_of(t: torch.Tensor) -> torch.Tensor:
            return _AllReduceSum.apply(t, group) if sync else t

        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        count = torch.tensor([float(xf.numel() // c)], device=x.device, dtype=xf.dtype)
        if sync:
            dist.all_reduce(count, group=group)
        total = count[0]
        mean = total_of(xf.sum(dim=(0, 2, 3))) / total
        centred = xf - mean.view(1, c, 1, 1)
        var = total_of((centred * centred).sum(dim=(0, 2, 3))) / total
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * total / max(total.item() - 1.0, 1.0)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        return y.to(x.dtype)


def convert_sync_bn(model: nn.Module, device: str) -> nn.Module:
    """Replace every ``BatchNorm2d`` by its synchronised form: torch's
    :class:`~torch.nn.SyncBatchNorm` on CUDA, :class:`CpuSyncBatchNorm` on the CPU.
    Parameters and running statistics are carried over; the state-dict names do not
    change, so checkpoints load into a plain model."""
    if device.startswith("cuda"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    group = dist.new_group() if dist.is_available() and dist.is_initialized() else None  # every rank calls this
    return _to_cpu_sync(model, group)


def _to_cpu_sync(module: nn.Module, group: Any) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CpuSyncBatchNorm):
        new = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        new.process_group = group
        return new
    for name, child in list(module.named_children()):
        setattr(module, name, _to_cpu_sync(child, group))
    return module


def wrap_ddp(model: nn.Module, ctx: DistContext, device: str) -> nn.Module:
    """``model`` wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` when
    running distributed (gradients averaged over ranks after every backward; rank 0's
    weights and buffers broadcast at construction), else ``model`` itself."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.startswith("cuda"):
        idx = torch.device(device).index
        return DistributedDataParallel(model, device_ids=[idx], output_device=idx)
    return DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or ``torch.compile``) wrapper."""
    inner = getattr(model, "_orig_mod", model)
    return getattr(inner, "module", inner) if hasattr(inner, "module") and isinstance(
        inner, nn.parallel.DistributedDataParallel) else inner
