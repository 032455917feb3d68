"""The hardware bound: multiply-adds per time step of a file's recurrent layers, and the machine's
measured rate for matrix products of the same shapes.

Reads the graph with edgeseq's small protobuf walker (no onnx needed).  The rate comes from a
single matrix product timed in ONNX Runtime (MLAS, the library the runtime uses) and in numpy
(its BLAS, run in a child process so its thread count can be pinned); the faster one counts as
the machine's peak for that work.

>>> info = recurrent_macs("model.onnx")       # doctest: +SKIP
>>> info.per_step                              # multiply-adds per sample per time step
131072
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..card import _iter_fields
from ..errors import ModelFileError

# op type -> (index of W, index of R); W/R shapes: [dirs, gates*H, I] / [dirs, gates*H, H]
# (DynamicQuantizeLSTM stores them transposed: [dirs, I, 4H] / [dirs, H, 4H]; the products agree)
_RECURRENT = {"LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2), "com.microsoft::DynamicQuantizeLSTM": (1, 2)}


@dataclass
class RecurrentLayer:
    op: str
    w_shape: list[int]
    r_shape: list[int]

    @property
    def hidden(self) -> int:
        return int(min(self.r_shape[1:]))

    @property
    def gates_hidden(self) -> int:
        return int(max(self.r_shape[1:]))

    @property
    def inputs(self) -> int:
        return int(math.prod(self.w_shape) // (self.w_shape[0] * self.gates_hidden))

    @property
    def macs(self) -> int:
        """Multiply-adds per sample per time step: input and recurrent matrices, all directions."""
        return int(math.prod(self.w_shape) + math.prod(self.r_shape))


@dataclass
class MacInfo:
    layers: list[RecurrentLayer] = field(default_factory=list)

    @property
    def per_step(self) -> int:
        """Multiply-adds per sample per time step, input and recurrent matrices of every layer."""
        return sum(layer.macs for layer in self.layers)

    @property
    def input_per_step(self) -> int:
        return sum(math.prod(layer.w_shape) for layer in self.layers)

    @property
    def recurrent_per_step(self) -> int:
        return sum(math.prod(layer.r_shape) for layer in self.layers)

    def largest(self) -> RecurrentLayer | None:
        return max(self.layers, key=lambda layer: layer.macs, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"per_step": self.per_step, "input_per_step": self.input_per_step,
                "recurrent_per_step": self.recurrent_per_step,
                "layers": [{**asdict(layer), "macs": layer.macs, "inputs": layer.inputs, "hidden": layer.hidden,
                            "gates_x_hidden": layer.gates_hidden} for layer in self.layers]}


def _dims(tensor: bytes | memoryview) -> tuple[str, list[int]]:
    name, dims = "", []
    for f, wire, value in _iter_fields(tensor):
        if f == 1 and wire == 0:
            dims.append(int(value))
        elif f == 1 and wire == 2:  # packed
            pos, buf = 0, bytes(value)
            while pos < len(buf):
                from ..card import _read_varint

                v, pos = _read_varint(buf, pos)
                dims.append(v)
        elif f == 8 and wire == 2:
            name = bytes(value).decode()
    return name, dims


def recurrent_macs(path: str | Path) -> MacInfo:
    """Recurrent layers of an ONNX file with their weight shapes and multiply-adds per step."""
    data = memoryview(Path(path).read_bytes())
    shapes: dict[str, list[int]] = {}
    nodes: list[tuple[str, list[str]]] = []
    try:
        for f, wire, graph in _iter_fields(data):
            if f != 7 or wire != 2:
                continue
            for gf, gwire, value in _iter_fields(graph):
                if gf == 5 and gwire == 2:  # initializer
                    name, dims = _dims(value)
                    shapes[name] = dims
                elif gf == 1 and gwire == 2:  # node
                    op, domain, inputs, outputs, const = "", "", [], [], None
                    for nf, nwire, nv in _iter_fields(value):
                        if nf == 1 and nwire == 2:
                            inputs.append(bytes(nv).decode())
                        elif nf == 2 and nwire == 2:
                            outputs.append(bytes(nv).decode())
                        elif nf == 4 and nwire == 2:
                            op = bytes(nv).decode()
                        elif nf == 7 and nwire == 2:
                            domain = bytes(nv).decode()
                        elif nf == 5 and nwire == 2:  # attribute: a Constant's tensor
                            for af, awire, av in _iter_fields(nv):
                                if af == 5 and awire == 2:
                                    const = _dims(av)[1]
                    if op == "Constant" and const is not None and outputs:
                        shapes[outputs[0]] = const
                    key = f"{domain}::{op}" if domain and domain != "ai.onnx" else op
                    nodes.append((key, inputs))
    except (ValueError, UnicodeDecodeError):
        raise ModelFileError(f"{path}: not a valid ONNX file (truncated or corrupt)") from None
    info = MacInfo()
    for key, inputs in nodes:
        if key not in _RECURRENT:
            continue
        wi, ri = _RECURRENT[key]
        w = shapes.get(inputs[wi]) if len(inputs) > wi else None
        r = shapes.get(inputs[ri]) if len(inputs) > ri else None
        if w and r:
            info.layers.append(RecurrentLayer(key, list(w), list(r)))
    return info


_NUMPY_BENCH = """
import json, sys, time, numpy as np
m, k, n, reps = map(int, sys.argv[1:5])
stack = max(1, reps)  # independent (m x k) @ (k x n) products in one call: no per-call overhead
rng = np.random.default_rng(0)
x = rng.standard_normal((stack, m, k)).astype(np.float32); w = rng.standard_normal((k, n)).astype(np.float32)
out = np.empty((stack, m, n), np.float32)
for _ in range(5): np.matmul(x, w, out=out)
best = []
for _ in range(15):
    t = time.perf_counter()
    np.matmul(x, w, out=out)
    best.append((time.perf_counter() - t) / stack)
