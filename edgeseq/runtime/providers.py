"""Map a ``device`` string to ONNX Runtime execution providers, strictly.

``"cpu"`` -> CPU; ``"cuda"`` / ``"cuda:N"`` -> CUDA (error with the reason if it
cannot be used: no silent CPU fallback); ``"auto"`` -> CUDA when usable, else CPU.

>>> resolve_device("cpu").providers
['CPUExecutionProvider']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProviderError

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")
_preloaded = False


@dataclass(frozen=True)
class DeviceChoice:
    """What a ``device`` string resolved to."""

    device: str  # "cpu" or "cuda:N"
    providers: list[Any]  # names or (name, options) tuples, as InferenceSession takes them
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def preload_cuda_libraries() -> str | None:
    """Load pip-installed CUDA/cuDNN libraries (onnxruntime-gpu >= 1.21); return an error text or None."""
    global _preloaded
    if _preloaded:
        return None
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        _preloaded = True
        return None
    try:
        preload()
    except Exception as exc:  # noqa: BLE001 - report whatever the loader said
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    _preloaded = True
    return None


def cuda_unusable_reason() -> str | None:
    """Why CUDA cannot be used here, or None when it can (best effort, without creating a session)."""
    if "CUDAExecutionProvider" not in available_providers():
        return (
            "the installed onnxruntime is the CPU-only build; install the CUDA build with "
            "'pip uninstall -y onnxruntime && pip install \"edgeseq[gpu]\"'"
        )
    err = preload_cuda_libraries()
    if err:
        return f"CUDA libraries could not be loaded ({err}); install them with 'pip install \"onnxruntime-gpu[cuda,cudnn]\"'"
    import ctypes

    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return "no NVIDIA driver found (libcuda.so.1 cannot be loaded); install the GPU driver or use --device cpu"
    return None


def parse_device(device: str) -> tuple[str, int]:
    """Split ``"cuda:1"`` into ``("cuda", 1)``; raise ProviderError on anything unknown."""
    m = _DEVICE_RE.match(str(device).strip().lower())
    if not m:
        raise ProviderError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' "
            f"(available providers: {', '.join(available_providers())})"
        )
    kind, index = m.group(1), int(m.group(2) or 0)
    if kind != "cuda" and m.group(2) is not None:
        raise ProviderError(f"unknown device {device!r}; only 'cuda' takes an index, e.g. 'cuda:1'")
    return kind, index


def resolve_device(device: str = "auto") -> DeviceChoice:
    """Resolve ``device`` to providers, raising :class:`ProviderError` when it cannot be honoured."""
    kind, index = parse_device(device)
    cpu = DeviceChoice("cpu", ["CPUExecutionProvider"], reason="device='cpu'")
    if kind == "cpu":
        return cpu
    reason = cuda_unusable_reason()
    if kind == "auto":
        if reason is None:
            return DeviceChoice(
                "cuda:0",
                [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"],
                reason="auto: CUDA is usable",
            )
        return DeviceChoice("cpu", ["CPUExecutionProvider"], reason=f"auto: CPU because {reason.split(';')[0]}")
    if reason is not None:
        raise ProviderError(f"device={device!r} cannot be used: {reason}")
    return DeviceChoice(
        f"cuda:{index}",
        [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"],
        reason=f"device={device!r}",
    )
