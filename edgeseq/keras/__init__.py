"""Import Keras sequence models (``.keras`` and legacy ``.h5``) as PyTorch modules, without TensorFlow.

>>> from edgeseq.keras import load_keras, keras_reference
>>> model = load_keras("model.keras")            # doctest: +SKIP
>>> y = model(*model.example_inputs())           # doctest: +SKIP
>>> ref = keras_reference("model.keras")         # doctest: +SKIP (needs keras)

The file's config JSON and weights are read with zipfile/h5py; Keras is only
imported by :func:`keras_reference`.  Importing this package does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

__all__ = ["load_keras", "keras_reference", "supported_layers", "KERAS_SUFFIXES"]

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_keras(path: str | Path) -> torch.nn.Module:
    """Rebuild the Keras model saved at ``path`` as an equivalent ``torch.nn.Module`` (eval mode).

    The module keeps Keras's layout (batch-first, channels-last), has
    ``example_inputs()`` (a batch of 2 at the saved shape, dynamic axes of length 8)
    and ``keras_input_shape`` (the saved input shape, batch axis first, ``None`` for
    dynamic axes).  Raises ``UnsupportedModelError`` for layers or settings that
    cannot be reproduced exactly and ``ModelLoadError`` for unreadable files.
    """
    from ..errors import ModelLoadError, require

    require("torch", "export")
    from .model import build_model
    from .reader import read_keras_file

    kf = read_keras_file(path)
    try:
        return build_model(kf)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ModelLoadError(
            f"{path}: unexpected Keras model config ({type(exc).__name__}: {exc})"
        ) from exc


def keras_reference(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """Load the ORIGINAL Keras model (torch backend by default) and return ``x -> model(x)``."""
    from .reference import keras_reference as _ref

    return _ref(path)


def supported_layers() -> tuple[str, ...]:
    """Keras layer class names the importer understands."""
    from .layers import SUPPORTED_LAYERS

    return SUPPORTED_LAYERS


def __getattr__(name: str) -> Any:
    if name == "SUPPORTED_LAYERS":
        return supported_layers()
    raise AttributeError(f"module 'edgeseq.keras' has no attribute {name!r}")
