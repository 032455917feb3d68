"""The embeddable runtime: numpy + onnxruntime only (never imports torch).

>>> from edgeseq.runtime import Session
"""

from __future__ import annotations

from .checks import TensorSpec
from .pool import StreamPool
from .providers import DeviceChoice, resolve_device
from .session import Session
from .streaming import StreamingSession

__all__ = ["Session", "StreamingSession", "StreamPool", "TensorSpec", "DeviceChoice", "resolve_device"]
