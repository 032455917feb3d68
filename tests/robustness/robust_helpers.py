"""Helpers shared by the robustness tests (imported by name: conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def leftovers(folder: Path, stem: str = "out") -> list[str]:
    """Output files (or their temporary files) named after ``stem`` in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((stem + ".", "." + stem + ".")))


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m edgeseq.cli ARGS`` as a real process, from the repository root."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgeseq.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full_env)


def write_external_model(folder: Path, location: str, data_file: str | None = "weights.bin",
                         where: str = "initializer") -> Path:
    """An ONNX file y = x @ w (x: (batch, 4)) whose ``w`` lives in external data at ``location``.

    ``where`` puts the tensor in a graph initializer, a Constant node's attribute, or an If subgraph.
    """
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    w = np.eye(4, dtype=np.float32)
    if data_file is not None:
        (folder / data_file).write_bytes(w.tobytes())
    tensor = numpy_helper.from_array(w, "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(w.nbytes))):
        tensor.external_data.add(key=key, value=value)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    initializers: list = []
    if where == "initializer":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        initializers = [tensor]
    elif where == "constant":
        nodes = [helper.make_node("Constant", [], ["w"], value=tensor), helper.make_node("MatMul", ["x", "w"], ["y"])]
    else:  # an If whose branches read w
        branch_out = helper.make_tensor_value_info("wb", TensorProto.FLOAT, [4, 4])
        then = helper.make_graph([helper.make_node("Identity", ["w"], ["wb"])], "then", [], [branch_out], [tensor])
        other = helper.make_graph([helper.make_node("Identity", ["w"], ["wb"])], "else", [], [branch_out], [tensor])
        cond = numpy_helper.from_array(np.array(True), "cond")
        nodes = [helper.make_node("If", ["cond"], ["wsel"], then_branch=then, else_branch=other),
                 helper.make_node("MatMul", ["x", "wsel"], ["y"])]
        initializers = [cond]
    graph = helper.make_graph(nodes, "g", [x], [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path
