"""``edgeseq check`` on quantized files: pooled drift (SQNR) and, with an eval set, the task metric."""

from __future__ import annotations

import pytest

from edgeseq.export.check import check, criteria
from edgeseq.quantize import cpu as cpu_module
from edgeseq.quantize import quantize
from edgeseq.quantize.cpu import CpuSettings, vnni_mismatch
from edgeseq.tolerances import TOLERANCES

SWEEP = {"batch_sizes": (1, 3), "lengths": (1, 17)}


@pytest.fixture(scope="module")
def int8_lstm(exported, families, tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "int8.onnx"
    quantize(exported("stacked_lstm"), out, mode="dynamic")
    return out, families["stacked_lstm"]()


def test_int8_is_judged_by_pooled_sqnr(int8_lstm):
    path, model = int8_lstm
    report = check(path, model, **SWEEP)
    pooled = [c for c in report.cases if c.output == "y*"]
    assert report.passed and len(pooled) == 1
    assert pooled[0].sqnr_db >= TOLERANCES["int8"].min_sqnr_db
    assert all(c.sqnr_db < 200 for c in report.cases if c.output == "y")  # not bit-exact, yet it passes
    assert "SQNR pooled over the sweep >= 15 dB" in criteria(report)
    from edgeseq.cli import format_parity_table

    table = format_parity_table(report)
    assert "  all     all  y (pooled)" in table and "    0       0  y*" not in table  # the row says what it is


def test_broken_int8_file_fails_check(outlier_lstm, tmp_path):
    src, evalset, model = outlier_lstm
    bad = tmp_path / "bad.onnx"
    quantize(src, bad, mode="dynamic")  # no --eval: nothing stops it being written
    report = check(bad, model, **SWEEP)
    assert not report.passed
    assert [c.output for c in report.failures] == ["y*"]
    with_eval = check(bad, model, eval_data=evalset, **SWEEP)
    failing = {c.output for c in with_eval.failures}
    assert failing == {"y*", "eval:accuracy"}
    assert with_eval.extra["metrics"]["passed"] is False


def test_int8_with_eval_set_passes_the_metric_gate(outlier_lstm, tmp_path):
    src, evalset, model = outlier_lstm
    good = tmp_path / "pc.onnx"
    quantize(src, good, mode="dynamic", per_channel=True, eval_data=evalset)
    report = check(good, model, eval_data=evalset, **SWEEP)
    assert report.passed, [c.note for c in report.failures]
    assert report.extra["metrics"]["passed"] is True and report.extra["metrics"]["max_drop"] == 0.01
    assert "eval accuracy drop <= 1.00 points" in criteria(report)


def test_float16_keeps_elementwise_tolerances(exported, families, tmp_path):
    out = tmp_path / "fp16.onnx"
    quantize(exported("stacked_lstm"), out, mode="fp16")
    report = check(out, families["stacked_lstm"](), **SWEEP)
    assert report.passed and report.atol == TOLERANCES["float16"].atol
    assert not any(c.output.endswith("*") for c in report.cases)


def test_vnni_mismatch_warning(monkeypatch):
    monkeypatch.setattr(cpu_module, "int8_cpu_settings", lambda: CpuSettings("x86_64", False, True, "no VNNI"))
    assert "--reduce-range yes" in vnni_mismatch({"reduce_range": False})
    assert vnni_mismatch({"reduce_range": True}) is None
    assert vnni_mismatch(None) is None
