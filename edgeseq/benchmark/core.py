"""Benchmark one ONNX file against its peers: batch x length cases, median and p99, ratios.

>>> report = bench_file("model.onnx", batch_sizes=[1], lengths=[100], threads=1)   # doctest: +SKIP
>>> print(format_report(report))                                                    # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..card import forward_takes_lengths, read_card
from ..errors import EdgeseqError, InputError
from ..inputs import InputSpec
from . import runners as R
from .hardware import MacInfo, Peak, bound_seconds, measure_peaks, recurrent_macs
from .streaming import is_streaming_file, streaming_runner, torch_streaming_runner
from .timing import Timing, summarize, time_samples

DEFAULT_RUNTIMES = ("edgeseq", "onnxruntime-default", "openvino")


@dataclass
class BenchCase:
    """One runtime at one (batch, length)."""

    runtime: str
    batch: int
    length: int
    timing: Timing | None = None
    skipped: str = ""
    mode: str = "sequence"  # "sequence": whole sequences; "step": one chunk with carried state

    @property
    def samples_per_s(self) -> float:
        return self.batch / self.timing.median_s if self.timing else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = {"runtime": self.runtime, "mode": self.mode, "batch": self.batch, "length": self.length,
             "skipped": self.skipped}
        if self.timing:
            d.update(self.timing.to_dict(), samples_per_s=self.samples_per_s)
        return d


@dataclass
class BenchReport:
    """All cases of one file, with the thread count, machine and hardware bound."""

    model: str
    threads: int
    cases: list[BenchCase] = field(default_factory=list)
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> notes / skip reason
    macs: MacInfo | None = None
    peaks: dict[str, Peak] = field(default_factory=dict)  # "batch" / "input" -> measured rate
    machine: dict[str, Any] = field(default_factory=dict)

    def get(self, runtime: str, batch: int, length: int, mode: str = "sequence") -> BenchCase | None:
        for c in self.cases:
            if (c.runtime, c.batch, c.length, c.mode) == (runtime, batch, length, mode):
                return c
        return None

    def speedup(self, runtime: str, baseline: str, batch: int, length: int, mode: str = "sequence") -> float | None:
        """How many times faster ``runtime`` is than ``baseline`` (median / median)."""
        a, b = self.get(runtime, batch, length, mode), self.get(baseline, batch, length, mode)
        if not (a and b and a.timing and b.timing):
            return None
        return b.timing.median_s / a.timing.median_s

    def bound_s(self, batch: int, length: int) -> float | None:
        """Seconds the recurrent layers' arithmetic needs at the machine's measured rates."""
        return bound_seconds(self.macs, self.peaks, batch, length)

    def to_dict(self) -> dict[str, Any]:
        cases = []
        for c in self.cases:
            d = c.to_dict()
            bound = self.bound_s(c.batch, c.length)
            if bound and c.timing and c.mode == "sequence":
                d["bound_s"] = bound
                d["times_bound"] = c.timing.median_s / bound
            cases.append(d)
        return {
            "model": self.model, "threads": self.threads, "machine": self.machine, "runtimes": self.runtimes,
            "macs": self.macs.to_dict() if self.macs else None,
            "peaks": {b: p.to_dict() for b, p in self.peaks.items()},
            "cases": cases,
        }


def machine_info() -> dict[str, Any]:
    """CPU model, core count and library versions (for the record of a run)."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": onnxruntime.__version__}


def _make_runner(name: str, path: Path, threads: int, torch_model: Any) -> R.Runner:
    if name == "edgeseq":
        return R.edgeseq_runner(path, threads)
    if name == "onnxruntime-default":
        return R.ort_default_runner(path)
    if name == "openvino":
        return R.openvino_runner(path, threads)
    if name == "openvino-f32":
        return R.openvino_runner(path, threads, precision="f32")
    if name == "pytorch":
        return R.torch_runner(torch_model, threads)
    raise InputError(f"unknown runtime {name!r}; choose from {', '.join(R.RUNTIMES)}")


