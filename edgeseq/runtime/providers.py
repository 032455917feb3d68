"""Map a ``device`` string to ONNX Runtime execution providers, strictly and observably.

``"cpu"`` -> CPU.  ``"cuda"`` / ``"cuda:N"`` -> CUDA, or a :class:`ProviderError` naming the
exact reason it cannot be used (CPU-only onnxruntime package, no driver, CUDA/cuDNN
libraries missing, no such device): never a silent CPU fallback.  ``"auto"`` -> CUDA when
usable, else CPU, and :attr:`DeviceChoice.reason` says which and why.

>>> resolve_device("cpu").providers
['CPUExecutionProvider']
>>> probe_cuda().usable          # doctest: +SKIP
False
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ProviderError, ProviderFallbackWarning

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
CUDNN_MAJOR = 9  # every onnxruntime-gpu since 1.19 is built against cuDNN 9
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"})
# Both packages own the same files, so the CPU one must go first (edgeseq's own requirement on
# `onnxruntime` would bring it back with `pip install 'edgeseq[gpu]'`; see docs/gpu.md).
GPU_FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]'"
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")
_CU_DEVICE_ATTRIBUTE_CC_MAJOR, _CU_DEVICE_ATTRIBUTE_CC_MINOR = 75, 76
_cache: dict[str, Any] = {}


# -- what is installed ------------------------------------------------------------------------
def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def _load_library(name: str) -> Any:
    """``ctypes.CDLL`` (a seam: tests replace it to simulate missing drivers and libraries)."""
    return ctypes.CDLL(name)


def available_providers() -> list[str]:
    return list(_ort().get_available_providers())


def onnxruntime_packages() -> list[tuple[str, str]]:
    """Installed distributions that provide the ``onnxruntime`` module, e.g. [('onnxruntime-gpu', '1.31.1')]."""
    # Reads the *.dist-info folder names on sys.path instead of importlib.metadata: importing that and
    # parsing every installed package's METADATA cost ~130 ms of each `edgeseq infer` start (device=auto
    # on a CPU-only build asks this for its reason text); this takes ~1 ms.
    found = set()
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            low = folder.lower()
            if not low.endswith(".dist-info") or not low.startswith(("onnxruntime", "ort_", "ort-")):
                continue
            name, _, version = low[: -len(".dist-info")].partition("-")
            name = name.replace("_", "-")
            if name == "onnxruntime" or name.startswith(("onnxruntime-", "ort-")):
                if name not in ("onnxruntime-extensions", "onnxruntime-genai", "onnxruntime-tools"):
                    found.add((name, version))
    return sorted(found)


def build_cuda_version() -> str:
    """CUDA version the installed onnxruntime was built with ('' for CPU-only builds)."""
    return str(getattr(_ort(), "cuda_version", "") or "")


def build_flavour() -> str:
    """'cuda' when the installed onnxruntime offers CUDAExecutionProvider, else 'cpu' (or the EP it offers)."""
    avail = available_providers()
    if CUDA_EP in avail:
        return f"cuda {build_cuda_version()}".strip()
    extra = [p.replace("ExecutionProvider", "") for p in avail if p not in (CPU_EP, "AzureExecutionProvider")]
    return "cpu" + (f" (+{', '.join(extra)})" if extra else "")


# -- CUDA probing -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuDevice:
    """A CUDA device as the driver reports it."""

    index: int
    name: str
    memory_bytes: int
    capability: str = ""

    def describe(self) -> str:
        cc = f", compute {self.capability}" if self.capability else ""
        return f"cuda:{self.index} {self.name} ({self.memory_bytes / 2**30:.1f} GiB{cc})"


@dataclass(frozen=True)
class CudaStatus:
    """Whether CUDA can be used here; when not, each problem with its fix."""

    problems: tuple[tuple[str, str], ...] = ()  # (what is wrong, how to fix it)
    devices: tuple[GpuDevice, ...] = ()
    driver_cuda: str = ""  # highest CUDA version the driver supports, e.g. "13.0"
    build_cuda: str = ""  # CUDA version onnxruntime was built with
    notes: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str | None:
        """One line: every problem and its fix, or None when CUDA is usable."""
        if not self.problems:
            return None
        return "; ".join(f"{what} (fix: {fix})" for what, fix in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "usable": self.usable,
            "problems": [{"problem": p, "fix": f} for p, f in self.problems],
            "devices": [d.__dict__ for d in self.devices],
            "driver_cuda": self.driver_cuda,
            "build_cuda": self.build_cuda,
            "notes": list(self.notes),
        }


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def preload_cuda_libraries() -> list[str]:
    """Load pip-installed CUDA/cuDNN libraries once (``onnxruntime.preload_dlls``); return its complaints.

    ``preload_dlls`` prints ``Failed to load ...`` instead of raising, so its output is captured.
    """
    if "preload" in _cache:
        return _cache["preload"]
    preload = getattr(_ort(), "preload_dlls", None)
    complaints: list[str] = []
    if preload is not None:
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                preload()
        except Exception as exc:  # noqa: BLE001 - a bad directory etc.; report what it said
            complaints.append(f"onnxruntime.preload_dlls() failed: {_first_line(exc)}")
        complaints += [ln.strip() for ln in out.getvalue().splitlines() if ln.strip().startswith("Failed to load")]
    _cache["preload"] = complaints
    return complaints


def required_cuda_libraries(build_cuda: str) -> list[str]:
    """Shared libraries the CUDA provider cannot start without, for a build against CUDA ``build_cuda``."""
    major = build_cuda.split(".")[0]
    if not major.isdigit():
        return []
    if sys.platform == "win32":
        return [f"cudart64_{major}.dll", f"cublasLt64_{major}.dll", f"cublas64_{major}.dll", f"cudnn64_{CUDNN_MAJOR}.dll"]
    return [f"libcudart.so.{major}", f"libcublasLt.so.{major}", f"libcublas.so.{major}", f"libcudnn.so.{CUDNN_MAJOR}"]


def _missing_libraries(names: list[str]) -> list[str]:
    missing = []
    for name in names:
        try:
            _load_library(name)
        except OSError:
            missing.append(name)
    return missing


def _cu_error(lib: Any, code: int) -> str:
    name = ctypes.c_char_p()
    try:
        if lib.cuGetErrorName(code, ctypes.byref(name)) == 0 and name.value:
            return f"{name.value.decode()} ({code})"
    except (AttributeError, OSError):
        pass
    return f"CUDA driver error {code}"


def _query_driver(lib: Any) -> tuple[str, list[GpuDevice], str | None]:
    """(driver CUDA version, devices, error) through the CUDA driver API in ``lib`` (libcuda)."""
    version = ctypes.c_int(0)
    driver_cuda = ""
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value:
        driver_cuda = f"{version.value // 1000}.{version.value % 1000 // 10}"
    rc = lib.cuInit(0)
    if rc != 0:
        return driver_cuda, [], f"the NVIDIA driver cannot initialise CUDA: cuInit returned {_cu_error(lib, rc)}"
    count = ctypes.c_int(0)
    rc = lib.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0:
        return driver_cuda, [], f"the NVIDIA driver cannot count devices: {_cu_error(lib, rc)}"
    devices = []
    for i in range(count.value):
        dev, buf, mem = ctypes.c_int(0), ctypes.create_string_buffer(256), ctypes.c_size_t(0)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        lib.cuDeviceGet(ctypes.byref(dev), i)
        lib.cuDeviceGetName(buf, 256, dev)
        lib.cuDeviceTotalMem_v2(ctypes.byref(mem), dev)
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_DEVICE_ATTRIBUTE_CC_MAJOR, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_DEVICE_ATTRIBUTE_CC_MINOR, dev)
        cc = f"{major.value}.{minor.value}" if major.value else ""
        devices.append(GpuDevice(i, buf.value.decode(errors="replace") or f"device {i}", int(mem.value), cc))
    return driver_cuda, devices, None


def _package_problem(avail: list[str]) -> tuple[str, str]:
    pkgs = onnxruntime_packages()
    listed = ", ".join(f"{n} {v}" for n, v in pkgs) or "none found by pip"
    if len(pkgs) > 1:
        names = sorted({n for n, _ in pkgs} | {"onnxruntime", "onnxruntime-gpu"})
        return (f"several onnxruntime packages are installed ({listed}) and overwrite each other's files",
                f"pip uninstall -y {' '.join(names)} && pip install 'onnxruntime-gpu[cuda,cudnn]'")
    if any("gpu" in n for n, _ in pkgs):
        return (f"{listed} is installed but offers no CUDAExecutionProvider (available: {', '.join(avail)})",
                "pip install --force-reinstall 'onnxruntime-gpu[cuda,cudnn]'")
    return (f"the installed onnxruntime is the CPU-only build ({listed})", GPU_FIX)


def probe_cuda(refresh: bool = False) -> CudaStatus:
    """Find out, without creating a session, whether CUDA can be used and why not (cached).

    >>> status = probe_cuda()
    >>> status.usable or bool(status.reason)
    True
    """
    if not refresh and "status" in _cache:
        return _cache["status"]
    if refresh:
        _cache.clear()
    avail = available_providers()
    build = build_cuda_version()
    if CUDA_EP not in avail:
        status = CudaStatus(problems=(_package_problem(avail),), build_cuda=build)
        _cache["status"] = status
        return status
    notes: list[str] = []
    pkgs = onnxruntime_packages()
    if len(pkgs) > 1:
        names = ", ".join(n for n, _ in pkgs)
        notes.append(f"several onnxruntime packages are installed ({names}); keep only onnxruntime-gpu")
    driver_cuda, devices, problems = _driver_problems(build)
    complaints = preload_cuda_libraries()
    missing = _missing_libraries(required_cuda_libraries(build))
    if missing:
        problems.append((f"CUDA/cuDNN libraries missing: {', '.join(missing)}",
                         f"pip install 'onnxruntime-gpu[cuda,cudnn]' (NVIDIA's pip packages), or install "
                         f"CUDA {build or '(matching)'} and cuDNN {CUDNN_MAJOR} and add them to LD_LIBRARY_PATH"))
    elif complaints:
        notes.extend(complaints)
    status = CudaStatus(tuple(problems), tuple(devices), driver_cuda, build, tuple(notes))
    _cache["status"] = status
    return status


def _driver_problems(build: str) -> tuple[str, list[GpuDevice], list[tuple[str, str]]]:
    """(driver CUDA version, devices, problems) from the NVIDIA driver library."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        lib = _load_library(name)
    except OSError as exc:
        return "", [], [(f"no NVIDIA driver: {name} cannot be loaded ({_first_line(exc)})",
                         "install the NVIDIA driver so that nvidia-smi works (in containers: run with --gpus), "
                         "or use device='cpu'")]
    driver_cuda, devices, err = _query_driver(lib)
    problems = []
    if err:
        problems.append((err, "check nvidia-smi and CUDA_VISIBLE_DEVICES, or use device='cpu'"))
    elif not devices:
        problems.append(("the NVIDIA driver reports no CUDA device", "check nvidia-smi and CUDA_VISIBLE_DEVICES"))
    if driver_cuda and build and _major(driver_cuda) < _major(build):
        problems.append((f"the NVIDIA driver supports CUDA up to {driver_cuda} but onnxruntime was built for CUDA {build}",
                         f"update the NVIDIA driver to one for CUDA {_major(build)}, or "
                         + _older_build_fix(_major(driver_cuda))))
    return driver_cuda, devices, problems


