"""`edgeseq bench` and its library: a fast smoke test (tiny budgets; no timing assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeseq.benchmark import bench_file, format_report, recurrent_macs, time_call
from edgeseq.benchmark.hardware import bound_seconds, measure_peaks
from edgeseq.benchmark.timing import percentile, summarize
from edgeseq.cli import main


def test_bench_command_against_pytorch_writes_json(exported, tmp_path):
    path = exported("stacked_lstm")
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, [
        "bench", str(path), "--against", "models.families:stacked_lstm", "--batch-sizes", "1,2",
        "--lengths", "1,5", "--seconds", "0.02", "--runtimes", "edgeseq,onnxruntime-default", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "vs pytorch" in result.output and "hardware bound" in result.output
    report = json.loads(out.read_text())
    timed = {(c["runtime"], c["batch"], c["length"]) for c in report["cases"] if c.get("median_s")}
    for runtime in ("edgeseq", "onnxruntime-default", "pytorch"):
        for batch in (1, 2):
            for length in (1, 5):
                assert (runtime, batch, length) in timed
    assert all(c["p99_s"] >= c["median_s"] > 0 for c in report["cases"] if c.get("median_s"))
    assert report["runtimes"]["edgeseq"]["threads"] == 1
    assert report["macs"]["per_step"] > 0


def test_bench_library_skips_a_missing_peer_cleanly(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails, as on a runtime-only install
    report = bench_file(exported("gru"), batch_sizes=[1], lengths=[3], runtimes=["edgeseq", "openvino"],
                        budget_s=0.01, hardware=False)
    assert "not installed" in report.runtimes["openvino"]["skipped"]
    assert [c.runtime for c in report.cases] == ["edgeseq"]
    assert "openvino: skipped" in format_report(report)


def test_bench_command_refuses_bad_options(exported):
    result = CliRunner().invoke(main, ["bench", str(exported("gru")), "--lengths", "0"])
    assert result.exit_code == 1 and result.output.startswith("Error: --lengths")
    result = CliRunner().invoke(main, ["bench", str(exported("gru")), "--runtimes", "tensorflow", "--lengths", "2",
                                       "--batch-sizes", "1", "--seconds", "0.01"])
    assert result.exit_code == 1 and result.output.startswith("Error: unknown runtime(s) tensorflow")


def test_streaming_file_gets_a_step_case(tmp_path):
    from edgeseq.export.stateful import export_with_extras

    path = tmp_path / "gru-stream.onnx"
    export_with_extras("models.families:gru", path, streaming=True)
    report = bench_file(path, "models.families:gru", batch_sizes=[1], lengths=[4],
                        runtimes=["edgeseq", "onnxruntime-default"], budget_s=0.01, hardware=False)
    steps = {c.runtime: c for c in report.cases if c.mode == "step"}
    assert set(steps) == {"edgeseq", "onnxruntime-default", "pytorch"}
    assert all(c.timing and c.timing.median_s > 0 for c in steps.values())


def test_recurrent_macs_counts_input_and_recurrent_matrices(exported):
    # models.families.stacked_lstm: see the factory; MACs follow from the exported weight shapes
    info = recurrent_macs(exported("stacked_lstm"))
    assert info.layers and all(layer.op == "LSTM" for layer in info.layers)
    for layer in info.layers:
        dirs, gates_h, inputs = layer.w_shape
        assert layer.r_shape == [dirs, gates_h, layer.hidden]
        assert layer.macs == dirs * gates_h * (inputs + layer.hidden)
    assert info.per_step == info.input_per_step + info.recurrent_per_step


def test_bound_uses_measured_rates():
    from edgeseq.benchmark.hardware import MacInfo, Peak, RecurrentLayer

    macs = MacInfo([RecurrentLayer("LSTM", [1, 16, 3], [1, 16, 4])])
    peaks = {"1": Peak(1, 4, 16, 1, 1e9, "x", {}), "input": Peak(256, 4, 16, 1, 2e9, "x", {})}
    assert bound_seconds(macs, peaks, 1, 10) == pytest.approx(10 * (48 / 2e9 + 64 / 1e9))
    assert bound_seconds(macs, peaks, 64, 10) is None  # no rate measured at batch 64


def test_measured_peak_is_a_rate(exported):
    peaks = measure_peaks(recurrent_macs(exported("gru")), (1,), threads=1)
    assert set(peaks) == {"1", "input"}
    assert all(p.macs_per_s > 0 and math.isfinite(p.macs_per_s) for p in peaks.values())


def test_timing_summary():
    t = summarize([3.0, 1.0, 2.0, 100.0])
    assert (t.median_s, t.min_s, t.p99_s, t.reps) == (2.5, 1.0, 100.0, 4)
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    calls = []
    timing = time_call(lambda: calls.append(1), reps=7, warmup=2, budget_s=10)
    assert timing.reps == 7 and len(calls) == 9


def test_bench_library_imports_no_torch():
    code = ("import sys, edgeseq.benchmark, edgeseq.commands.bench; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_speedups_below_one_read_as_slower():
    from edgeseq.benchmark.core import _speedup_words

    assert _speedup_words(2.0) == "2.00x faster" and _speedup_words(0.8) == "1.25x slower" and _speedup_words(None) == "-"
