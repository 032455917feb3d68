"""The build side: PyTorch -> ONNX, parity, quantization.  Imports torch lazily.

>>> from edgeseq.export import export, check
"""

from __future__ import annotations

from typing import Any

__all__ = ["export", "check", "load_model", "ExportResult"]


def __getattr__(name: str) -> Any:
    if name in ("export", "ExportResult"):
        from . import exporter

        return getattr(exporter, name)
    if name == "check":
        from .check import check

        return check
    if name == "load_model":
        from .loading import load_model

        return load_model
    raise AttributeError(name)
