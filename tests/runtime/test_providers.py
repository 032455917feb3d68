"""Provider choice on CPU: every CUDA failure reason, simulated by replacing onnxruntime's and ctypes' answers."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime
import pytest

from edgeseq import Session
from edgeseq.errors import ProviderError, ProviderFallbackWarning
from edgeseq.runtime import providers as P

CUDA_BUILD = ["CUDAExecutionProvider", "CPUExecutionProvider"]
ALL_LIBS = {"libcuda.so.1", "libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13", "libcudnn.so.9"}


class FakeDriver:
    """Answers the few CUDA driver API calls providers.py makes, the way libcuda does (through byref)."""

    def __init__(self, devices=(("NVIDIA H100", 80 * 2**30, (9, 0)),), init_rc=0, version=13000):
        self.devices, self.init_rc, self.version = list(devices), init_rc, version

    def cuDriverGetVersion(self, ref):
        ref._obj.value = self.version
        return 0

    def cuInit(self, flags):
        return self.init_rc

    def cuGetErrorName(self, code, ref):
        ref._obj.value = {100: b"CUDA_ERROR_NO_DEVICE"}.get(code, b"CUDA_ERROR_UNKNOWN")
        return 0

    def cuDeviceGetCount(self, ref):
        ref._obj.value = len(self.devices)
        return 0

    def cuDeviceGet(self, ref, i):
        ref._obj.value = i
        return 0

    def cuDeviceGetName(self, buf, size, dev):
        buf.value = self.devices[dev.value][0].encode()
        return 0

    def cuDeviceTotalMem_v2(self, ref, dev):
        ref._obj.value = self.devices[dev.value][1]
        return 0

    def cuDeviceGetAttribute(self, ref, attr, dev):
        ref._obj.value = self.devices[dev.value][2][0 if attr == 75 else 1]
        return 0


@pytest.fixture
def machine(monkeypatch):
    """Configure a simulated machine: machine(providers=..., libs=..., driver=..., preload_output=...)."""
    P.clear_cache()

    def configure(providers=CUDA_BUILD, libs=ALL_LIBS, driver=None, preload_output="", packages=None,
                  cuda_version="13.0"):
        driver = driver or FakeDriver()
        monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(providers))
        monkeypatch.setattr(onnxruntime, "cuda_version", cuda_version, raising=False)
        monkeypatch.setattr(onnxruntime, "preload_dlls", lambda: print(preload_output, end=""), raising=False)
        if packages is not None:
            monkeypatch.setattr(P, "onnxruntime_packages", lambda: packages)

        def load(name):
            if name not in libs:
                raise OSError(f"{name}: cannot open shared object file: No such file or directory")
            return driver if name == "libcuda.so.1" else object()

        monkeypatch.setattr(P, "_load_library", load)
        P.clear_cache()

    yield configure
    P.clear_cache()


def test_cpu_only_package_names_the_package_and_the_fix(machine):
    machine(providers=["CPUExecutionProvider"], packages=[("onnxruntime", "1.32.0")], cuda_version="")
    reason = P.cuda_unusable_reason()
    assert "CPU-only build (onnxruntime 1.32.0)" in reason
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]'" in reason
    with pytest.raises(ProviderError, match=r"device='cuda' cannot be used: the installed onnxruntime is the CPU-only"):
        P.resolve_device("cuda")
    auto = P.resolve_device("auto")
    assert auto.device == "cpu" and auto.reason.startswith("auto chose cpu: the installed onnxruntime is the CPU-only")


def test_both_packages_installed_says_they_conflict(machine):
    machine(providers=["CPUExecutionProvider"], packages=[("onnxruntime", "1.32.0"), ("onnxruntime-gpu", "1.31.1")])
    reason = P.cuda_unusable_reason()
    assert "several onnxruntime packages are installed (onnxruntime 1.32.0, onnxruntime-gpu 1.31.1)" in reason
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]'" in reason


def test_missing_driver(machine):
    machine(libs=ALL_LIBS - {"libcuda.so.1"})
    with pytest.raises(ProviderError, match=r"cannot be used: no NVIDIA driver: libcuda.so.1 cannot be loaded .*nvidia-smi"):
        P.resolve_device("cuda:0")


def test_missing_cuda_and_cudnn_libraries_are_named(machine, capsys):
    complaint = "Failed to load /site/nvidia/cudnn/lib/libcudnn.so.9: cannot open shared object file\n"
    machine(libs=ALL_LIBS - {"libcudnn.so.9", "libcublas.so.13"}, preload_output=complaint)
    status = P.probe_cuda()
    assert status.problems == ((
        "CUDA/cuDNN libraries missing: libcublas.so.13, libcudnn.so.9",
        status.problems[0][1],
    ),)
    assert "pip install 'onnxruntime-gpu[cuda,cudnn]'" in status.reason and "cuDNN 9" in status.reason
    assert capsys.readouterr().out == ""  # preload_dlls' prints are captured, not leaked to stdout


def test_driver_without_device_and_old_driver(machine):
    machine(driver=FakeDriver(init_rc=100))
    assert "cuInit returned CUDA_ERROR_NO_DEVICE (100)" in P.cuda_unusable_reason()
    machine(driver=FakeDriver(version=12040))
    reason = P.cuda_unusable_reason()
    assert "supports CUDA up to 12.4 but onnxruntime was built for CUDA 13.0" in reason
    assert "pip install 'onnxruntime-gpu[cuda,cudnn]>=1.24,<1.27'" in reason  # the last CUDA 12 builds


def test_usable_cuda_devices_and_index_checks(machine):
    two = FakeDriver(devices=[("NVIDIA A", 16 * 2**30, (8, 6)), ("NVIDIA B", 24 * 2**30, (8, 9))])
    machine(driver=two)
    status = P.probe_cuda()
    assert status.usable and status.reason is None and status.driver_cuda == "13.0"
    assert [d.describe() for d in status.devices] == ["cuda:0 NVIDIA A (16.0 GiB, compute 8.6)",
                                                      "cuda:1 NVIDIA B (24.0 GiB, compute 8.9)"]
    auto = P.resolve_device("auto")
    assert auto.device == "cuda:0" and auto.reason == "auto chose cuda:0 (NVIDIA A): CUDA is usable"
    one = P.resolve_device("cuda:1")
    assert one.providers[0] == ("CUDAExecutionProvider", {"device_id": "1", "use_tf32": "0"})
    assert one.ort_device == ("cuda", 1) and one.gpu.name == "NVIDIA B"
    with pytest.raises(ProviderError, match=r"'cuda:2' does not exist: 2 CUDA device\(s\) visible .*cuda:0..cuda:1"):
        P.resolve_device("cuda:2")


@pytest.mark.parametrize("device, match", [("tpu", "unknown device 'tpu'"), ("cpu:1", "only 'cuda' takes an index"),
                                           ("cuda:x", "unknown device 'cuda:x'"), ("", "unknown device ''")])
def test_unknown_device_strings(device, match):
    with pytest.raises(ProviderError, match=match):
        P.resolve_device(device)


def test_silent_ort_fallback_is_caught(machine, exported):
    """ONNX Runtime drops CUDA silently when it cannot start it: explicit cuda raises, auto says why it is on CPU."""
    machine()  # the probe believes CUDA works; the real (CPU) onnxruntime cannot create the provider
    path = exported("stacked_lstm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxruntime's own "provider not available" warning
        with pytest.raises(ProviderError, match=r"device='cuda' cannot be used: ONNX Runtime could not create the CUDA"):
            Session(path, device="cuda")
        s = Session(path, device="auto")
    assert s.device == "cpu" and s.providers == ["CPUExecutionProvider"]
    assert s.device_reason.startswith("auto chose cpu: ONNX Runtime could not create the CUDA provider")


def test_placement_reports_nodes_and_recurrent_fallback(exported):
    s = Session(exported("stacked_lstm"), device="cpu")
    assert s.placement is not None
    assert s.placement.counts()["CPUExecutionProvider"]["LSTM"] == 2
    assert s.placement.recurrent_not_on("CPUExecutionProvider") == []
    off = s.placement.recurrent_not_on("CUDAExecutionProvider")
    assert len(off) == 2 and off[0].startswith("LSTM ") and off[0].endswith("(CPUExecutionProvider)")
    # What a CUDA session with CPU-placed LSTMs gets: a warning when asked explicitly, CPU under auto.
    cuda = P.DeviceChoice("cuda:0", [], requested="cuda")
    with pytest.warns(ProviderFallbackWarning, match="2 recurrent node"):
        assert P.settle_choice(cuda, [P.CUDA_EP, "CPUExecutionProvider"], s.placement) is cuda
    auto = P.settle_choice(P.DeviceChoice("cuda:0", [], requested="auto"), [P.CUDA_EP], s.placement)
    assert auto.device == "cpu" and "2 recurrent node(s) have no CUDA kernel here (LSTM" in auto.reason
    on_gpu = P.Placement((("CUDAExecutionProvider", "LSTM", "l"), ("CPUExecutionProvider", "Shape", "s")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.settle_choice(cuda, [P.CUDA_EP], on_gpu) is cuda  # shape ops on the CPU are fine


def test_unknown_placement_is_said_not_skipped_silently():
    # onnxruntime < 1.24 has no placement record: the CUDA choice stands, and its reason says it was not checked.
    cuda = P.DeviceChoice("cuda:0", [], reason="asked for cuda:0", requested="cuda")
    settled = P.settle_choice(cuda, [P.CUDA_EP, "CPUExecutionProvider"], None)
    assert settled.device == "cuda:0" and settled.reason.startswith("asked for cuda:0; node placement not checked")
    assert "1.24+" in settled.reason


def test_io_binding_path_matches_plain_run(exported):
    path = exported("stacked_lstm")
    x = np.random.default_rng(1).standard_normal((5, 9, 28)).astype(np.float32)
    lengths = np.array([9, 3, 3, 9, 1])
    plain, bound = Session(path, device="cpu"), Session(path, device="cpu", io_binding=True)
    assert not plain.io_binding and bound.io_binding
    np.testing.assert_array_equal(bound.predict(x, batch_size=2), plain.predict(x, batch_size=2))
    np.testing.assert_array_equal(bound.predict(x, lengths=lengths), plain.predict(x, lengths=lengths))


def test_device_reason_on_session_and_cli(exported, tmp_path):
    from click.testing import CliRunner

    from edgeseq.cli import main

    path = exported("gru")
    assert Session(path, device="cpu").device_reason == "cpu requested"
    np.save(tmp_path / "x.npy", np.zeros((2, 5, 12), np.float32))
    result = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "x.npy"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "device: cpu requested" in result.stderr


def test_gpu_bench_exits_cleanly_without_cuda():
    import subprocess
    import sys
    from pathlib import Path

    if P.cuda_unusable_reason() is None:
        pytest.skip("CUDA is usable here: the benchmark would run")
    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_bench.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == ""
    assert out.stderr.startswith("gpu_bench: skipped, CUDA is unusable for onnxruntime: ")
