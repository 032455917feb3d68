"""``quantize()``: float ONNX file -> INT8 / float16 file, written only when it keeps the task accuracy.

>>> r = quantize("fashion.onnx", "fashion.int8.onnx", mode="dynamic",
...              eval_data="models/data/fashion_lstm-test.npz")          # doctest: +SKIP
>>> r.precision, round(r.size_ratio, 2)                                   # doctest: +SKIP
('int8-dynamic', 0.27)
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..card import op_histogram, read_card, set_card
from ..errors import InputError, ModelFileError, QuantizationError, require
from ..metrics import is_classification
from ..runtime.checks import positive_int
from ..runtime.io import atomic_path
from ..runtime.ort import model_bytes, open_model_file
from ..tolerances import max_metric_drop, tolerance_for
from . import modes
from .auto import Choice, choose, weight_profile
from .cpu import CpuSettings, int8_cpu_settings
from .data import CALIBRATION_SAMPLES, CalibrationReader, Dataset, load_dataset, with_other_inputs
from .measure import Drift, MetricComparison, compare_metric, drift, predict

MODES = ("dynamic", "static", "fp16", "auto")
FEW_CALIBRATION_SAMPLES = 32  # below this a static file's ranges are a guess: warned about
PRECISION = {"dynamic": "int8-dynamic", "static": "int8-static", "fp16": "float16"}
QUANTIZED_OPS = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger",
                 "QLinearConv", "QLinearMatMul", "com.microsoft::DynamicQuantizeLSTM"}


@dataclass
class QuantizeResult:
    """What :func:`quantize` wrote, why, and what it measured."""

    path: Path
    mode: str
    precision: str
    card: dict[str, Any]
    float_bytes: int
    bytes: int
    metric: MetricComparison | None
    drift: Drift
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def size_ratio(self) -> float:
        return self.bytes / self.float_bytes


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_float_model(path: Path, output: Path) -> dict[str, Any]:
    card = read_card(path)
    precision = card.get("precision", "float32")
    if precision != "float32" or QUANTIZED_OPS & set(op_histogram(path, nested=True)):
        raise ModelFileError(f"{path}: already quantized (precision {precision}); quantize the float32 export instead")
    if output.resolve() == path.resolve():
        raise InputError(f"{output}: would overwrite the float model; write the quantized file elsewhere with -o")
    if output.suffix.lower() != ".onnx":
        raise InputError(f"{output}: the output must be an .onnx file")
    if not (output.parent if str(output.parent) else Path(".")).is_dir():
        raise InputError(f"{output}: output folder {output.parent} does not exist")
    return card


def _reduce_range(choice: str | bool) -> CpuSettings:
    if choice in ("auto", None):
        return int8_cpu_settings()
    value = choice if isinstance(choice, bool) else {"yes": True, "no": False}.get(str(choice))
    if value is None:
        raise InputError(f"--reduce-range {choice!r}: use auto, yes or no")
    here = int8_cpu_settings()
    return CpuSettings(here.machine, here.vnni, value, f"set explicitly (this CPU: {here.reason})")


def quantize(
    model: str | Path,
    output: str | Path,
    *,
    mode: str = "dynamic",
    calibration: str | Path | None = None,
    eval_data: str | Path | None = None,
    max_drop: float | None = None,
    per_channel: bool = False,
    reduce_range: str | bool = "auto",
    calibration_method: str = "minmax",
    calibration_samples: int = CALIBRATION_SAMPLES,
    target: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Quantize ``model`` into ``output``; refuse (writing nothing) when the accuracy gate fails.

    With ``eval_data`` (.npz with x, y[, lengths]) the task metric of float and quantized model is
    compared against ``max_drop`` (default: 1 accuracy point or 5 % relative MAE).  Without it,
    output drift against the float model is measured on the calibration data or random inputs.

    >>> quantize("m.onnx", "m.int8.onnx", mode="auto", eval_data="eval.npz").mode   # doctest: +SKIP
    'dynamic'
    """
    say = log or (lambda _msg: None)
    require("onnx", "quantize")
    start = time.perf_counter()
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if target not in ("cpu", "cuda"):
        raise InputError(f"unknown target {target!r}; use cpu or cuda")
    positive_int(calibration_samples, "calibration_samples")
    if max_drop is not None:  # checked now, not after the first candidate is built
        max_metric_drop("mae", max_drop)
    if calibration_method not in modes.CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method {calibration_method!r}; "
                         f"choose one of {', '.join(modes.CALIBRATION_METHODS)}")
    src = open_model_file(model)
    output = Path(output)
    float_card = _check_float_model(src, output)
    evalset = load_dataset(eval_data, need_labels=True) if eval_data is not None else None
    if evalset is not None and max_drop is not None and is_classification(evalset.y):
        max_metric_drop("accuracy", max_drop)
    calib = load_dataset(calibration) if calibration is not None else None
    others = _other_input_names(src)
    if others:  # a multi-input model: its data files carry every input, by name
        evalset = with_other_inputs(evalset, others) if evalset is not None else None
        calib = with_other_inputs(calib, others) if calib is not None else None
    if calib is not None:
        calib = calib.spread(calibration_samples)
    if mode == "static" and calib is None:
        raise InputError("--mode static needs --calibration DATA (.npz/.npy with x, e.g. a slice of the training set)")
    cpu = _reduce_range(reduce_range)

    ignored = [(per_channel and mode == "fp16", "--per-channel (fp16 has no scales)"),
               (calibration_method != "minmax" and mode in ("dynamic", "fp16"),
                f"--calibration-method {calibration_method} (only static calibrates)"),
               (target == "cuda" and mode in ("dynamic", "static"),
                f"--target cuda ({mode} INT8 runs on the CPU provider only; fp16 is the CUDA choice)"),
               (max_drop is not None and eval_data is None, "--max-drop (it limits the drop on --eval's data)"),
               (reduce_range in ("yes", True) and mode == "fp16", "--reduce-range (fp16 has no INT8 weights)")]
    for why in (why for on, why in ignored if on):
        say(f"warning: ignoring {why}")
    if mode == "auto":
        choices = choose(weight_profile(src), target, calib is not None)
        say(f"auto: {choices[0].mode} because {choices[0].reason}")
    else:
        choices = [Choice(mode, "requested")]
    if evalset is None:
        choices = choices[:1]  # fallbacks exist for the accuracy gate, which needs --eval
    if per_channel:
        choices = [c for c in choices if c.per_channel is None]  # the per-channel fallback is already the default

    if calib is not None and len(calib) < FEW_CALIBRATION_SAMPLES and any(c.mode == "static" for c in choices):
        say(f"warning: static scales from {len(calib)} calibration sample(s): values outside their ranges clip; "
            f"give a few hundred samples, and --eval to measure held-out data")
    float_eval = predict(src, evalset) if evalset is not None else None
    drift_data, drift_inputs = (evalset, "eval") if evalset is not None else (calib, "calibration")
    float_drift = predict(src, drift_data) if drift_data is not None else None
    refusals: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgeseq-quantize-") as tmp:
        for choice in choices:
            candidate = Path(tmp) / f"candidate{choices.index(choice)}.onnx"
            channel = (per_channel if choice.per_channel is None else choice.per_channel) and choice.mode != "fp16"
            say(f"quantizing {src.name} ({choice.mode}{', per-channel' if channel else ''}) ...")
            precision = PRECISION[choice.mode]
            settings = _apply(choice.mode, src, candidate, calib, channel, cpu, calibration_method)
            if choice.mode != "fp16" and not QUANTIZED_OPS & set(op_histogram(candidate, nested=True)):
                kept = "/".join(settings.get("kept_float") or [])
                why = (f"{kept} has no INT8 kernel in ONNX Runtime, layers under {modes.MIN_WEIGHTS} weights stay float"
                       if kept else f"every layer has fewer than {modes.MIN_WEIGHTS} weights, too few to gain from INT8")
                fix = ("the float32 file is the smallest this model gets (float16 cannot convert its Loop)"
                       if weight_profile(src).loops else "use --mode fp16")
                refusals.append(f"{precision}: no layer could be quantized ({why}); {fix}")
                if choice is not choices[-1]:  # the last one is the error message itself
                    say(refusals[-1])
                continue
            if model_bytes(candidate) >= model_bytes(src):
                why = (f"{_kib(candidate)} is not smaller than the float32 file's {_kib(src)} (the graph, not its "
                       "weights, is most of this file)")
                if mode != "auto":  # asked for by name: written, but not without saying so
                    say(f"warning: {precision}: {why}")
                else:
                    refusals.append(f"{precision}: {why}")
                    if choice is not choices[-1]:
                        say(refusals[-1])
                    continue
            metric = None
            if evalset is not None:
                metric = compare_metric(src, candidate, evalset, max_drop, float_outputs=float_eval)
                say(metric.describe(precision))
            measured = drift(src, candidate, drift_data, drift_inputs, float_outputs=float_drift)
            if drift_inputs == "calibration" and choice.mode == "static":
                measured = replace(measured, note="; ".join(filter(None, [
                    measured.note, "the data the scales came from: ranges it missed do not show here; "
                                   "--eval measures held-out data"])))
            say(measured.describe())
            floor = tolerance_for(precision).min_sqnr_db
            if metric is None and floor is not None and measured.sqnr_db < floor:
                say(f"warning: SQNR {measured.sqnr_db:.1f} dB is below the {floor:g} dB 'edgeseq check' accepts for "
                    f"{precision}; pass --eval to gate on the task metric (or try --per-channel)")
            if metric is not None and not metric.passed:
                refusals.append(f"{precision}: {metric.describe(precision)}")
                if choice is not choices[-1]:
                    nxt = choices[choices.index(choice) + 1]
                    say(f"auto: next {nxt.mode}{' per-channel' if nxt.per_channel else ''} because {nxt.reason}")
                continue
            if measured.nonfinite:
                refusals.append(f"{precision}: {measured.note}")
                say(f"{precision} refused: {measured.note}")
                continue
            card = _quantized_card(float_card, src, choice, precision, settings, metric, measured, auto=mode == "auto")
            _write(candidate, output, card, src)
            notes = [n for n in [settings.get("note"), f"auto: {choice.reason}" if mode == "auto" else None] if n]
            return QuantizeResult(output, choice.mode, precision, card, model_bytes(src), model_bytes(output),
                                  metric, measured, notes, time.perf_counter() - start)
    if all("no layer could be quantized" in r for r in refusals):
        raise QuantizationError("nothing written: " + " | ".join(refusals))
    if all("is not smaller than the float32 file" in r for r in refusals):
        raise QuantizationError("nothing written: " + " | ".join(refusals) + "; the float32 file is already the "
                                "smallest (--mode fp16 writes the float16 file anyway)")
    hint = "another --mode" if per_channel else "--per-channel, another --mode"
    raise QuantizationError("refused, nothing written: " + " | ".join(refusals)
                            + f"; try {hint}, or a larger --max-drop if the loss is acceptable")


