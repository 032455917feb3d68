"""The build side: PyTorch -> ONNX, parity, quantization.  Imports torch lazily, inside functions.

>>> from edgeseq.export import export, check
>>> export("models/motion_lstm.py:build", "motion.onnx")            # doctest: +SKIP
>>> check("motion.onnx", "models/motion_lstm.py:build").passed      # doctest: +SKIP
True
"""

from __future__ import annotations

from typing import Any

# Bound eagerly: a lazily returned `check` would be shadowed by the submodule of the same name
# once `edgeseq.export.check` is imported anywhere.  Neither import pulls in torch.
from .check import check

__all__ = ["export", "check", "load_model", "ExportResult"]


def __getattr__(name: str) -> Any:
    if name in ("export", "ExportResult"):
        from . import exporter

        return getattr(exporter, name)
    if name == "load_model":
        from .loading import load_model

        return load_model
    raise AttributeError(name)