print(json.dumps(min(best)))
"""


def _numpy_seconds(m: int, k: int, n: int, threads: int, reps: int) -> float | None:
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    try:
        out = subprocess.run([sys.executable, "-c", _NUMPY_BENCH, str(m), str(k), str(n), str(reps)],
                             capture_output=True, text=True, env=env, timeout=120, check=True)
        return float(out.stdout.strip())
    except (subprocess.SubprocessError, ValueError, OSError):
        return None


def _ort_seconds(m: int, k: int, n: int, threads: int, reps: int) -> float | None:
    try:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    import time

    import onnxruntime as ort

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((m, k)).astype(np.float32)
    for _ in range(20):
        sess.run(None, {"x": x})
    best = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(reps):
            sess.run(None, {"x": x})
        best.append((time.perf_counter() - t) / reps)
    return min(best)


@dataclass
class Peak:
    """Measured multiply-adds per second for an (m x k) @ (k x n) float32 product (best of 7 or 15
    timed rounds: a peak is what the machine can do, so load from other processes should not lower it)."""

    m: int
    k: int
    n: int
    threads: int
    macs_per_s: float
    source: str
    candidates: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matmul_peak(m: int, k: int, n: int, threads: int = 1) -> Peak:
    """The machine's rate for one float32 product of this shape (best of ONNX Runtime and numpy)."""
    macs = m * k * n
    reps = max(20, min(2000, int(2e7 / max(macs, 1))))
    timings = {"onnxruntime-mlas": _ort_seconds(m, k, n, threads, reps),
               "numpy-blas": _numpy_seconds(m, k, n, threads, reps)}
    rates = {name: (macs / s if s else None) for name, s in timings.items()}
    best = max(((r, name) for name, r in rates.items() if r), default=(math.nan, "none"))
    return Peak(m, k, n, threads, best[0], best[1], rates)


def measure_peaks(macs: MacInfo, batch_sizes: list[int] | tuple[int, ...], threads: int = 1) -> dict[str, Peak]:
    """Rates for the model's largest layer: the recurrent product at each batch size (sequential,
    one step at a time) and the input product, which runtimes do for all steps at once ("input")."""
    layer = macs.largest()
    if layer is None:
        return {}
    peaks = {str(b): matmul_peak(b, layer.hidden, layer.gates_hidden, threads) for b in batch_sizes}
    peaks["input"] = matmul_peak(256, max(layer.inputs, layer.hidden), layer.gates_hidden, threads)
    return peaks


def bound_seconds(macs: MacInfo | None, peaks: dict[str, Peak], batch: int, length: int) -> float | None:
    """Seconds the recurrent layers' arithmetic needs at the measured rates: input products as one
    large product over all steps, recurrent products step by step at this batch size."""
    rec, inp = peaks.get(str(batch)), peaks.get("input")
    if not macs or not macs.layers or rec is None or inp is None:
        return None
    if not (math.isfinite(rec.macs_per_s) and math.isfinite(inp.macs_per_s)):
        return None
    return batch * length * (macs.input_per_step / inp.macs_per_s + macs.recurrent_per_step / rec.macs_per_s)
