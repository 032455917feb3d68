"""The transformations themselves, each a thin wrapper over ``onnxruntime.quantization``.

Every function reads a float ONNX file and writes a new file at ``dst``; none touches torch.

* :func:`dynamic` - INT8 weights; LSTM -> ``com.microsoft.DynamicQuantizeLSTM``, MatMul/Gemm ->
  ``MatMulInteger``, embedding ``Gather`` -> int8 table + DequantizeLinear.  ONNX Runtime has no
  quantized GRU/RNN: those stay float32, as do convolutions (``CONV_STAYS_FLOAT``) and layers under
  ``MIN_WEIGHTS``.
* :func:`static` - QDQ with calibrated activation ranges for every Conv/MatMul/Gemm (small ones too:
  that is what was asked for), then the recurrent layers and embeddings as in :func:`dynamic`.
* :func:`fp16` - float16 weights and activations; recurrent nodes compute in float32 (ONNX Runtime's
  CPU LSTM/GRU kernels are float32-only) from float16-stored weights, so the file runs on CPU.

>>> dynamic("m.onnx", "m.int8.onnx", reduce_range=False)       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import QuantizationError, require
from ..subgraphs import names_read

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
UNQUANTIZABLE_RECURRENT = ("GRU", "RNN")  # no integer kernels in ONNX Runtime
# Conv is not in DYNAMIC_OPS: ONNX Runtime's ConvInteger (with its run-time DynamicQuantizeLinear) was
# slower than keeping the Conv float at every size measured -- Conv1d 64->128 k3 (24,576 weights) + LSTM:
# b1x100 171 vs 82 us, b64x100 10.3 vs 4.3 ms; 32->64 (6,144): 152 vs 126 us, 6.4 vs 4.8 ms
# (`python -m bench.experiments conv-int8`).  Static mode quantizes convolutions (QDQ, calibrated).
DYNAMIC_OPS = ("LSTM", "MatMul", "Gemm", "Gather")
CONV_STAYS_FLOAT = "ONNX Runtime's ConvInteger ran 1.2-2.4x slower than float Conv (bench/README.md)"
STATIC_OPS = ("Conv", "MatMul", "Gemm")  # activations calibrated; the rest goes dynamic
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Dynamic mode leaves MatMul/Gemm/Conv layers with fewer weights than this in float: quantizing
# them saves at most 12 KiB of weights but adds quantize/dequantize nodes to every call; on
# msft_cnnlstm (32-weight head, 48-weight conv) keeping them float gave a smaller and faster file
# (docs/quantization.md, "Small layers", measured by scripts/quantize_table.py).
MIN_WEIGHTS = 4096
SMALL_LAYER_OPS = ("MatMul", "Gemm", "Conv")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs advice ("consider pre-processing") and prints calibration chatter."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(previous)


def _ort_quantization() -> Any:
    require("onnx", "quantize")
    import onnxruntime.quantization as q

    return q


def _fail(mode: str, exc: Exception) -> QuantizationError:
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return QuantizationError(f"onnxruntime.quantization could not apply --mode {mode}: {text}")


def dynamic(src: str | Path, dst: str | Path, *, per_channel: bool = False, reduce_range: bool = False,
            op_types: tuple[str, ...] = DYNAMIC_OPS, min_weights: int = MIN_WEIGHTS) -> list[str]:
    """INT8 (signed, symmetric) weights, activations quantized on the fly; returns the layers kept float."""
    q = _ort_quantization()
    onnx = require("onnx", "quantize")
    model = onnx.load(str(src))
    small = _small_layers(model, min_weights) if min_weights else []
    # the quantizer first rewrites Gemm as MatMul (+ Add) named "<gemm>_MatMul"
    exclude = small + [f"{name}_MatMul" for name in small]
    in_loops = _weights_into_loop_bodies(model, op_types)
    try:
        with _quiet():
            q.quantize_dynamic(model, str(dst), op_types_to_quantize=list(op_types), per_channel=per_channel,
                               reduce_range=reduce_range, weight_type=q.QuantType.QInt8, nodes_to_exclude=exclude,
                               extra_options={"EnableSubgraph": True} if in_loops else {})
    except Exception as exc:  # noqa: BLE001 - onnxruntime.quantization raises plain exceptions of many types
        raise _fail("dynamic", exc) from None
    _strip_value_info(dst)
    return small


def _weights_into_loop_bodies(model: Any, op_types: tuple[str, ...]) -> int:
    """Move each weight that only a ``Loop``/``Scan`` body reads into that body, in place; returns how many.

    A scripted loop over time (edgeseq.export.scripted) or a projected LSTM's loop reads its weights
    from the outer graph, where ``onnxruntime.quantization`` does not look when it quantizes a body
    (its LSTM quantizer fails on the missing initializer): inside the body it finds and quantizes them.
    """
    readers: dict[str, set[int]] = {}
    for k, node in enumerate(model.graph.node):
        for name in node.input:
            readers.setdefault(name, set()).add(-1)
        for attr in node.attribute:
            if node.op_type in ("Loop", "Scan") and attr.name == "body":
                for name in names_read(attr.g):
                    readers.setdefault(name, set()).add(k)
    moved = 0
    outputs = {v.name for v in model.graph.output}
    for init in list(model.graph.initializer):
        where = readers.get(init.name, set())
        if len(where) != 1 or -1 in where or init.name in outputs:
            continue
        body = next(a.g for a in model.graph.node[next(iter(where))].attribute if a.name == "body")
        if any(n.op_type in op_types and init.name in n.input for n in body.node):
            body.initializer.append(init)
            model.graph.initializer.remove(init)
            moved += 1
    return moved


def _small_layers(model: Any, min_weights: int) -> list[str]:
    """Names of MatMul/Gemm/Conv nodes whose weight initializer has fewer than ``min_weights`` elements.

    Unnamed nodes get a name (in ``model``, in memory) so they can be excluded.
    """
    sizes = {i.name: _elements(i.dims) for i in model.graph.initializer if len(i.dims) >= 2}
    small = []
    for k, node in enumerate(model.graph.node):
        if node.op_type not in SMALL_LAYER_OPS:
            continue
        weights = [sizes[n] for n in node.input if n in sizes]
        if weights and max(weights) < min_weights:
            node.name = node.name or f"edgeseq_{node.op_type}_{k}"
            small.append(node.name)
    return small


def _elements(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def static(src: str | Path, dst: str | Path, reader: Any, *, method: str = "minmax", per_channel: bool = False,
           reduce_range: bool = False) -> None:
    """QDQ (u8 activations, s8 weights) for Conv/MatMul/Gemm from calibration data; LSTM and
    embeddings then dynamic."""
    q = _ort_quantization()
    if method not in CALIBRATION_METHODS:
        raise QuantizationError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    calib = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
             "percentile": q.CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="edgeseq-static-") as tmp:
        qdq = Path(tmp) / "qdq.onnx"
        try:
            with _quiet():
                q.quantize_static(str(src), str(qdq), reader, quant_format=q.QuantFormat.QDQ,
                                  op_types_to_quantize=list(STATIC_OPS), per_channel=per_channel,
                                  reduce_range=reduce_range, activation_type=q.QuantType.QUInt8,
                                  weight_type=q.QuantType.QInt8, calibrate_method=calib,
                                  extra_options={"CalibTensorRangeSymmetric": False})
        except Exception as exc:  # noqa: BLE001 - as in dynamic()
            raise _fail("static", exc) from None
        # QDQ has no recurrent operator: the LSTM (and embedding tables) get dynamic INT8 weights.
        dynamic(qdq, dst, per_channel=per_channel, reduce_range=reduce_range, op_types=("LSTM", "Gather"),
                min_weights=0)


def fp16(src: str | Path, dst: str | Path) -> None:
    """Float16 weights and activations, inputs/outputs kept float32; recurrent nodes compute in float32."""
    onnx = require("onnx", "quantize")
    saved_path = list(sys.path)
    try:
        # onnxruntime.transformers appends its own folder to sys.path on import; undo that afterwards.
        # onnxruntime.quantization imports modules that resolve only through that entry, so import it
        # inside this block too: once cached, a later import needs no path entry.
        import onnxruntime.quantization  # noqa: F401
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    finally:
        sys.path[:] = saved_path
    try:
        model = onnx.load(str(src))
        if any(n.op_type == "Loop" for n in model.graph.node):
            # the converter casts the loop's carried sequence of steps into an invalid graph
            raise QuantizationError("fp16: the file has a Loop (a loop over time: a projected LSTM or a scripted "
                                    "Python loop), which onnxruntime's float16 converter breaks; use --mode dynamic")
        with _quiet():
            model = convert_float_to_float16(
                model, keep_io_types=True, force_fp16_initializers=True,
                op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(RECURRENT_OPS),
                node_block_list=transpose_matmul_nodes(model),
            )
    except QuantizationError:
        raise
    except Exception as exc:  # noqa: BLE001 - as in dynamic()
        raise _fail("fp16", exc) from None
    onnx.save(model, str(dst))


def transpose_matmul_nodes(model: Any) -> list[str]:
    """Names of ``Transpose`` nodes feeding a ``MatMul``/``Gemm``, and of those consumers.

    In float16 this pair makes ONNX Runtime's CPU session creation crash with a segmentation fault
    (``edgeseq.runtime.workarounds``), so :func:`fp16` leaves them in float32: the file then loads in a
    stock ONNX Runtime as well.  Per-step heads (``fc(lstm_out)``) and attention pooling have the pair.
    """
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"edgeseq_{node.op_type}_{i}"  # the converter blocks nodes by name
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type != "Transpose":
            continue
        heads = [c for c in consumers.get(node.output[0], []) if c.op_type in ("MatMul", "Gemm")]
        if heads:
            names += [node.name, *(c.name for c in heads)]
    return list(dict.fromkeys(names))


def _strip_value_info(path: str | Path) -> None:
    """Drop the intermediate shape annotations the quantizer leaves (~3 KB; ORT infers them again)."""
    onnx = require("onnx", "quantize")
    model = onnx.load(str(path))
    if len(model.graph.value_info):
        del model.graph.value_info[:]
        onnx.save(model, str(path))
