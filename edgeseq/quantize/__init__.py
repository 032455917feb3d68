"""Quantization with an accuracy gate: INT8 dynamic, INT8 static (calibrated), float16.

Built on ``onnxruntime.quantization`` and ``onnx``; never imports torch.

>>> from edgeseq.quantize import quantize
>>> quantize("m.onnx", "m.int8.onnx", mode="dynamic", eval_data="eval.npz")   # doctest: +SKIP
"""

from __future__ import annotations

from .api import MODES, PRECISION, QuantizeResult, quantize

__all__ = ["MODES", "PRECISION", "QuantizeResult", "quantize"]