# onnxruntime-gpu releases on PyPI by the CUDA major version they are built for (read from each wheel's
# nvidia-* requirements); 1.24 is edgeseq's floor because it is the first that reports node placement.
CUDA_BUILDS = {12: ">=1.24,<1.27", 13: ">=1.27"}


def _older_build_fix(driver_major: int) -> str:
    spec = CUDA_BUILDS.get(driver_major)
    if spec is None:
        return f"install an onnxruntime-gpu built for CUDA {driver_major}"
    return f"install the CUDA {driver_major} build: pip install 'onnxruntime-gpu[cuda,cudnn]{spec}'"


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def cuda_unusable_reason() -> str | None:
    """Why CUDA cannot be used here (every problem with its fix), or None when it can."""
    return probe_cuda().reason


def clear_cache() -> None:
    """Forget probe results (after installing drivers or packages in a running process; tests)."""
    _cache.clear()


# -- device strings -> providers --------------------------------------------------------------
@dataclass(frozen=True)
class DeviceChoice:
    """What a ``device`` string resolved to, and why."""

    device: str  # "cpu" or "cuda:N"
    providers: list[Any]  # names or (name, options) tuples, as InferenceSession takes them
    reason: str = ""
    requested: str = ""  # what was asked: "auto", "cpu", "cuda:1"
    gpu: GpuDevice | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def index(self) -> int:
        return int(self.device.split(":")[1]) if ":" in self.device else 0

    @property
    def ort_device(self) -> tuple[str, int]:
        """(device_type, device_id) as IOBinding / OrtValue take them."""
        return ("cuda", self.index) if self.is_cuda else ("cpu", 0)


