"""Scoring data: the ``data=`` argument of :func:`sparseprune.prune_at_init` as a stream of batches.

``data`` is an iterable of ``(inputs, targets)`` batches (a ``DataLoader``, a list of pairs; extra
items after the first two are ignored) or one ``(inputs, targets)`` pair of tensors. Batches are
read in order from one iterator for the whole pruning call, restarting at the end, so iterative
methods see fresh batches at each step (for a shuffled loader, fresh random ones); a one-shot
iterator works while it lasts. This is the
documented choice; FORCE's reference re-creates the iterator at every step, which with an
unshuffled loader scores the same first batch every time.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
from torch import Tensor

Batch = tuple[Tensor, Tensor]


def _is_pair(data: Any) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, Tensor) for t in data))


class BatchStream:
    """Endless, ordered batches from ``data``, moved to ``device``."""

    def __init__(self, data: Any, device: torch.device):
        if _is_pair(data):
            data = [tuple(data)]
        try:
            iter(data)
        except TypeError:
            raise TypeError("data must be an iterable of (inputs, targets) batches (e.g. a "
                            f"DataLoader) or one (inputs, targets) pair, got {type(data).__name__}"
                            ) from None
        self.data = data
        self.device = device
        self._it: Optional[Iterator] = None
        self._pending: Optional[Batch] = None
        self.restarts = 0
        self.produced = 0

    def _raw(self) -> Any:
        for attempt in range(2):
            if self._it is None:
                self._it = iter(self.data)
                self.restarts += 1
            try:
                item = next(self._it)
                self.produced += 1
                return item
            except StopIteration:
                self._it = None
                if attempt:
                    break
        if self.produced:
            raise ValueError(f"data ran out after {self.produced} batch(es) and cannot restart "
                             "(a one-shot iterator?); pass a re-iterable such as a DataLoader")
        raise ValueError("data yielded no batch; pass a non-empty iterable of (inputs, targets)")

    def next(self) -> Batch:
        """The next ``(inputs, targets)`` batch, on the model's device."""
        if self._pending is not None:
            batch, self._pending = self._pending, None
            return batch
        item = self._raw()
        if not isinstance(item, (tuple, list)) or len(item) < 2 \
                or not all(isinstance(t, Tensor) for t in item[:2]):
            raise TypeError("data must yield (inputs, targets) pairs of tensors, got an item of "
                            f"type {type(item).__name__}")
        return item[0].to(self.device), item[1].to(self.device)

    def peek(self) -> Batch:
        """The next batch, which stays the next batch."""
        if self._pending is None:
            self._pending = self.next()
        return self._pending

    def input_shape(self) -> tuple[int, ...]:
        """The per-example input shape of the next batch."""
        return tuple(self.peek()[0].shape[1:])

    def balanced(self, samples_per_class: int, num_classes: int) -> Batch:
        """A batch of exactly ``samples_per_class`` examples of each class ``0..num_classes-1``
        (GraSP's samples-per-class batches), grouped by class, read in order from the stream.
        ValueError when a whole pass over ``data`` does not provide enough of some class."""
        inputs: list[list[Tensor]] = [[] for _ in range(num_classes)]
        counts = [0] * num_classes
        start = self.restarts
        while min(counts) < samples_per_class:
            if self.restarts > start + 1:
                short = [c for c in range(num_classes) if counts[c] < samples_per_class]
                raise ValueError(f"samples_per_class={samples_per_class}: data holds fewer "
                                 f"examples than that of class(es) {short} (num_classes = "
                                 f"{num_classes}, the model's output width)")
            x, y = self.next()
            if y.is_floating_point() or y.dim() != 1:
                raise ValueError("samples_per_class needs integer class labels of shape (batch,), "
                                 f"got targets of dtype {y.dtype} and shape {list(y.shape)}")
            for c in range(num_classes):
                need = samples_per_class - counts[c]
                if need > 0:
                    picked = x[y == c][:need]
                    inputs[c].append(picked)
                    counts[c] += picked.shape[0]
        xs = torch.cat([t for per_class in inputs for t in per_class])
        ys = torch.cat([torch.full((samples_per_class,), c, dtype=torch.long, device=xs.device)
                        for c in range(num_classes)])
        return xs, ys