def bench_file(
    model: str | Path,
    against: Any = None,
    *,
    weights: str | Path | None = None,
    batch_sizes: Sequence[int] = (1, 64),
    lengths: Sequence[int] = (1, 100, 1000),
    threads: int = 1,
    runtimes: Sequence[str] = DEFAULT_RUNTIMES,
    sample: Sequence[np.ndarray] | None = None,
    budget_s: float = 1.0,
    reps: int = 200,
    hardware: bool = True,
    log: Callable[[str], None] | None = None,
    allow_pickle: bool = False,
) -> BenchReport:
    """Time ``model`` (and its peers) on every batch x length; with ``against`` also PyTorch eager.

    ``against`` is an ``nn.Module`` or a reference (``file.py:factory`` / ``pkg.mod:factory``);
    PyTorch runs in this process with the same ``threads``.  Runtimes that cannot run here
    (OpenVINO absent, an operator it lacks) are recorded as skipped, not raised.

    >>> bench_file("m.onnx", "models/motion_lstm.py:build", lengths=[100]).speedup(   # doctest: +SKIP
    ...     "edgeseq", "pytorch", 1, 100)
    2.1
    """
    from ..runtime.checks import thread_count
    from ..runtime.ort import open_model_file

    say = log or (lambda _m: None)
    unknown = [n for n in runtimes if n not in R.RUNTIMES or n == "pytorch"]
    if unknown:
        raise InputError(f"unknown runtime(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(n for n in R.RUNTIMES if n != 'pytorch')} (PyTorch joins with --against)")
    threads = thread_count(threads) or 1  # thousands hang ONNX Runtime, and PyTorch's own pool with it
    path = open_model_file(model)
    spec: InputSpec = R.input_spec_of(path)
    if spec.fixed_length and list(lengths) != [spec.fixed_length]:
        say(f"note: {path.name} runs at {spec.fixed_length} steps only; timing that length")
        lengths = [spec.fixed_length]
    names = list(runtimes)
    torch_model = None
    if against is not None:
        from ..export.loading import model_and_source

        # as export and check load it: float32, and any state kept on the module reset before each call
        torch_model = model_and_source(against, weights, allow_pickle=allow_pickle)[0]
        card = read_card(path)
        if forward_takes_lengths(card):  # forward(x, lengths): timed at full lengths
            from ..export.packed import unpacked

            torch_model = unpacked(torch_model, card.get("layout") == "time_first") or torch_model
        names.append("pytorch")
    report = BenchReport(str(path), threads, machine=machine_info())
    active: dict[str, R.Runner] = {}
    for name in names:
        try:
            runner = _make_runner(name, path, threads, torch_model)
        except EdgeseqError as exc:
            report.runtimes[name] = {"skipped": str(exc)}
            say(f"  {name}: skipped ({exc})")
            continue
        active[name] = runner
        report.runtimes[name] = {"threads": runner.threads, **runner.notes}
    grid = [(b, n) for b in batch_sizes for n in lengths]
    report.cases += run_cases(active, spec, grid, sample=sample, budget_s=budget_s, reps=reps, log=say)
    if is_streaming_file(path):
        steppers = streaming_runners(path, [n for n in names if n in active], threads, torch_model, report, say)
        report.cases += run_cases(steppers, spec, [(1, 1)], sample=sample, budget_s=budget_s, reps=reps * 5,
                                  mode="step", log=say)
    if hardware:
        report.macs = recurrent_macs(path)
        report.peaks = measure_peaks(report.macs, tuple(batch_sizes), threads)
    return report


def streaming_runners(path: Path, names: Sequence[str], threads: int, torch_model: Any, report: BenchReport,
                      say: Callable[[str], None]) -> dict[str, R.Runner]:
    """Runners that step ``path`` one chunk at a time (its state carried), for the peers in ``names``."""
    active: dict[str, R.Runner] = {}
    for name in names:
        try:
            if name == "pytorch":
                active[name] = torch_streaming_runner(torch_model, threads)
            else:
                active[name] = streaming_runner(name, path, threads)
        except EdgeseqError as exc:
            report.runtimes.setdefault(name, {})["step_skipped"] = str(exc)
            say(f"  {name} (step): skipped ({exc})")
    return active