def cuda_provider_options(index: int) -> dict[str, str]:
    """CUDA provider options: the device, and TF32 off so float32 keeps float32 parity."""
    return {"device_id": str(index), "use_tf32": "0"}


def parse_device(device: str) -> tuple[str, int | None]:
    """Split ``"cuda:1"`` into ``("cuda", 1)``; raise ProviderError on anything unknown."""
    m = _DEVICE_RE.match(str(device).strip().lower())
    if not m:
        raise ProviderError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' "
            f"(available providers: {', '.join(available_providers())})"
        )
    kind, index = m.group(1), m.group(2)
    if kind != "cuda" and index is not None:
        raise ProviderError(f"unknown device {device!r}; only 'cuda' takes an index, e.g. 'cuda:1'")
    return kind, int(index) if index is not None else None


def _cpu(reason: str, requested: str) -> DeviceChoice:
    return DeviceChoice("cpu", [CPU_EP], reason=reason, requested=requested)


def _cuda(index: int, reason: str, requested: str, gpu: GpuDevice | None) -> DeviceChoice:
    return DeviceChoice(f"cuda:{index}", [(CUDA_EP, cuda_provider_options(index)), CPU_EP],
                        reason=reason, requested=requested, gpu=gpu)


def resolve_device(device: str = "auto") -> DeviceChoice:
    """Resolve ``device`` to providers, raising :class:`ProviderError` when it cannot be honoured.

    >>> resolve_device("auto").reason          # doctest: +SKIP
    'auto chose cpu: the installed onnxruntime is the CPU-only build (onnxruntime 1.32.0)'
    """
    kind, index = parse_device(device)
    requested = str(device).strip().lower()
    if kind == "cpu":
        return _cpu("cpu requested", requested)
    status = probe_cuda()
    if kind == "auto":
        if status.usable:
            gpu = status.devices[0] if status.devices else None
            return _cuda(0, f"auto chose cuda:0{' (' + gpu.name + ')' if gpu else ''}: CUDA is usable", requested, gpu)
        return _cpu(f"auto chose cpu: {status.problems[0][0]}", requested)
    if not status.usable:
        raise ProviderError(f"device={device!r} cannot be used: {status.reason}")
    index = index or 0
    if status.devices and index >= len(status.devices):
        listed = ", ".join(d.describe() for d in status.devices)
        raise ProviderError(f"device={device!r} does not exist: {len(status.devices)} CUDA device(s) visible ({listed}); "
                            f"use cuda:0..cuda:{len(status.devices) - 1} or check CUDA_VISIBLE_DEVICES")
    gpu = status.devices[index] if status.devices else None
    return _cuda(index, f"{requested} requested" + (f" ({gpu.name})" if gpu else ""), requested, gpu)


