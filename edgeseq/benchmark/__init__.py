"""Benchmark exported files against PyTorch, plain ONNX Runtime and OpenVINO (library side of
``edgeseq bench``).  Imports no torch unless a PyTorch model is compared (``against=``).

>>> from edgeseq.benchmark import bench_file, format_report
>>> print(format_report(bench_file("m.onnx", lengths=[1, 100])))     # doctest: +SKIP
"""

from __future__ import annotations

from .core import BenchCase, BenchReport, bench_file, format_report, machine_info, report_json, run_cases
from .hardware import MacInfo, Peak, bound_seconds, matmul_peak, measure_peaks, recurrent_macs
from .timing import Timing, summarize, time_call, time_samples

__all__ = [
    "BenchCase", "BenchReport", "bench_file", "run_cases", "format_report", "machine_info", "report_json",
    "MacInfo", "Peak", "bound_seconds", "matmul_peak", "measure_peaks", "recurrent_macs",
    "Timing", "summarize", "time_call", "time_samples",
]
