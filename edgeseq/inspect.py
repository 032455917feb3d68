"""Describe an ONNX file: inputs/outputs with dynamic dims, operator histogram, size, model card.

>>> describe("model.onnx")["operators"]      # doctest: +SKIP
{'LSTM': 2, 'Gemm': 1, ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .card import op_histogram, read_card


def describe(path: str | Path) -> dict[str, Any]:
    from .runtime.session import create_inference_session, open_model_file
    from .runtime.providers import resolve_device
    from .runtime.session import _spec

    path = open_model_file(path)
    sess = create_inference_session(path, resolve_device("cpu"), threads=1)
    def tensors(nodes: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "dtype": np.dtype(s.dtype).name, "shape": list(s.shape)} for s in map(_spec, nodes)]

    return {
        "path": str(path),
        "size_kib": path.stat().st_size / 1024,
        "inputs": tensors(sess.get_inputs()),
        "outputs": tensors(sess.get_outputs()),
        "operators": op_histogram(path),
        "card": read_card(path),
    }
