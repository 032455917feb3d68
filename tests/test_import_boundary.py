"""The runtime must never import torch (apps embed it where torch is absent)."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "; import sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_edgeseq_and_runtime_do_not_import_torch():
    mods = _modules_after("import edgeseq, edgeseq.runtime; from edgeseq import Session, EdgeseqError")
    assert "torch" not in mods
    assert "onnx" not in mods  # reading cards and inspecting needs no onnx either


def test_cli_infer_path_does_not_import_torch(tmp_path):
    mods = _modules_after("import edgeseq.cli, edgeseq.runtime.infer, edgeseq.inspect, edgeseq.card")
    assert "torch" not in mods
