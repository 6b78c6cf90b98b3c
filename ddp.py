"""
ddp.py: train.py across several processes with torchrun, equal to one process on the union of their batches.
Plumbing, not a concept: read it next to train.py.

    torchrun --standalone --nproc_per_node=N train.py [--key=value ...]

Every rank draws the same prompts and the same uniforms (the random generators are identical on all ranks) and
keeps its own 1/N of the rows: whole groups, so advantages stay local. Each rank's loss already divides by the
*global* row and token counts (grpo.py's num_rows / num_tokens), so the one-process gradient is the *sum* of the
ranks' gradients: one explicit all-reduce of the gradients per optimizer step (`sum_grads`). That is simpler than
DistributedDataParallel here, whose averaging would have to be undone and whose hooks would have to be kept off
during micro-batch accumulation. Every rank then takes the same AdamW step, so the weights stay equal without
being broadcast. Metrics are computed from the union (`gather`), rank 0 alone prints, logs and checkpoints, and a
stop signal is acted on only when every rank has seen it (`any_rank`), at the same step. One exception to
"equal to one process": with --dynamic_sampling each rank keeps the better half of its own groups.
Plain `python train.py` has no process group: every function here is then the identity or nearly.
"""
import os
import sys

import torch
import torch.distributed as dist


def setup(name):
    """(rank, device, why it was chosen) for this process. name: auto (cuda, then mps, then cpu) or a torch device
    string; one this machine's torch cannot use stops the run with a message. Under torchrun (WORLD_SIZE > 1) this
    joins the process group, with gloo on CPU and nccl on CUDA, gives each rank the GPU of its LOCAL_RANK, and
    silences stdout on every rank but 0 (errors still reach stderr from all of them)."""
    available = dict(cpu=True, cuda=torch.cuda.is_available(), mps=torch.backends.mps.is_available())
    if name == "auto":
        kind = next(k for k in ("cuda", "mps", "cpu") if available[k])
        device, why = torch.device(kind), {"cuda": "CUDA is available", "mps": "Apple MPS is available",
                                           "cpu": "no GPU found"}[kind]
    else:
        try:
            device, why = torch.device(name), f"--device={name}"
        except RuntimeError:
            sys.exit(f"error: --device={name!r} is not a torch device (auto, cpu, cuda, cuda:1, mps)")
        if not available.get(device.type, False) or (device.type == "cuda" and (device.index or 0) >=
                                                      torch.cuda.device_count()):
            sys.exit(f"error: --device={name!r}: this machine's torch ({torch.__version__}) cannot run on it")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, device, why
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    if dist.get_rank():
        sys.stdout = open(os.devnull, "w")
    print(f"torchrun: {world} processes, backend {backend} (nccl on CUDA, gloo on CPU)")
    return dist.get_rank(), device, why


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def my_rows(n):
    """This rank's slice of n rows (n divides by the world size)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return slice(rank * n // world, (rank + 1) * n // world)


def sum_all(x):
    """x (a tensor) summed over the ranks, in place."""
    if dist.is_initialized():
        dist.all_reduce(x)
    return x


def max_all(x):
    if dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def gather(obj):
    """Every rank's obj, in rank order (a list of one without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag):
    """True on every rank when it is true on any: a decision all ranks take at the same step."""
    if not dist.is_initialized():
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    return bool(max_all(torch.tensor(float(bool(flag)), device=device)).item())


def finish():
    """Leave the process group together: a rank that tears it down while another still talks to it can abort."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def sum_grads(model):
    """Sum every gradient over the ranks: the gradient of the one-process loss on the union of the batches."""
    if dist.is_initialized():
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
