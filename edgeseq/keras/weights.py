"""WeightBag: the saved weight arrays of one top-level Keras layer, handed out layer by layer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ModelLoadError


def _components(name: str) -> list[str]:
    return [c.split(":")[0] for c in name.split("/")]


class WeightBag:
    """Ordered ``(name, array)`` pairs, taken out by the layers that own them.

    ``take(layer, shapes)`` prefers the entries whose name path contains the layer's
    name (legacy HDF5 lists nested weights with trainable ones first, so position
    alone is not enough there) and otherwise takes the next entries in order.
    """

    def __init__(self, entries: Sequence[tuple[str, np.ndarray]]) -> None:
        self._left = list(entries)

    def __len__(self) -> int:
        return len(self._left)

    def take(self, layer: str, shapes: Sequence[tuple[int | None, ...]]) -> list[np.ndarray]:
        """Remove and return the ``len(shapes)`` weights of ``layer``, checking their shapes.

        A ``None`` in a shape matches any size.
        """
        n = len(shapes)
        named = [i for i, (nm, _) in enumerate(self._left) if layer in _components(nm)]
        picked = named if len(named) == n else list(range(min(n, len(self._left))))
        if len(picked) != n:
            raise ModelLoadError(
                f"Keras layer {layer!r}: expected {n} weight arrays in the file, found {len(picked)}"
            )
        arrays = [self._left[i][1] for i in picked]
        for i in sorted(picked, reverse=True):
            del self._left[i]
        for arr, want in zip(arrays, shapes):
            if len(arr.shape) != len(want) or any(
                w is not None and w != a for a, w in zip(arr.shape, want)
            ):
                raise ModelLoadError(
                    f"Keras layer {layer!r}: weight has shape {tuple(arr.shape)}, expected "
                    f"{tuple('?' if w is None else w for w in want)}"
                )
        return [np.asarray(a, dtype=np.float32) for a in arrays]

    def check_empty(self, layer: str) -> None:
        """Raise if weights were left over (the config and the weights disagree)."""
        if self._left:
            names = ", ".join(nm for nm, _ in self._left[:4])
            raise ModelLoadError(
                f"Keras layer {layer!r}: {len(self._left)} saved weight arrays were not used ({names})"
            )
