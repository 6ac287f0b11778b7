"""Training data order: which instances each rank reads, and where a resumed run continues.

The order is a pure function of ``(seed, epoch)``, so no sampler state needs saving:

* every epoch shuffles the train split with its own permutation,
  ``np.random.default_rng([seed, epoch, DATA_STREAM]).permutation(N)``;
* the permutation is cut into *global micro-batches* of ``G = micro_batch_size x world_size``
  instances (the incomplete tail is dropped); global micro-batch ``b`` is
  ``perm[b*G:(b+1)*G]`` and rank ``r`` takes the slice ``[r*micro:(r+1)*micro]`` of it, i.e.
  the micro-batch slices are dealt round-robin to the ranks;
* the data position is ``(epoch, batch_index)`` = the next global micro-batch to read. It is
  stored in every checkpoint, so a resumed run reads exactly the batches the killed run would
  have read next;
* masks are drawn when the batch is built (dynamic masking), with
  ``batch_rng(seed, epoch, rank, batch_index)``, so they too are reproducible after a resume.

With world size W and gradient accumulation A, one optimizer step consumes A global
micro-batches (A x W rank micro-batches of ``micro`` instances each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from zhbert.train.collator import batch_rng
from zhbert.errors import DataError

DATA_STREAM = 0xDA7A  # keeps the shuffling stream apart from other uses of the seed


@dataclass(frozen=True)
class DataPosition:
    """The next global micro-batch to read: ``batch_index`` within ``epoch``."""

    epoch: int = 0
    batch_index: int = 0

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_index": self.batch_index}

    @classmethod
    def from_dict(cls, d: dict) -> "DataPosition":
        return cls(int(d["epoch"]), int(d["batch_index"]))


def rows_to_instances(rows: dict) -> list[dict]:
    """Column dict (``dataset[list_of_indices]``) -> list of per-instance dicts."""
    cols = list(rows)
    n = len(rows[cols[0]]) if cols else 0
    return [{k: rows[k][i] for k in cols} for i in range(n)]


class ShardedBatches(torch.utils.data.Dataset):
    """Rank ``rank``'s micro-batches of a ``datasets.Dataset``, addressed by a linear index
    ``g = epoch * batches_per_epoch + batch_index`` (map-style, so DataLoader workers can build
    batches in parallel while the order stays fixed)."""

    def __init__(self, dataset, collator, *, seed: int, rank: int, world_size: int, micro_batch_size: int,
                 shuffle: bool = True, name: str = "train"):
        self.dataset = dataset
        self.collator = collator
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.micro = int(micro_batch_size)
        self.shuffle = shuffle
        self.global_micro = self.micro * self.world_size
        self.batches_per_epoch = len(dataset) // self.global_micro
        if self.batches_per_epoch == 0:
            raise DataError(f"{name} split has {len(dataset)} instances, fewer than one global micro-batch "
                            f"(micro_batch_size {self.micro} x world size {self.world_size}); "
                            "prepare more data or lower train.micro_batch_size")
        self._perm_epoch: Optional[int] = None
        self._perm: Optional[np.ndarray] = None

    def __len__(self) -> int:  # effectively unbounded: epochs repeat
        return self.batches_per_epoch * 1_000_000

    def order(self, epoch: int) -> np.ndarray:
        """The instance order of ``epoch`` (identity when not shuffling)."""
        if self._perm_epoch != epoch:
            n = len(self.dataset)
            self._perm = (np.random.default_rng([self.seed, epoch, DATA_STREAM]).permutation(n)
                          if self.shuffle else np.arange(n))
            self._perm_epoch = epoch
        return self._perm

    def indices(self, epoch: int, batch_index: int) -> np.ndarray:
        """Dataset rows of this rank's slice of global micro-batch ``batch_index``."""
        start = batch_index * self.global_micro + self.rank * self.micro
        return self.order(epoch)[start:start + self.micro]

    def batch(self, epoch: int, batch_index: int) -> dict:
        idx = self.indices(epoch, batch_index)
        instances = rows_to_instances(self.dataset[[int(i) for i in idx]])
        rng = batch_rng(self.seed, epoch, self.rank, batch_index)
        return self.collator(instances, rng)

    def position(self, g: int) -> DataPosition:
        return DataPosition(*divmod(int(g), self.batches_per_epoch))

    def linear(self, pos: DataPosition) -> int:
        return pos.epoch * self.batches_per_epoch + pos.batch_index

    def __getitem__(self, g: int) -> dict:
        pos = self.position(g)
        return self.batch(pos.epoch, pos.batch_index)


def iterate(batches: ShardedBatches, start: DataPosition, workers: int = 0) -> Iterator[tuple[DataPosition, dict]]:
    """``(position_of_this_batch, batch)`` from ``start`` on, across epochs, forever."""
    g0 = batches.linear(start)
    if workers <= 0:
        g = g0
        while True:
            yield batches.position(g), batches[g]
            g += 1
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(g0, len(batches)),
                                         num_workers=workers, persistent_workers=False, prefetch_factor=2)
    for g, batch in enumerate(loader, start=g0):
        yield batches.position(g), batch


def rescale_position(pos: DataPosition, old_global_micro: int, new_global_micro: int) -> DataPosition:
    """Data position after a world-size change: same number of instances consumed in the epoch
    (rounded down to whole new global micro-batches)."""
    if old_global_micro == new_global_micro:
        return pos
    return DataPosition(pos.epoch, pos.batch_index * old_global_micro // new_global_micro)
