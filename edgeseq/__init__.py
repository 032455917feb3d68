"""edgeseq: PyTorch sequence models (LSTM, GRU, CNN-LSTM) to ONNX, verified and fast at the edge.

>>> from edgeseq import Session
>>> Session("model.onnx").predict(x)      # doctest: +SKIP

Importing edgeseq never imports torch; heavy modules load on first use.
"""

from __future__ import annotations

from typing import Any

from .errors import EdgeseqError

__version__ = "0.1.0"
__all__ = ["Session", "StreamingSession", "StreamPool", "EdgeseqError", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: keep `import edgeseq` cheap for CLI start-up
    if name == "Session":
        from .runtime.session import Session

        return Session
    if name == "StreamingSession":
        from .runtime.streaming import StreamingSession

        return StreamingSession
    if name == "StreamPool":
        from .runtime.pool import StreamPool

        return StreamPool
    raise AttributeError(f"module 'edgeseq' has no attribute {name!r}")
