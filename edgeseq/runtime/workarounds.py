"""Settings that keep known ONNX Runtime bugs away from edgeseq's files.

ONNX Runtime's ``NchwcTransformer`` (a CPU layout optimisation for 2-D convolutions) dereferences a
null operator schema on x86-64 when a float16 graph holds ``Transpose -> MatMul``: the ``Cast`` that
ONNX Runtime inserts to run the MatMul in float32 has no schema yet
(microsoft/onnxruntime#28392, closed unfixed; 1.24.4 to 1.32.0 here).  Session creation then dies
with a segmentation fault, not an exception.  A per-step output head (``fc(lstm_out)``) or attention
pooling over a bidirectional LSTM's outputs is exactly that pattern once converted to float16.

For files that store float16 weights the transformer is switched off: it only rearranges 2-D
convolutions, and switching it off changed nothing beyond noise on the zoo's FP16 files, batch
64 x 100 (off/on 1.00-1.01 for msft_cnnlstm and motion_lstm, 0.97-1.07 for fashion_lstm over
repeats: ``python -m bench.experiments nchwc``).  ``edgeseq quantize --mode fp16`` also keeps the
pattern out of the files it writes, so they load in a stock ONNX Runtime too.

>>> disabled_optimizers("model.fp16.onnx")     # doctest: +SKIP
['NchwcTransformer']
"""

from __future__ import annotations

from pathlib import Path

from ..card import _iter_fields, mapped_file
from ..errors import ModelFileError

_MODEL_GRAPH, _GRAPH_INIT, _TENSOR_DATA_TYPE = 7, 5, 2
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
FLOAT16_CRASH = ["NchwcTransformer"]


def stores_float16(path: str | Path) -> bool:
    """Whether the file's main graph has a float16 initializer (read from the protobuf; no onnx needed)."""
    try:
        with mapped_file(path) as data:
            return _has_float16_initializer(data)
    except (ModelFileError, ValueError):  # unreadable or corrupt: ONNX Runtime's own error says so
        return False


def _has_float16_initializer(data: memoryview) -> bool:
    for field, wire, graph in _iter_fields(data):
        if field != _MODEL_GRAPH or wire != 2:
            continue
        for gfield, gwire, tensor in _iter_fields(graph):
            if gfield != _GRAPH_INIT or gwire != 2:
                continue
            for tfield, twire, value in _iter_fields(tensor):
                if tfield == _TENSOR_DATA_TYPE and twire == 0:
                    if value == _FLOAT16:
                        return True
                    break
    return False


def disabled_optimizers(path: str | Path) -> list[str]:
    """ONNX Runtime graph optimisers to switch off for this file (see the module docstring)."""
    return list(FLOAT16_CRASH) if stores_float16(path) else []
