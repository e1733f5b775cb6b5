"""Data-parallel training under torchrun: process group, global-batch sharding, a loss and BatchNorm over the
global batch, so that N processes take the optimisation steps one process would (within float rounding).

What makes N processes equal to one, with a global batch B split into N contiguous shards of B / N:
- the loss: the smp Dice loss pools its sums over the batch, so a mean of per-shard Dice losses is not the batch's
  Dice loss. Each process gathers every shard's logits and masks (`gather_batch`, whose backward returns each
  shard its gradient summed over processes) and computes the loss of the whole global batch, exactly as one
  process does; DistributedDataParallel's gradient average then gives the global batch's gradient.
- BatchNorm: per-shard statistics are not the batch's. `sync_batchnorm` converts every BatchNorm to torch's
  SyncBatchNorm on GPUs and to `GlobalBatchNorm2d` on the CPU (torch's SyncBatchNorm refuses CPU tensors).
- the order: every process draws the same seeded permutation and takes its shard of each global batch
  (`shard_batches`); augmentation depends on (seed, epoch, patch index) only, never on the process.
A last global batch that does not split evenly is dropped (with max_steps_per_epoch, none is partial).
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process sits: rank among world processes, and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, history and metrics."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_launcher() -> None:
    """End this worker when torchrun, its launcher, dies. torchrun starts each worker in a session of its own, so a
    SIGKILL to torchrun alone (the OOM killer, `kill -9`, a killed `dvc repro`) left the workers training and
    writing the resume state and the model beside the rerun that resumes from them (measured: both ranks survived
    and wrote model.safetensors). SIGINT and SIGTERM torchrun forwards itself. Linux only (prctl)."""
    if sys.platform != "linux":
        return

    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        logging.getLogger(__name__).warning("could not tie this worker to torchrun (prctl errno %d): a SIGKILL "
                                            "to torchrun leaves it running", ctypes.get_errno())
    elif os.getppid() == 1:  # the launcher died before prctl: the worker is init's already
        os.kill(os.getpid(), signal.SIGKILL)


def setup() -> Context:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on the CPU), or a single-process context."""
    cuda = torch.cuda.is_available()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Context(0, 1, torch.device("cuda" if cuda else "cpu"))
    end_with_launcher()
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return Context(dist.get_rank(), dist.get_world_size(), device)


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard_batches(batches: list[list[int]], ctx: Context) -> list[list[int]]:
    """This process's contiguous shard of each global batch; batches that do not split evenly are dropped."""
    if not ctx.distributed:
        return batches
    shards = []
    for batch in batches:
        if len(batch) % ctx.world:
            continue
        size = len(batch) // ctx.world
        shards.append(batch[ctx.rank * size:(ctx.rank + 1) * size])
    return shards


class _GatherBatch(torch.autograd.Function):
    """Concatenate every process's equal-sized shard along dim 0; the backward hands each shard its gradient
    summed over processes (each process's loss is the global one, DDP then averages: the global gradient)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        ctx.rank, ctx.size = dist.get_rank(), local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # gloo has no reduce-scatter: reduce everything, keep this shard
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]


def gather_batch(local: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The global batch from this process's shard (differentiable when `local` requires grad)."""
    if not ctx.distributed:
        return local
    if local.requires_grad:
        return _GatherBatch.apply(local)
    parts = [torch.empty_like(local) for _ in range(ctx.world)]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts)


def global_batch_loss(loss_fn, ctx: Context):
    """loss_fn over the global batch: every process gets the loss one process would compute."""
    if not ctx.distributed:
        return loss_fn
    return lambda logits, target: loss_fn(gather_batch(logits, ctx), gather_batch(target, ctx))


class _SumAcrossProcesses(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's (sums over processes, in float64), with the
    same running-statistics update as torch's BatchNorm (unbiased variance); eval mode is plain BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        wide = x.double()
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=torch.float64, device=x.device)
        total = _SumAcrossProcesses.apply(torch.cat([wide.sum((0, 2, 3)), count[None]]))
        mean = total[:-1] / total[-1]
        centred = wide - mean[None, :, None, None]
        var = _SumAcrossProcesses.apply((centred * centred).sum((0, 2, 3))) / total[-1]
        if self.track_running_stats:
            with torch.no_grad():
                n = total[-1]
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean.dtype))
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var.dtype))
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        out = out.to(x.dtype)
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def convert_sync_batchnorm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Every BatchNorm2d as torch's SyncBatchNorm (GPUs) or GlobalBatchNorm2d (CPU), weights and buffers kept."""
    if device.type != "cpu":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, torch.nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        converted = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                      module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module


def broadcast(value, ctx: Context):
    """Rank 0's value (any picklable object) on every process."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()
