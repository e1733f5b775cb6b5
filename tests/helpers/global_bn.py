"""GlobalBatchNorm2d on 2 gloo ranks, each holding half of one batch: rank 0 writes what the whole batch got.

usage: torchrun --standalone --nproc-per-node=2 global_bn.py OUT.npz
The output of every sample, the running statistics and the gradients of weight and bias (summed over the ranks,
as DistributedDataParallel sums them) are compared with a float64 computation on the whole batch by
tests/test_distributed.py.
"""
import sys

import numpy as np
import torch
import torch.distributed as dist

from micropatch.training.parallel import GlobalBatchNorm2d

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
generator = torch.Generator().manual_seed(0)
batch = torch.randn(8, 3, 5, 5, generator=generator) * torch.tensor([1.0, 3.0, 0.5])[None, :, None, None] + 2.0
upstream = torch.randn(8, 3, 5, 5, generator=generator)  # d loss / d output
half = slice(rank * 4, rank * 4 + 4)
bn = GlobalBatchNorm2d(3).train()
with torch.no_grad():
    bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
    bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
out = bn(batch[half])
(out * upstream[half]).sum().backward()
outputs = [torch.empty_like(out) for _ in range(world)]
dist.all_gather(outputs, out.detach())
for grad in (bn.weight.grad, bn.bias.grad):
    dist.all_reduce(grad)
if rank == 0:
    np.savez(sys.argv[1], batch=batch.numpy(), upstream=upstream.numpy(), out=torch.cat(outputs).numpy(),
             running_mean=bn.running_mean.numpy(), running_var=bn.running_var.numpy(),
             weight_grad=bn.weight.grad.numpy(), bias_grad=bn.bias.grad.numpy(),
             weight=bn.weight.detach().numpy(), bias=bn.bias.detach().numpy(), eps=bn.eps, momentum=bn.momentum)
dist.destroy_process_group()
