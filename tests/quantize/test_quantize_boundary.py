"""Quantizing needs onnx and onnxruntime, never torch (an edge build box may not have it)."""

from __future__ import annotations

import subprocess
import sys


def test_quantize_package_and_command_do_not_import_torch():
    code = ("import sys, edgeseq.quantize, edgeseq.commands.quantize, edgeseq.quantize.modes; "
            "from edgeseq.quantize.modes import fp16; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fp16_import_leaves_sys_path_alone(tmp_path):
    # onnxruntime.transformers appends its folder to sys.path; modes.fp16 undoes that
    code = ("import sys; before = list(sys.path); from edgeseq.quantize import modes; import onnx; "
            "from onnx import helper, TensorProto; "
            "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', "
            "[helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])], "
            "[helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])]); "
            f"onnx.save(helper.make_model(g), r'{tmp_path}/m.onnx'); "
            f"modes.fp16(r'{tmp_path}/m.onnx', r'{tmp_path}/h.onnx'); print(sys.path == before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
