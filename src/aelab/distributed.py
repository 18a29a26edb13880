"""Scale-out with PyTorch's own engine: DistributedDataParallel under ``torchrun``.

``torchrun --nproc-per-node N -m aelab train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU).
Each rank takes its own slice of every global batch (batch_size images per rank, so the
global batch is ``batch_size * world_size``), gradients are averaged by DDP, and only
rank 0 writes files and shows progress.

The batch order and the noise come from generators that are identical on every rank:
each rank draws the noise of the whole global batch and keeps its slice. This costs a
little extra noise generation but makes a DDP step over N ranks with batch b the same
computation as one process with batch N*b, and makes checkpoints rank-independent.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: str = "auto") -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); True when distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    use_cuda = torch.cuda.is_available() and str(device) in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` under torchrun on GPUs."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def all_reduce_sum(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum a dict of floats over ranks (identity when not distributed)."""
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every rank done before any tears the group down (seen: gloo aborting a rank mid-exit)
        dist.destroy_process_group()
