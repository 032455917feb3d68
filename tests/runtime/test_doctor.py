"""``edgeseq doctor``: CPU feature parsing, nvidia-smi parsing, the report and its CLI."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from edgeseq.cli import main
from edgeseq.runtime import doctor

X86_VNNI = "processor\t: 0\nmodel name\t: Intel Xeon Gold\nflags\t\t: fpu sse4_2 avx2 fma avx512f avx512bw avx512_vnni\n"
X86_AVX2 = "model name\t: AMD Ryzen\nflags\t\t: fpu avx avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp\nCPU part\t: 0xd0b\n"


@pytest.mark.parametrize("text, model, best", [
    (X86_VNNI, "Intel Xeon Gold", "AVX-512 VNNI"),
    (X86_AVX2, "AMD Ryzen", "AVX2"),
    (ARM, None, "Arm dot product"),
    ("", None, "unknown (no /proc/cpuinfo)"),
])
def test_cpu_info_reports_best_int8_path(text, model, best):
    info = doctor.cpu_info(text)
    assert info["int8_best"] == best
    if model:
        assert info["model"] == model
    if text == X86_VNNI:
        assert info["flags"]["avx512_vnni"] and not info["flags"]["avx_vnni"] and not info["flags"]["amx_int8"]
    if text == ARM:
        assert info["flags"]["asimddp"] and not info["flags"]["i8mm"] and "avx2" not in info["flags"]


def test_nvidia_smi_output_is_parsed(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, NVIDIA H100 80GB HBM3, 81559, 4, 580.65.06'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpus, note = doctor.nvidia_smi()
    assert note == ""
    assert gpus == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559.0,
                     "memory_used_mib": 4.0, "driver": "580.65.06"}]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert doctor.nvidia_smi() == ([], "nvidia-smi not found")


def test_doctor_json_and_text_agree_with_the_runtime():
    from edgeseq.runtime.providers import available_providers, resolve_device

    runner = CliRunner()
    result = runner.invoke(main, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["onnxruntime"]["providers"] == available_providers()
    assert info["auto"]["reason"] == resolve_device("auto").reason
    assert set(info["packages"]) >= {"numpy", "torch", "onnx"}
    assert info["cuda"]["usable"] == (info["auto"]["device"] != "cpu")
    text = runner.invoke(main, ["doctor"])
    assert text.exit_code == 0
    assert f"device='auto': {info['auto']['reason']}" in text.stdout
    assert "best INT8 path:" in text.stdout and "providers: " in text.stdout


def test_doctor_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from edgeseq.runtime.doctor import collect; collect(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