def run_cases(runners: dict[str, R.Runner], spec: InputSpec, grid: Sequence[tuple[int, int]],
              sample: Sequence[np.ndarray] | None = None, budget_s: float = 1.0, reps: int = 200,
              rounds: int = 3, mode: str = "sequence", log: Callable[[str], None] | None = None) -> list[BenchCase]:
    """Time every runner on every (batch, length) of ``grid`` with the same inputs.

    Each case's budget is split into ``rounds`` slices taken in turn by the runners, so load that
    comes and goes on a shared machine hits every runtime alike; the slices' samples are pooled.
    A runner that fails on a case is recorded as skipped with the reason.
    """
    say = log or (lambda _m: None)
    cases = []
    for batch, length in grid:
        arrays = R.make_inputs(spec, batch, length, sample)
        samples: dict[str, list[float]] = {name: [] for name in runners}
        failed: dict[str, str] = {}
        for round_ in range(rounds):
            for name, runner in runners.items():
                if name in failed:
                    continue
                try:
                    samples[name] += time_samples(lambda: runner.call(arrays), reps=max(1, reps // rounds),
                                                  warmup=3 if round_ == 0 else 1, budget_s=budget_s / rounds,
                                                  min_reps=2)
                except Exception as exc:  # noqa: BLE001 - a peer failing on a shape is a result, not a crash
                    text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
                    failed[name] = f"{type(exc).__name__}: {text}"
        for name in runners:
            case = BenchCase(name, batch, length, skipped=failed.get(name, ""), mode=mode)
            if not case.skipped and samples[name]:
                case.timing = summarize(samples[name])
            cases.append(case)
            say(f"  {name:>20} {mode:>8} batch {batch:>4} length {length:>5}: "
                + (f"{case.timing.median_s * 1e3:9.3f} ms" if case.timing else f"skipped ({case.skipped})"))
    return cases


def _speedup_words(ratio: float | None) -> str:
    """``2.1`` -> '2.10x faster', ``0.8`` -> '1.25x slower' (a ratio below 1 read as "faster" misleads)."""
    if not ratio:
        return "-"
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def format_report(report: BenchReport, baseline: str | None = None) -> str:
    """A plain-text table: one row per case and runtime, with the speed-up over ``baseline``."""
    base = baseline or ("pytorch" if any(c.runtime == "pytorch" for c in report.cases) else "onnxruntime-default")
    head = (f"{'case':<8} {'batch':>5} {'length':>6}  {'runtime':<20} {'median':>10} {'p99':>10} {'samples/s':>11}  "
            f"{'vs ' + base:>14}")
    if report.peaks:
        head += f"  {'x bound':>8}"
    rows = [head]
    for c in report.cases:
        if not c.timing:
            rows.append(f"{c.mode:<8} {c.batch:>5} {c.length:>6}  {c.runtime:<20} skipped: {c.skipped}")
            continue
        ratio = report.speedup(c.runtime, base, c.batch, c.length, c.mode)
        line = (f"{c.mode:<8} {c.batch:>5} {c.length:>6}  {c.runtime:<20} {_ms(c.timing.median_s):>10} "
                f"{_ms(c.timing.p99_s):>10} {c.samples_per_s:>11.0f}  {_speedup_words(ratio):>14}")
        bound = report.bound_s(c.batch, c.length) if c.mode == "sequence" else None
        if report.peaks:
            line += f"  {(f'{c.timing.median_s / bound:.1f}' if bound else '-'):>8}"
        rows.append(line)
    if report.macs and report.macs.per_step:
        rates = ", ".join(f"{'batch ' + b if b.isdigit() else b}: {p.macs_per_s / 1e9:.1f} GMAC/s ({p.source})"
                          for b, p in report.peaks.items())
        rows.append(f"hardware bound: {report.macs.per_step:,} multiply-adds per sample per step; "
                    f"measured peak {rates}")
    for name, notes in report.runtimes.items():
        if "skipped" in notes:
            rows.append(f"{name}: skipped ({notes['skipped']})")
    return "\n".join(rows)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def report_json(report: BenchReport) -> dict[str, Any]:
    """JSON-ready dict of a report (NaN and infinities become null)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(report.to_dict())


__all__ = ["BenchCase", "BenchReport", "bench_file", "format_report", "report_json", "machine_info"]
