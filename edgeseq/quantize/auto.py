"""``--mode auto``: pick a mode from where the model's weights are, and say why.

The rules come from the measurements in ``docs/quantization.md`` (``scripts/quantize_table.py``):
dynamic INT8 shrinks LSTM/MatMul/embedding weights ~4x at no measurable accuracy cost on the zoo;
ONNX Runtime cannot quantize GRU/RNN, so a GRU-dominated file stays ~1x under INT8 while float16
halves it; dynamic INT8 leaves convolutions float (ConvInteger is slower than float Conv), and
static QDQ only pays where convolutions hold a real share of the weights.

>>> choose(WeightProfile({"LSTM": 800, "Gemm": 40}), target="cpu", has_calibration=False)[0].mode
'dynamic'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import require
from ..subgraphs import nodes
from .modes import CONV_STAYS_FLOAT, DYNAMIC_OPS

INT8_OPS = DYNAMIC_OPS  # what dynamic INT8 quantizes (Conv stays float: see modes.DYNAMIC_OPS)
INT8_WEIGHT_RATIO = 0.25  # int8 bytes per float32 byte
FP16_WEIGHT_RATIO = 0.5
STATIC_MIN_CONV_SHARE = 0.25  # below this the calibrated part is too small to matter (msft: 0.4 %)


@dataclass
class WeightProfile:
    """Bytes of float32 weights by the operator type that consumes them."""

    by_op: dict[str, int] = field(default_factory=dict)
    loops: bool = False  # a Loop/Scan: onnxruntime's float16 converter breaks it

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def share(self, *ops: str) -> float:
        return sum(self.by_op.get(o, 0) for o in ops) / self.total if self.total else 0.0

    def int8_ratio(self, static: bool = False) -> float:
        """Expected weight bytes after dynamic INT8 (``static``: static, which quantizes Conv too),
        relative to float32."""
        q = self.share(*INT8_OPS, *(("Conv",) if static else ()))
        return q * INT8_WEIGHT_RATIO + (1 - q)


@dataclass(frozen=True)
class Choice:
    mode: str
    reason: str
    per_channel: bool | None = None  # None: as the caller asked


PER_CHANNEL_FALLBACK = Choice("dynamic", "per-tensor INT8 failed the accuracy gate; per-channel scales cope with "
                                         "a few large weights", per_channel=True)


def weight_profile(path: str | Path) -> WeightProfile:
    """Float32 initializer bytes grouped by the first node that reads them."""
    onnx = require("onnx", "quantize")
    model = onnx.load(str(path), load_external_data=False)
    sizes = {}
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            n = 1
            for d in init.dims:
                n *= d
            sizes[init.name] = 4 * n
    profile: dict[str, int] = {}
    loops = False
    for node in nodes(model.graph):  # a loop body's nodes too: they read the outer graph's weights
        loops = loops or node.op_type in ("Loop", "Scan")
        for name in node.input:
            if name in sizes:
                profile[node.op_type] = profile.get(node.op_type, 0) + sizes.pop(name)
    if sizes:
        profile["(unused)"] = sum(sizes.values())
    return WeightProfile(profile, loops)


def choose(profile: WeightProfile, target: str = "cpu", has_calibration: bool = False) -> list[Choice]:
    """Modes to try in order (later ones are fallbacks when the accuracy gate refuses an earlier one)."""
    fp16_fallback = Choice("fp16", "INT8 failed the accuracy gate; float16 still halves the file")
    if target.startswith("cuda"):
        return [Choice("fp16", "target cuda: ONNX Runtime's INT8 LSTM/MatMulInteger kernels are CPU-only, "
                               "float16 halves the file and uses the GPU's half-precision kernels")]
    conv = profile.share("Conv")
    static = conv >= STATIC_MIN_CONV_SHARE and has_calibration
    int8 = profile.int8_ratio(static)
    if profile.loops:  # float16 is not an option (modes.fp16 refuses a Loop)
        why = (f"the file loops over time (an ONNX Loop), which onnxruntime's float16 converter breaks: dynamic "
               f"INT8 keeps ~{int8:.2f}x of the weight bytes")
        return [Choice("dynamic", why), PER_CHANNEL_FALLBACK]
    if int8 > FP16_WEIGHT_RATIO:
        rnn = profile.share("GRU", "RNN")
        why = (f"{rnn:.0%} of the weights are in GRU/RNN layers, which ONNX Runtime cannot quantize"
               if rnn else f"only {profile.share(*INT8_OPS):.0%} of the weights are in layers dynamic INT8 quantizes")
        if conv >= STATIC_MIN_CONV_SHARE and not static:
            why += (f" (convolutions, {conv:.0%}, stay float32: {CONV_STAYS_FLOAT}; pass --calibration for static "
                    "INT8, which quantizes them)")
        return [Choice("fp16", f"{why}: INT8 would keep ~{int8:.2f}x of the weight bytes, float16 ~0.50x "
                               "(and it still runs on CPU)")]
    if static:
        return [Choice("static", f"convolutions hold {conv:.0%} of the weights and calibration data was given: "
                                 "static QDQ quantizes them and their activations"),
                Choice("dynamic", "static INT8 failed the accuracy gate; dynamic INT8 needs no calibration"),
                PER_CHANNEL_FALLBACK, fp16_fallback]
    lstm = profile.share("LSTM", "MatMul", "Gemm", "Gather")
    why = f"{lstm:.0%} of the weights are in LSTM/MatMul/Gemm/embedding layers: dynamic INT8 keeps ~{int8:.2f}x of the weight bytes"
    if conv:
        why += f"; convolutions ({conv:.1%} of the weights) stay float32 ({CONV_STAYS_FLOAT})"
        why += (f", and at under {STATIC_MIN_CONV_SHARE:.0%} of the weights static calibration has too little to gain"
                if conv < STATIC_MIN_CONV_SHARE else "; pass --calibration to quantize them with static QDQ")
    return [Choice("dynamic", why), PER_CHANNEL_FALLBACK, fp16_fallback]
