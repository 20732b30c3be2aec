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


def world() -> World:
    """This process's place, from the variables torchrun and accelerate launch set."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return World(rank=rank, local_rank=int(os.environ.get("LOCAL_RANK", str(rank))), size=size)


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    if world().size > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # sets up the process group on first use (gloo on CPU)
