"""Parity tolerances per precision: data with documented defaults, not literals in code.

An output passes when every element satisfies ``|onnx - torch| <= atol + rtol * |torch|``
(numpy.allclose semantics).

| precision | atol | rtol | why |
| --- | --- | --- | --- |
| float32 | 1e-5 | 1e-5 | same arithmetic, different kernels: observed ~1e-7 even at 1000 steps |
| float16 | 2e-2 | 2e-2 | 10-bit mantissa, errors accumulate over the recurrence |
| int8 | drift | - | judged by drift statistics (SQNR) and task metric, see quantize |

>>> TOLERANCES["float32"].atol
1e-05
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    min_sqnr_db: float | None = None  # for quantized files: minimum signal-to-quantization-noise ratio


TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(atol=1e-5, rtol=1e-5),
    "float16": Tolerance(atol=2e-2, rtol=2e-2),
    "int8": Tolerance(atol=float("inf"), rtol=float("inf"), min_sqnr_db=20.0),
}


def tolerance_for(precision: str | None) -> Tolerance:
    """Default tolerance for a model card's ``precision`` (unknown -> float32)."""
    if precision and precision.startswith("int8"):
        return TOLERANCES["int8"]
    return TOLERANCES.get(precision or "float32", TOLERANCES["float32"])
