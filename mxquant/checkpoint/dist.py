"""Scale-out with torch.distributed: under `torchrun`, each rank converts its share of the
shards; rank 0 writes config, index and manifest after a barrier. Without torchrun (no
WORLD_SIZE in the environment, or 1) everything runs in this process."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Group:
    rank: int = 0
    world: int = 1
    _initialised_here: bool = False

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_ok(self, ok: bool) -> bool:
        """True when every rank says ok (so one rank's failure stops all, none hangs)."""
        if self.world == 1:
            return ok
        import torch
        import torch.distributed as dist

        flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
        dist.all_reduce(flag)
        return int(flag.item()) == 0

    def sum(self, values: list[int]) -> list[int]:
        """Each value summed over the ranks (the counts of a whole run, not of this rank)."""
        if self.world == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(t)
        return [int(v) for v in t.tolist()]

    def close(self) -> None:
        if self._initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def launcher() -> tuple[int, int, int]:
    """(RANK, LOCAL_RANK, WORLD_SIZE) as torchrun sets them; (0, 0, 1) outside it. With
    local_world(), the one place the converter reads the launcher's variables."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), int(env.get("WORLD_SIZE", "1"))


def local_world() -> int:
    """LOCAL_WORLD_SIZE as torchrun sets it (the ranks on this host), 1 outside it."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def join() -> Group:
    world = launcher()[2]
    if world <= 1:
        return Group()
    import torch.distributed as dist

    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")  # control only: no tensors of the model travel
        here = True
    return Group(dist.get_rank(), dist.get_world_size(), here)


def assign(sizes: list[int], world: int) -> list[int]:
    """Rank of each shard: largest first, each to the least-loaded rank (deterministic)."""
    load = [0] * world
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += sizes[i]
    return owner
