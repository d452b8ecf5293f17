"""One training run over several processes: ``torchrun`` + ``torch.distributed`` (DDP).

``torchrun --nproc_per_node=N experiments/run.py ...`` starts N copies of the run, each with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment.
:func:`from_environment` reads them and joins the process group: NCCL where the run's device is
CUDA (each process on ``cuda:LOCAL_RANK``), gloo on the CPU. Without ``WORLD_SIZE`` (or with 1) it
returns the single-process context and nothing else changes.

Conventions of a distributed run (:mod:`pyg_sdfl.engine.training`):

* ``train.batch_size`` is the **global** batch: each of the W processes takes ``batch_size / W``
  faces of every global batch (:class:`~pyg_sdfl.engine.sampling.GlobalBatchShards`), so a run's
  hyper-parameters do not depend on how many processes run it.
* rank 0 alone writes checkpoints, results and plots, and logs progress; the other ranks log warnings
  and errors only (into rank 0's run folder when ``hydra.run.dir`` is given, as the README's commands do);
* validation and test metrics are computed on all faces: each rank predicts a shard and the
  predictions are gathered (:func:`gather_objects`) before any metric is computed.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "SINGLE_PROCESS", "from_environment", "rank_device", "gather_objects",
           "broadcast_object", "all_reduce_sum", "available_cores", "thread_budget"]

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the run.

    Attributes:
        rank: this process's index in ``[0, world_size)``.
        world_size: number of processes of the run (1: an ordinary single-process run).
        local_rank: index on this machine (selects the CUDA device).
        local_world_size: processes on this machine (``LOCAL_WORLD_SIZE``; shares the CPU cores).
        backend: ``"gloo"``, ``"nccl"`` or ``""`` for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """True when several processes share the run (a process group is joined)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self) -> None:
        """Leave the process group (at the end of a run)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


SINGLE_PROCESS = DistributedContext()


def from_environment(device: torch.device, timeout_s: float = 1800.0) -> DistributedContext:
    """The context of this process, joining the process group when ``WORLD_SIZE`` > 1.

    ``device`` is the run's resolved device: CUDA selects NCCL and ``cuda:LOCAL_RANK``
    (:func:`rank_device`), the CPU gloo. An incomplete torchrun environment (``WORLD_SIZE`` set but
    no ``RANK``, say) is a ``ValueError`` naming the missing variables. Calling it again in a process
    that already joined returns the same context.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE_PROCESS
    missing = [key for key in _ENV_KEYS if not os.environ.get(key)]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: start distributed runs with "
                         f"torchrun (torchrun --nproc_per_node={world} experiments/run.py ...)")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl" and local_rank >= torch.cuda.device_count():
        raise ValueError(f"process {local_rank} of {local_world} on this machine has no GPU of its own: "
                         f"{torch.cuda.device_count()} visible; start at most that many (--nproc_per_node) or "
                         f"train on the CPU (device=cpu, gloo)")
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistributedContext(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world,
                              backend=backend)


def rank_device(device: torch.device, context: DistributedContext) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a CUDA run over several processes, else ``device``."""
    device = torch.device(device)
    if context.enabled and device.type == "cuda":
        return torch.device("cuda", context.local_rank)
    return device


def gather_objects(context: DistributedContext, obj: Any) -> List[Any]:
    """Every rank's ``obj`` in rank order (picklable objects; ``[obj]`` for a single process)."""
    if not context.enabled:
        return [obj]
    out: List[Any] = [None] * context.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(context: DistributedContext, obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself for a single process)."""
    if not context.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(context: DistributedContext, values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over the ranks (a new tensor; ``values`` for one process).
    Not differentiable: for statistics and logging. With NCCL ``values`` must be on this rank's CUDA device."""
    if not context.enabled:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_budget(setting: Any, parallel_jobs: int = 1, cores: Optional[int] = None) -> Optional[int]:
    """torch threads for one process of a run (config key ``threads``).

    ``"auto"``: the machine's cores shared evenly among the processes running at once,
    ``max(1, cores // parallel_jobs)`` (``parallel_jobs``: a launcher's parallel jobs times the
    processes of each run on this machine), or ``None`` (leave torch's default) for a lone process;
    an integer >= 1 is taken as it is. Two processes that each take all cores slow each other down
    several times over (docs/training_on_cpu.md), which is why ``auto`` divides.
    """
    if setting is None:
        return None
    if isinstance(setting, str):
        if setting.strip().lower() != "auto":
            raise ValueError(f"threads={setting!r}: expected 'auto' or a positive integer")
        if parallel_jobs <= 1:
            return None
        cores = cores if cores is not None else available_cores()
        return max(1, int(cores) // int(parallel_jobs))
    if isinstance(setting, bool) or int(setting) != setting or int(setting) < 1:
        raise ValueError(f"threads={setting!r}: expected 'auto' or a positive integer")
    return int(setting)
