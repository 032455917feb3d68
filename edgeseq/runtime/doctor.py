"""``edgeseq doctor``: what this machine offers edgeseq (versions, providers, CPU INT8 features, GPUs).

Never imports torch (versions come from package metadata), so it also works where torch is absent.

>>> info = collect()
>>> info["auto"]["device"] in ("cpu", "cuda:0")
True
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# Instruction-set features that decide which INT8 kernels ONNX Runtime (MLAS) can use, best first.
INT8_FEATURES: list[tuple[str, tuple[str, ...]]] = [
    ("AMX", ("amx_int8", "amx_tile")),
    ("AVX-512 VNNI", ("avx512_vnni",)),
    ("AVX-VNNI", ("avx_vnni",)),
    ("AVX-512", ("avx512f", "avx512bw")),
    ("AVX2", ("avx2",)),
    ("Arm i8mm", ("i8mm",)),
    ("Arm dot product", ("asimddp",)),
    ("Arm NEON", ("asimd",)),
]
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "sve", "fphp")
PACKAGES = ("numpy", "onnx", "onnxscript", "torch", "click", "openvino", "keras")


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """CPU model, core count and INT8-relevant flags (from /proc/cpuinfo where there is one)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    model = model or _board_model() or platform.processor() or platform.machine()
    best = next((label for label, need in INT8_FEATURES if all(f in flags for f in need)), None)
    return {
        "model": model,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "flags": {f: f in flags for f in (ARM_FLAGS if "asimd" in flags else X86_FLAGS)} if flags else {},
        "int8_best": best or ("unknown (no /proc/cpuinfo)" if not flags else "none (plain SIMD only)"),
    }


def _board_model() -> str:
    try:  # Raspberry Pi, Jetson and other device-tree boards name themselves here
        return Path("/sys/firmware/devicetree/base/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return ""


def nvidia_smi() -> tuple[list[dict[str, Any]], str]:
    """GPUs as nvidia-smi lists them, and a note ('' when it ran)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], "nvidia-smi not found"
    query = "index,name,memory.total,memory.used,driver_version"
    try:
        out = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi failed: {exc}"
    if out.returncode != 0:
        return [], f"nvidia-smi failed: {(out.stderr or out.stdout).strip().splitlines()[:1]}"
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            idx, name, total, used, driver = parts
            gpus.append({"index": int(idx) if idx.isdigit() else idx, "name": name,
                         "memory_total_mib": _num(total), "memory_used_mib": _num(used), "driver": driver})
    return gpus, ""


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def collect() -> dict[str, Any]:
    """Everything ``edgeseq doctor`` reports, as a JSON-ready dict."""
    from .. import __version__

    info: dict[str, Any] = {
        "edgeseq": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "cpu": cpu_info(),
    }
    try:  # what `edgeseq quantize` would decide for INT8 on this CPU (reduce_range), when it is installed
        from ..quantize.cpu import int8_cpu_settings

        info["cpu"]["int8_quantize"] = int8_cpu_settings().reason
    except ImportError:
        pass
    gpus, smi_note = nvidia_smi()
    info["gpus"] = gpus
    info["nvidia_smi"] = smi_note or "ok"
    try:
        import onnxruntime as ort
    except Exception as exc:  # noqa: BLE001 - a broken install is exactly what doctor must report
        info["onnxruntime"] = {"error": f"onnxruntime cannot be imported: {str(exc).strip()[:300]}"}
        info["auto"] = {"device": None, "reason": "onnxruntime cannot be imported; pip install --force-reinstall onnxruntime"}
        return info
    from . import providers

    status = providers.probe_cuda()
    info["onnxruntime"] = {
        "version": ort.__version__,
        "packages": [f"{n} {v}" for n, v in providers.onnxruntime_packages()],
        "build": providers.build_flavour(),
        "providers": providers.available_providers(),
    }
    info["cuda"] = status.to_dict()
    if not gpus and status.devices:
        info["gpus"] = [{"index": d.index, "name": d.name, "memory_total_mib": round(d.memory_bytes / 2**20),
                         "compute": d.capability} for d in status.devices]
    choice = providers.resolve_device("auto")
    info["auto"] = {"device": choice.device, "reason": choice.reason}
    return info


def format_report(info: dict[str, Any]) -> str:
    """The human-readable report printed by ``edgeseq doctor``."""
    lines = [f"edgeseq {info['edgeseq']} · Python {info['python']} · {info['platform']}"]
    pk = ", ".join(f"{n} {v}" for n, v in info["packages"].items() if v)
    missing = [n for n, v in info["packages"].items() if not v]
    lines.append(f"packages: {pk}" + (f" (not installed: {', '.join(missing)})" if missing else ""))
    ort = info.get("onnxruntime", {})
    if "error" in ort:
        lines.append(f"onnxruntime: {ort['error']}")
    else:
        lines.append(f"onnxruntime {ort['version']}: {ort['build']} build ({'; '.join(ort['packages']) or 'package unknown'})")
        lines.append(f"providers: {', '.join(ort['providers'])}")
    cpu = info["cpu"]
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in cpu["flags"].items())
    lines.append(f"CPU: {cpu['model']} ({cpu['machine']}, {cpu['cores']} cores); best INT8 path: {cpu['int8_best']}")
    if flags:
        lines.append(f"  flags: {flags}")
    if cpu.get("int8_quantize"):
        lines.append(f"  INT8 quantization here: {cpu['int8_quantize']}")
    if info["gpus"]:
        for g in info["gpus"]:
            mem = f"{g['memory_total_mib'] / 1024:.1f} GiB" if g.get("memory_total_mib") else "? GiB"
            used = f", {g['memory_used_mib'] / 1024:.1f} GiB used" if g.get("memory_used_mib") is not None else ""
            drv = f", driver {g['driver']}" if g.get("driver") else ""
            lines.append(f"GPU {g['index']}: {g['name']} ({mem}{used}{drv})")
    else:
        lines.append(f"GPU: none found ({info['nvidia_smi']})")
    cuda = info.get("cuda")
    if cuda is not None:
        if cuda["usable"]:
            lines.append(f"CUDA: usable (onnxruntime built for CUDA {cuda['build_cuda'] or '?'}, driver supports {cuda['driver_cuda'] or '?'})")
        else:
            lines.append("CUDA: not usable")
            lines += [f"  - {p['problem']}\n    fix: {p['fix']}" for p in cuda["problems"]]
        lines += [f"  note: {n}" for n in cuda["notes"]]
    auto = info["auto"]
    lines.append(f"device='auto': {auto['reason']}")
    return "\n".join(lines)
