"""Known ONNX Runtime crashes are kept away from edgeseq's sessions and from the files it writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeseq.quantize import quantize
from edgeseq.runtime.workarounds import disabled_optimizers, stores_float16

STOCK_LOAD = "import sys, onnxruntime as o; o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"


def _transpose_matmul(path: Path, float16: bool) -> Path:
    """Transpose -> MatMul in float16: what a per-step head (fc(lstm_out)) becomes under a naive conversion."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype, np_dtype = (TensorProto.FLOAT16, np.float16) if float16 else (TensorProto.FLOAT, np.float32)
    weight = numpy_helper.from_array(np.random.default_rng(0).random((8, 3)).astype(np_dtype), "W")
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]), helper.make_node("MatMul", ["t", "W"], ["y"])],
        "g", [helper.make_tensor_value_info("x", dtype, ["seq", "batch", 8])],
        [helper.make_tensor_value_info("y", dtype, ["batch", "seq", 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _loads_in(code: str, path: Path) -> int:
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=120).returncode


def test_float16_files_are_recognised_from_their_weights(tmp_path):
    assert stores_float16(_transpose_matmul(tmp_path / "h.onnx", float16=True))
    assert disabled_optimizers(tmp_path / "h.onnx") == ["NchwcTransformer"]
    assert not stores_float16(_transpose_matmul(tmp_path / "f.onnx", float16=False))
    assert disabled_optimizers(tmp_path / "f.onnx") == []
    assert not stores_float16(tmp_path / "missing.onnx")


def test_a_float16_file_that_crashes_stock_onnxruntime_runs_in_a_session(tmp_path):
    path = _transpose_matmul(tmp_path / "h.onnx", float16=True)
    if _loads_in(STOCK_LOAD, path) >= 0:
        pytest.skip("this ONNX Runtime no longer crashes on float16 Transpose -> MatMul (microsoft/onnxruntime#28392)")
    code = ("import sys, numpy as np; from edgeseq import Session; "
            "y = Session(sys.argv[1]).run({'x': np.ones((5, 2, 8), np.float16)}); print(y['y'].shape)")
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "(2, 5, 3)" in run.stdout, run.stderr


class _PerStepHead(torch.nn.Module):
    """fc over every LSTM step: Transpose -> MatMul in the exported graph."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out)


def test_fp16_files_load_in_a_stock_onnxruntime_and_keep_parity(tmp_path):
    from edgeseq.export import check, export

    torch.manual_seed(0)
    model = _PerStepHead().eval()
    src, out = tmp_path / "m.onnx", tmp_path / "m.fp16.onnx"
    export(model, src, input_shape=(1, 12, 4))
    quantize(src, out, mode="fp16")
    assert stores_float16(out)
    assert _loads_in(STOCK_LOAD, out) == 0
    report = check(out, model, batch_sizes=[1, 3], lengths=[1, 30])
    assert report.passed, [c.note for c in report.failures]
