"""Data-parallel runs under torchrun or accelerate launch: who this process is, and waiting together.

The Trainer (through accelerate) does the distributed training itself; this module only lets the
rest of the package know its place: one main process writes the run folder, prints and pushes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# (world size, rank, local rank) as torchrun (and accelerate launch on GPUs), Open MPI and MPICH set them
# (accelerate's multi-CPU mode starts its processes through mpirun).
_LAUNCHERS = (
    ("WORLD_SIZE", "RANK", "LOCAL_RANK"),
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),
)


def world() -> World:
    """This process's place, from the variables its launcher set; one process when there is none."""
    for size_key, rank_key, local_key in _LAUNCHERS:
        if size_key in os.environ:
            rank = int(os.environ.get(rank_key, "0"))
            local = int(os.environ.get(local_key, str(rank)))
            return World(rank=rank, local_rank=local, size=int(os.environ[size_key]))
    return World(rank=0, local_rank=0, size=1)


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    if world().size > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # sets up the process group on first use (gloo on CPU)
