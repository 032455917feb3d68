"""Run the original Keras model (for parity checks); the only place Keras is imported."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError, ModelLoadError


def keras_reference(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """Load ``path`` with Keras (``KERAS_BACKEND`` defaults to torch) and return ``x -> y``.

    The callable's ``keras_input_shape`` attribute is the model's saved input shape
    (a fixed length there means Keras may reject other lengths).
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as exc:
        backend = os.environ.get("KERAS_BACKEND", "torch")
        missing = getattr(exc, "name", None) or ""
        if missing and missing != "keras" and not missing.startswith("keras."):  # keras is there, its backend is not
            raise MissingDependencyError(
                f"keras cannot start its {backend!r} backend (KERAS_BACKEND={backend}): {missing} is not installed; "
                "run with KERAS_BACKEND=torch (torch is installed with edgeseq's export extra)") from None
        raise MissingDependencyError(
            "keras is needed to run the original Keras model; install it with: pip install keras"
        ) from exc
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"Keras model file not found: {p}")
    try:
        model = keras.saving.load_model(str(p), compile=False)
    except Exception as exc:  # keras raises many kinds; report them as one load error
        raise ModelLoadError(f"Keras could not load {p}: {type(exc).__name__}: {exc}") from exc

    def run(x: np.ndarray) -> np.ndarray:
        y = model(np.asarray(x), training=False)
        if isinstance(y, (list, tuple)):
            y = y[0]
        return np.asarray(keras.ops.convert_to_numpy(y))

    run.keras_input_shape = tuple(model.input_shape)  # type: ignore[attr-defined]
    return run