# -- after the session exists: where did the nodes go? ----------------------------------------
@dataclass(frozen=True)
class Placement:
    """Which execution provider runs each node (ONNX Runtime's graph assignment record)."""

    nodes: tuple[tuple[str, str, str], ...]  # (provider, op_type, node name)

    def counts(self) -> dict[str, dict[str, int]]:
        """{provider: {op_type: count}}."""
        out: dict[str, Counter[str]] = {}
        for ep, op, _ in self.nodes:
            out.setdefault(ep, Counter())[op] += 1
        return {ep: dict(sorted(c.items())) for ep, c in out.items()}

    def recurrent_not_on(self, provider: str) -> list[str]:
        """Recurrent nodes assigned elsewhere than ``provider``, as 'LSTM /lstm/LSTM (CPUExecutionProvider)'."""
        return [f"{op} {name} ({ep})" for ep, op, name in self.nodes if op in RECURRENT_OPS and ep != provider]

    def describe(self) -> str:
        return "; ".join(f"{ep}: " + ", ".join(f"{op} x{n}" for op, n in ops.items()) for ep, ops in self.counts().items())

    def to_dict(self) -> dict[str, Any]:
        return {"by_provider": self.counts(), "nodes": [list(n) for n in self.nodes]}


def placement_of(session: Any) -> Placement | None:
    """Node placement of an ``onnxruntime.InferenceSession`` created with assignment recording, else None.

    Needs an onnxruntime with ``get_provider_graph_assignment_info`` (1.32 has it) and the session
    config ``session.record_ep_graph_assignment_info=1`` (set by :func:`edgeseq.runtime.ort.session_options`).
    """
    getter = getattr(session, "get_provider_graph_assignment_info", None)
    if getter is None:
        return None
    try:
        subgraphs = getter()
    except Exception:  # noqa: BLE001 - recording not enabled / not supported by this build
        return None
    return Placement(tuple((sg.ep_name, n.op_type, n.name) for sg in subgraphs for n in sg.get_nodes()))


