"""
distributed.py: torchrun's environment in a dozen lines, and the three collectives the loop uses.

    rank, world, device = setup()     # under torchrun: NCCL on CUDA, gloo on CPU; else one process
    print0(...)                       # print on rank 0 only
    all_sum(t), all_max(t), barrier() # no-ops in one process

Shared by train.py, eval.py and checkpoint.py, so none of them imports another entry point.
FSDP2 sharding itself is in train.py (shard), where the loss normalisation it must match is.
"""
import os

import torch
import torch.distributed as dist


def setup(single_process_group=False):
    """torchrun's environment -> (rank, world, device); plain `python` gives (0, 1, cpu/cuda:0).
    single_process_group: make one process a world of one (train.py does, so that FSDP2 and
    its mixed precision run the same code path with or without torchrun)."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend, dev_id = ("nccl", device) if device.type == "cuda" else ("gloo", None)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend, device_id=dev_id)
    elif single_process_group and not dist.is_initialized():
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                device_id=dev_id)
    return rank, world, device


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def print0(*a, **k):
    if rank() == 0:
        print(*a, **k, flush=True)


def _reduce(t, op):
    """all_reduce a copy of t; NCCL reduces only CUDA tensors, so CPU tensors travel and return."""
    if not dist.is_initialized():
        return t
    dev = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl"
           else t.device)
    out = t.detach().to(dev, copy=True)
    dist.all_reduce(out, op=op)
    return out.to(t.device)


def all_sum(t):
    """Sum a tensor over ranks (a no-op in one process)."""
    return _reduce(t, dist.ReduceOp.SUM)


def all_max(t):
    return _reduce(t, dist.ReduceOp.MAX)


def barrier():
    if dist.is_initialized():
        dist.barrier()
