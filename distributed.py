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
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, device_id=dev_id)
    return rank, world, device


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def print0(*a, **k):
    if rank() == 0:
        print(*a, **k, flush=True)


def all_sum(t):
    """Sum a tensor over ranks (a no-op in one process)."""
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


def all_max(t):
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier():
    if dist.is_initialized():
        dist.barrier()