def _kib(path: Path) -> str:
    return f"{model_bytes(path) / 1024:.0f} KiB"


def _other_input_names(path: Path) -> list[str]:
    """Names of the data inputs after the first (empty for the usual one-input model)."""
    from ..runtime.session import Session

    return [i.name for i in Session(path, device="cpu").data_inputs()[1:]]


def _apply(mode: str, src: Path, dst: Path, calib: Dataset | None, per_channel: bool, cpu: CpuSettings,
           method: str) -> dict[str, Any]:
    """Run one mode; return the settings that go into the model card."""
    ops = op_histogram(src, nested=True)  # loop bodies included
    kept_float = sorted(set(ops) & set(modes.UNQUANTIZABLE_RECURRENT))
    note = (f"{', '.join(kept_float)} kept in float32: ONNX Runtime has no quantized {'/'.join(kept_float)} kernel"
            if kept_float and mode != "fp16" else None)
    if mode == "dynamic" and "Conv" in ops:
        note = "; ".join(filter(None, [note, f"Conv kept in float32: {modes.CONV_STAYS_FLOAT}"]))
    if mode == "fp16":
        modes.fp16(src, dst)
        _check_loads_on_cpu(dst)
        return {"weights": "float16", "activations": "float16 (recurrent layers compute in float32)",
                "io": "float32", "recurrent_compute": "float32", "loads_on": "CPUExecutionProvider (checked)"}
    int8 = {"weights": "int8 (symmetric)", "per_channel": per_channel, "reduce_range": cpu.reduce_range,
            "cpu": {"machine": cpu.machine, "vnni": cpu.vnni, "reason": cpu.reason}, "kept_float": kept_float,
            "note": note}
    if mode == "dynamic":
        small = modes.dynamic(src, dst, per_channel=per_channel, reduce_range=cpu.reduce_range)
        return {**int8, "activations": "uint8, quantized at run time", "op_types": list(modes.DYNAMIC_OPS),
                "kept_float_small_layers": {"nodes": small, "min_weights": modes.MIN_WEIGHTS}}
    assert calib is not None
    from ..runtime.session import Session

    reader = CalibrationReader(Session(src, device="cpu"), calib, one_batch=method != "minmax")
    modes.static(src, dst, reader, method=method, per_channel=per_channel, reduce_range=cpu.reduce_range)
    return {**int8, "activations": "uint8, calibrated (QDQ) for Conv/MatMul/Gemm; run-time for LSTM",
            "op_types": {"static": list(modes.STATIC_OPS), "dynamic": ["LSTM", "Gather"]},
            "calibration": {"file": Path(calib.source).name, "samples": len(calib), "method": method}}


