"""Parity: measure how closely an ONNX file reproduces the PyTorch model, then gate on it.

:func:`measure` returns a :class:`ParityReport` and never raises for a mismatch;
:func:`gate` raises :class:`ParityError` when the report fails.

>>> report = measure("m.onnx", model, spec, batch_sizes=[1, 3], lengths=[1, 17])  # doctest: +SKIP
>>> gate(report)                                                                     # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeseqError, ParityError
from ..inputs import InputSpec
from ..tolerances import ROUNDING_OF_SCALE, Tolerance, tolerance_for


@dataclass
class ParityCase:
    """One output at one (batch, length): errors and verdict."""

    batch: int
    length: int
    output: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    sqnr_db: float = math.inf
    passed: bool = True
    skipped: bool = False
    note: str = ""
    scale: float = math.nan  # largest |PyTorch output| in this case (nan where not recorded)

    @property
    def rounding_sized(self) -> bool:
        """A failure no bigger than float32 rounding of outputs this large (see tolerances.ROUNDING_OF_SCALE)."""
        return (not self.passed and math.isfinite(self.max_abs) and math.isfinite(self.scale)
                and self.max_abs <= ROUNDING_OF_SCALE * self.scale)


@dataclass
class ParityReport:
    """All cases of a sweep with the tolerances used."""

    cases: list[ParityCase]
    atol: float
    rtol: float
    precision: str = "float32"
    min_sqnr_db: float | None = None
    provider: str = "CPUExecutionProvider"
    extra: dict[str, Any] = field(default_factory=dict)
    every_batch: bool = False  # passing needs a compared case at every batch size of the sweep (``edgeseq check``)

    @property
    def passed(self) -> bool:
        checked = [c for c in self.cases if not c.skipped]
        return bool(checked) and all(c.passed for c in checked) and not (
            self.every_batch and self.batches_never_compared)

    @property
    def batches_never_compared(self) -> list[int]:
        """Batch sizes of the sweep at which PyTorch ran no length: not a limit of sequence models (a
        model takes any batch), so the sweep's inputs did not fit the model and nothing was proven there."""
        checked = {c.batch for c in self.cases if not c.skipped}
        return sorted({c.batch for c in self.cases if c.skipped} - checked)

    @property
    def failures(self) -> list[ParityCase]:
        return [c for c in self.cases if not c.skipped and not c.passed]

    @property
    def worst(self) -> ParityCase:
        """The failing case with the largest error (a failure to run counts as the largest)."""
        return max(self.failures, key=lambda c: c.max_abs if math.isfinite(c.max_abs) else 1e300)

    def summary(self) -> dict[str, Any]:
        checked = [c for c in self.cases if not c.skipped]
        return {
            "passed": self.passed,
            "cases": len(checked),
            "skipped": len(self.cases) - len(checked),
            "max_abs": max((c.max_abs for c in checked), default=0.0),
            "min_sqnr_db": min((c.sqnr_db for c in checked), default=math.inf),
            "batch_sizes": sorted({c.batch for c in checked}),
            "lengths": sorted({c.length for c in checked}),
            "atol": self.atol,
            "rtol": self.rtol,
            "precision": self.precision,
            "provider": self.provider,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": _jsonable(self.summary()), "cases": [_jsonable(asdict(c)) for c in self.cases], **self.extra}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def flatten_outputs(out: Any) -> list[Any]:
    """Flatten a model's return value (tensor, tuple/list, dict, nested) into a list of tensors."""
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in flatten_outputs(o)]
    return [out]


_OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def output_names(out: Any, taken: Iterable[str] = ()) -> list[str]:
    """Names for a model's outputs: the keys of a returned dict (or ``ModelOutput``) or the fields of a
    namedtuple of tensors (``logits``, ``hidden``), when they are usable names; else ``y`` or ``y0, y1, ...``.

    >>> output_names({"logits": torch.zeros(1), "features": torch.zeros(1)})  # doctest: +SKIP
    ['logits', 'features']
    """
    flat = flatten_outputs(out)
    default = ["y"] if len(flat) == 1 else [f"y{i}" for i in range(len(flat))]
    if isinstance(out, dict):
        names = [str(k) for k in out]
    elif isinstance(out, tuple) and hasattr(out, "_fields"):
        names = list(out._fields)
    else:
        return default
    usable = (len(names) == len(flat) and len(set(names)) == len(names) and not set(names) & set(taken)
              and all(_OUTPUT_NAME.fullmatch(n) for n in names))
    return names if usable else default


