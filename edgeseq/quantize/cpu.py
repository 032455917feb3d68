"""Which INT8 settings suit this CPU: reduced range (7-bit weights) where x86 lacks VNNI.

On x86 without VNNI, ONNX Runtime's u8 x s8 kernels add pairs of products in int16
(``VPMADDUBSW``), which saturates for large weights; 7-bit weights (``reduce_range``) cannot
saturate, so results no longer depend on the machine.  VNNI (``VPDPBUSD``) accumulates in
int32, and ARM's dot-product kernels do not have the problem.

>>> int8_cpu_settings(flags={"avx2"}, machine="x86_64").reduce_range
True
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
X86_MACHINES = {"x86_64", "amd64", "i386", "i686", "x86"}


@dataclass(frozen=True)
class CpuSettings:
    """The reduce_range decision and the evidence it was based on."""

    machine: str
    vnni: bool | None  # None: could not tell
    reduce_range: bool
    reason: str

    def to_card(self) -> dict[str, Any]:
        return asdict(self)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The CPU feature flags from /proc/cpuinfo, or None where that file does not exist."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def int8_cpu_settings(flags: set[str] | None = None, machine: str | None = None,
                      cpuinfo: str | Path = "/proc/cpuinfo") -> CpuSettings:
    """Decide ``reduce_range`` for this machine (or for the given ``flags``/``machine``)."""
    machine = (machine or platform.machine() or "unknown").lower()
    if machine not in X86_MACHINES:
        return CpuSettings(machine, None, False, f"{machine}: not x86, its int8 kernels do not saturate")
    flags = cpu_flags(cpuinfo) if flags is None else flags
    if flags is None:
        return CpuSettings(machine, None, True,
                           "x86 CPU features unknown (no /proc/cpuinfo): reduced range is safe everywhere")
    found = sorted(set(VNNI_FLAGS) & flags)
    if found:
        return CpuSettings(machine, True, False, f"VNNI present ({', '.join(found)}): full 8-bit range")
    return CpuSettings(machine, False, True,
                       "x86 without VNNI: 7-bit weights so u8 x s8 products cannot saturate int16")


def vnni_mismatch(card_settings: dict[str, Any] | None) -> str | None:
    """A warning when a file quantized for VNNI (full range) runs on an x86 CPU without VNNI."""
    if not card_settings or card_settings.get("reduce_range", True):
        return None
    here = int8_cpu_settings()
    if here.vnni is False:
        return ("this file was quantized with full 8-bit range for a CPU with VNNI; on this CPU (no VNNI) "
                "INT8 products may saturate: re-quantize here with --reduce-range yes")
    return None
