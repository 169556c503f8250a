"""Training batches through a ``torch.utils.data.DataLoader``, in the order the run's seed draws.

The trainer's batch stream (``training.BatchStream``: a permutation of the split per epoch from a
generator seeded with the run's seed) decides which images form each batch. The loader reads
those images (``core.slices.SplitImages`` reads only the batch's rows from ``images.npy``, so memory
does not grow with the split), in worker processes when ``loader_workers`` > 0, into pinned
memory on CUDA, ``loader_prefetch`` batches ahead per worker.

Reading ahead must not move the stream the checkpoint records: the loader iterates a *copy* of
the stream, and the trainer advances its own stream by one batch for every batch it takes and
checks that both name the same images. So the order, the checkpoint and a resumed run are what
they were with in-memory indexing, and the batches' values are the same float32 numbers.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline_lib.models.base import condition_tensor, image_batch

#: Offset of the loader's generator seed from the run's seed. The loader draws its worker seeds
#: from this generator; without one, creating its iterator would draw from torch's global
#: generator, which the training step uses.
LOADER_SEED = 5_000_003


class IndexedBatches(Dataset):
    """``dataset[indices]`` is one whole batch: (indices, images (B, C, H, W) float32, labels or None)."""

    def __init__(self, images: Any, labels: torch.Tensor | None):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x = image_batch(self.images[indices.numpy()])
        y = self.labels[indices] if self.labels is not None else None
        return indices, x, y


class StreamAhead(Sampler):
    """Batches of indices from a copy of the trainer's stream, endlessly (the trainer stops)."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def __iter__(self) -> Iterator[torch.Tensor]:
        # The copy is taken now, when the loader's iterator is made, not at its first batch.
        ahead = copy.copy(self.stream)
        ahead.gen = torch.Generator().set_state(self.stream.gen.get_state())
        return self._batches(ahead)

    @staticmethod
    def _batches(ahead) -> Iterator[torch.Tensor]:
        while True:
            yield ahead.next_indices()


def batch_loader(stream, images: Any, labels: np.ndarray | torch.Tensor | None, *, seed: int,
                 device: torch.device, workers: int = 0, prefetch: int = 2) -> DataLoader:
    """A DataLoader that yields ``stream``'s batches from its state now (see the module text)."""
    label_tensor = condition_tensor(labels) if labels is not None else None
    return DataLoader(IndexedBatches(images, label_tensor), sampler=StreamAhead(stream), batch_size=None,
                      num_workers=workers, prefetch_factor=prefetch if workers > 0 else None,
                      pin_memory=device.type == "cuda", persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed + LOADER_SEED))


def take(batches: Iterator, stream) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The next batch's images and labels; advances ``stream`` and checks the loader agrees with it."""
    expected = stream.next_indices()
    indices, x, y = next(batches)
    if not torch.equal(indices, expected):
        raise RuntimeError("the data loader's batch differs from the run's batch order; "
                           "this is a bug in the trainer")
    return x, y