def torch_runner(model: Any) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """Wrap an nn.Module as a function from numpy inputs to a list of numpy outputs."""
    import torch

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            out = model(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return [t.detach().cpu().numpy() for t in flatten_outputs(out)]

    return run


def compare(onnx_out: np.ndarray, ref: np.ndarray, tol: Tolerance) -> tuple[float, float, float, bool, str]:
    """Return (max_abs, max_rel, sqnr_db, passed, note) for one output."""
    if onnx_out.shape != ref.shape:
        return math.inf, math.inf, -math.inf, False, f"shape {onnx_out.shape} != PyTorch {ref.shape}"
    a = onnx_out.astype(np.float64)
    b = ref.astype(np.float64)
    if a.size == 0:
        return 0.0, 0.0, math.inf, True, ""
    if not np.isfinite(a).all() and not np.array_equal(np.isnan(a), np.isnan(b)):
        return math.inf, math.inf, -math.inf, False, "ONNX output has NaN/Inf where PyTorch has none"
    diff = np.abs(a - b)
    max_abs = float(np.nanmax(diff))
    denom = np.abs(b) + (tol.atol if math.isfinite(tol.atol) else 1e-12)
    max_rel = float(np.nanmax(diff / denom))
    noise = float(np.sum(diff**2))
    signal = float(np.sum(b**2))
    sqnr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
    ok = bool(np.all(diff <= tol.atol + tol.rtol * np.abs(b))) if math.isfinite(tol.atol) else True
    if tol.min_sqnr_db is not None and sqnr < tol.min_sqnr_db:
        ok = False
    return max_abs, max_rel, sqnr, ok, ""


def measure_runners(
    run_onnx: Callable[[list[np.ndarray]], list[np.ndarray]],
    run_ref: Callable[[list[np.ndarray]], list[np.ndarray]],
    spec: InputSpec,
    output_names: Sequence[str],
    batch_sizes: Iterable[int] = (1, 3),
    lengths: Iterable[int] = (1, 17),
    tol: Tolerance | None = None,
    precision: str = "float32",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ParityReport:
    """Compare two runners over every (batch, length) in the sweep on the same random inputs."""
    tol = tol or tolerance_for(precision)
    cases: list[ParityCase] = []
    for length in lengths:
        for batch in batch_sizes:
            arrays = spec.random(batch, length, seed=seed + 7919 * length + batch)
            try:
                ref = run_ref(arrays)
            except Exception as exc:  # the reference model itself rejects this shape (e.g. conv too short)
                first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
                what = ("PyTorch's forward does not take these inputs" if isinstance(exc, TypeError) and "argument" in first
                        else "PyTorch rejects this shape")
                msg = f"{what}: {first}"
                cases.append(ParityCase(batch, length, "*", skipped=True, note=msg))
                continue
            try:
                got = run_onnx(arrays)
            except EdgeseqError as exc:
                cases.append(ParityCase(batch, length, "*", math.inf, math.inf, -math.inf, False, note=f"ONNX Runtime failed: {exc}"[:240]))
                continue
            if len(got) != len(ref):
                cases.append(ParityCase(batch, length, "*", passed=False, note=f"ONNX has {len(got)} outputs, PyTorch {len(ref)}"))
                continue
            for name, o, r in zip(output_names, got, ref):
                max_abs, max_rel, sqnr, ok, note = compare(o, r, tol)
                cases.append(ParityCase(batch, length, name, max_abs, max_rel, sqnr, ok, note=note, scale=_scale(r)))
            if progress:
                progress(f"batch {batch} length {length}: {'ok' if all(c.passed for c in cases[-len(ref):]) else 'MISMATCH'}")
    return ParityReport(cases, tol.atol, tol.rtol, precision, tol.min_sqnr_db)


def _scale(ref: np.ndarray) -> float:
    finite = np.abs(ref[np.isfinite(ref)]) if np.issubdtype(ref.dtype, np.floating) else np.abs(ref)
    return float(finite.max()) if finite.size else math.nan


def measure(
    onnx_path: str | Path,
    model: Any,
    spec: InputSpec | None = None,
    batch_sizes: Iterable[int] = (1, 3, 16),
    lengths: Iterable[int] = (1, 2, 17, 100, 1000),
    atol: float | None = None,
    rtol: float | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ParityReport:
    """Measure ONNX Runtime vs PyTorch on random inputs over a batch x length sweep.

    >>> report = measure("m.onnx", model)          # doctest: +SKIP
    >>> report.passed                              # doctest: +SKIP
    True
    """
    from ..runtime.session import Session

    session = Session(onnx_path, device=device)
    if spec is None:
        spec = spec_of_session(session)
    precision = session.card.get("precision", "float32")
    base = tolerance_for(precision)
    tol = base.overridden(atol, rtol)
    names = [o.name for o in session.data_outputs()]
    data_names = spec.names
    first = spec.inputs[0]
    # full lengths from the spec's axes: a file checked before its card is written cannot tell its layout
    fill_lengths = (session.lengths_input if session.lengths_input not in data_names
                    and first.batch_axis is not None and first.seq_axis is not None else None)

    def run_onnx(arrays: list[np.ndarray]) -> list[np.ndarray]:
        feed = dict(zip(data_names, arrays))
        if fill_lengths:
            x = arrays[0]
            feed[fill_lengths] = np.full(x.shape[first.batch_axis], x.shape[first.seq_axis], np.int64)
        out = session.run(feed)
        return [out[n] for n in names]

    report = measure_runners(run_onnx, torch_runner(model), spec, names, batch_sizes, lengths, tol, precision, seed, progress)
    report.provider = session.providers[0]
    return report


def spec_of_session(session: Any) -> InputSpec:
    """Input spec from the file's model card, or guessed from its symbolic dims."""
    if session.card.get("inputs"):
        return InputSpec.from_card(session.card["inputs"])
    if not session.data_inputs():
        from ..errors import ModelFileError

        raise ModelFileError(f"{session.path}: the graph takes no inputs, so there is nothing to compare or time")
    return InputSpec.from_session_inputs(session.data_inputs())


def gate(report: ParityReport, what: str = "ONNX file", hint: bool = True) -> None:
    """Raise :class:`ParityError` naming the worst failing case when ``report`` did not pass."""
    if report.passed:
        return
    fails = report.failures
    if not fails and report.every_batch and report.batches_never_compared and any(not c.skipped for c in report.cases):
        raise ParityError(f"{what}: {never_compared(report)}")
    if not fails:
        raise ParityError(f"{what}: no case could be checked (every shape was rejected by the PyTorch model)")
    worst = max(fails, key=lambda c: (c.max_abs if math.isfinite(c.max_abs) else 1e300))
    detail = worst.note or f"max abs error {worst.max_abs:.3g} > atol {report.atol:g} + rtol {report.rtol:g}"
    raise ParityError(
        f"{what} does not match PyTorch: output {worst.output!r} at batch {worst.batch}, length {worst.length}: "
        f"{detail} ({len(fails)} failing case(s)){rounding_hint(report) if hint else ''}"
    )


def never_compared(report: ParityReport) -> str:
    """Why a sweep with a batch size that PyTorch ran at no length proves nothing there."""
    batches = report.batches_never_compared
    note = next(c.note for c in report.cases if c.skipped and c.batch == batches[0])
    return (f"nothing was compared at batch {', '.join(map(str, batches))} ({note}); a sequence model takes any "
            "batch, so the sweep's inputs do not fit the model (inputs whose batch axis is not where expected?)")


def rounding_hint(report: ParityReport) -> str:
    """When every failure is float32 rounding of large outputs: say so, and the --atol that would accept it."""
    fails = report.failures
    if not fails or not all(c.rounding_sized for c in fails):
        return ""
    worst = max(c.max_abs for c in fails)
    scale = max(c.scale for c in fails)
    suggest = 10 ** math.ceil(math.log10(worst * 2))
    if report.atol < tolerance_for(report.precision).atol:  # the caller asked for less than the default
        return (f"; every mismatch is below {ROUNDING_OF_SCALE:g} of the largest output (|y| up to {scale:.3g}): "
                f"float32 rounding, not a wrong graph; --atol {report.atol:g} is stricter than float32 arithmetic "
                f"can hold here (--atol {suggest:g} would pass)")
    return (f"; every mismatch is below {ROUNDING_OF_SCALE:g} of the largest output (|y| up to {scale:.3g}): "
            f"that is float32 rounding at this scale, not a wrong graph. If outputs this large are expected, "
            f"pass --atol {suggest:g}")
