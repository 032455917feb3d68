"""The float32-rounding hint appears only when every failure is tiny next to the outputs' size."""

from __future__ import annotations

import math

from edgeseq.export.parity import ParityCase, ParityReport, rounding_hint


def _report(*cases: ParityCase) -> ParityReport:
    return ParityReport(list(cases), atol=1e-5, rtol=1e-5)


def test_rounding_sized_failures_get_the_hint():
    report = _report(ParityCase(3, 10, "y", max_abs=4e-4, passed=False, scale=50.0),
                     ParityCase(1, 10, "y", max_abs=1e-7, scale=50.0))
    hint = rounding_hint(report)
    assert "|y| up to 50" in hint and "pass --atol 0.001" in hint


def test_a_real_mismatch_gets_no_hint():
    small = ParityCase(3, 10, "y", max_abs=4e-4, passed=False, scale=50.0)
    assert rounding_hint(_report(small, ParityCase(1, 17, "y", max_abs=0.3, passed=False, scale=50.0))) == ""
    assert rounding_hint(_report(ParityCase(1, 17, "y", max_abs=2e-3, passed=False, scale=1.0))) == ""
    assert rounding_hint(_report(ParityCase(1, 17, "y", max_abs=math.inf, passed=False, scale=50.0))) == ""
    assert rounding_hint(_report(ParityCase(1, 17, "y", max_abs=1e-4, passed=False))) == ""  # scale unknown
    assert rounding_hint(_report(ParityCase(1, 17, "y", max_abs=1e-7))) == ""  # nothing failed