def _check_loads_on_cpu(path: Path) -> None:
    """The float16 file loads on CPU: in edgeseq, and in a stock ONNX Runtime (default options, another
    process: a crash there is a segmentation fault, see ``edgeseq.runtime.workarounds``)."""
    from ..runtime.ort import create_inference_session
    from ..runtime.providers import resolve_device

    try:
        create_inference_session(path, resolve_device("cpu"), threads=1)
    except ModelFileError as exc:
        raise QuantizationError(f"the float16 file does not load on CPU ({exc}); it would be GPU-only") from None
    try:
        stock = subprocess.run(
            [sys.executable, "-c", "import sys, onnxruntime as o; "
             "o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])", str(path)],
            capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError):  # no second interpreter here: edgeseq's own load passed
        return
    if stock.returncode < 0:  # killed by a signal: ONNX Runtime crashed while loading
        import onnxruntime

        raise QuantizationError(
            f"the float16 file crashes a stock ONNX Runtime {onnxruntime.__version__} on CPU while loading (signal "
            f"{-stock.returncode}), though edgeseq can run it; use --mode dynamic, or report the model to edgeseq")


def _quantized_card(float_card: dict[str, Any], src: Path, choice: Choice, precision: str, settings: dict[str, Any],
                    metric: MetricComparison | None, measured: Drift, auto: bool) -> dict[str, Any]:
    import onnxruntime

    section: dict[str, Any] = {
        "mode": choice.mode,
        "settings": {k: v for k, v in settings.items() if k != "note"},
        "float_model": {"file": src.name, "sha256": sha256(src), "bytes": model_bytes(src)},
        "metrics": metric.to_card() if metric is not None else None,
        "drift": measured.to_card(),
        "onnxruntime": onnxruntime.__version__,
        "quantized_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if auto:
        section["auto_reason"] = choice.reason
    return {**float_card, "precision": precision, "quantization": section}


def _write(candidate: Path, output: Path, card: dict[str, Any], src: Path) -> None:
    onnx = require("onnx", "quantize")
    proto = onnx.load(str(candidate))
    set_card(proto, card)
    with atomic_path(output) as tmp:
        onnx.save(proto, str(tmp))
        shutil.copymode(src, tmp)  # same permissions as the float file (mkstemp creates 0600)