def explain_cuda_failure() -> str:
    """Best guess why ONNX Runtime did not activate CUDA although the probe passed."""
    status = probe_cuda()
    if status.reason:
        return status.reason
    try:
        import os

        lib = os.path.join(os.path.dirname(_ort().__file__), "capi",
                           "onnxruntime_providers_cuda.dll" if sys.platform == "win32" else "libonnxruntime_providers_cuda.so")
        if os.path.exists(lib):
            _load_library(lib)
    except OSError as exc:
        msg = _first_line(exc)
        if "undefined symbol" not in msg:  # that one only means it needs ORT's own loader
            return f"the CUDA provider library cannot be loaded: {msg}"
    return "see ONNX Runtime's log above; 'edgeseq doctor' lists drivers, libraries and devices"


PLACEMENT_UNCHECKED = ("node placement not checked: onnxruntime {} cannot report it (1.24+ can: "
                       "pip install -U 'onnxruntime-gpu[cuda,cudnn]')")


def settle_choice(choice: DeviceChoice, active: list[str], placement: Placement | None) -> DeviceChoice:
    """Check a created session against ``choice``: raise, fall back (``auto`` only) or warn.

    * CUDA asked but not active: explicit -> :class:`ProviderError`; ``auto`` -> a CPU choice.
    * Recurrent nodes not on CUDA: explicit -> :class:`ProviderFallbackWarning`; ``auto`` -> CPU
      (ping-ponging every step between GPU and CPU is slower than staying on the CPU).
    A returned choice on another device means the caller must recreate the session with it.
    """
    if not choice.is_cuda:
        return choice
    auto = choice.requested == "auto"
    if CUDA_EP not in active:
        why = explain_cuda_failure()
        if auto:
            return _cpu(f"auto chose cpu: ONNX Runtime could not create the CUDA provider ({why})", choice.requested)
        raise ProviderError(f"device={choice.requested!r} cannot be used: ONNX Runtime could not create the CUDA provider ({why})")
    if placement is None:  # onnxruntime < 1.24 cannot report node placement: say so instead of staying silent
        return replace(choice, reason="; ".join(filter(None, [choice.reason, PLACEMENT_UNCHECKED.format(_ort().__version__)])))
    off = placement.recurrent_not_on(CUDA_EP)
    if off and auto:
        return _cpu(f"auto chose cpu: {len(off)} recurrent node(s) have no CUDA kernel here ({', '.join(off[:3])})",
                    choice.requested)
    if off:
        warnings.warn(ProviderFallbackWarning(
            f"{len(off)} recurrent node(s) run on the CPU, not on {choice.device}: {', '.join(off[:3])}; each run copies "
            "data between GPU and CPU. Use device='cpu' (e.g. for INT8 files) or a float32/FP16 file on CUDA"), stacklevel=3)
    return choice
