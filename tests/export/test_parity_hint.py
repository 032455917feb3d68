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


def test_a_tolerance_stricter_than_the_default_is_named_as_the_cause():
    strict = ParityReport([ParityCase(3, 10, "y", max_abs=2e-8, passed=False, scale=0.354)], atol=1e-9, rtol=0)
    hint = rounding_hint(strict)
    assert "--atol 1e-09 is stricter than float32 arithmetic can hold here (--atol 1e-07 would pass)" in hint
    assert "If outputs this large" not in hint


def test_input_shape_parts_that_are_not_numbers_are_refused_not_dropped():
    import pytest

    from edgeseq.errors import InputError
    from edgeseq.inputs import parse_shape

    assert parse_shape("2,30,5") == parse_shape("2x30x5") == parse_shape(" 2, 30 ,5") == [2, 30, 5]
    for typo in ("2,30,x", "2,,30,5", "2,30,", "1,10,x,1"):
        with pytest.raises(InputError, match="expected comma-separated integers"):
            parse_shape(typo)


def test_a_real_mismatch_gets_no_hint():
    small = ParityCase(3, 10, "y", max_abs=4e-4, passed=False, scale=50.0)
    assert rounding_hint(_report(small, ParityCase(1, 17, "y", max_abs=0.3, passed=False, scale=50.0))) == ""
    assert rounding_hint(_report(ParityCase(1, 17, "y", max_abs=2e-3, passed=False, scale=1.0))) == ""
    assert rounding_hint(_report(ParityCase(1, 17, "y", max_abs=math.inf, passed=False, scale=50.0))) == ""
    assert rounding_hint(_report(ParityCase(1, 17, "y", max_abs=1e-4, passed=False))) == ""  # scale unknown
    assert rounding_hint(_report(ParityCase(1, 17, "y", max_abs=1e-7))) == ""  # nothing failed


def test_check_without_the_exports_weights_says_to_pass_them(tmp_path):
    """The usual total failure of `check`: the export loaded a checkpoint, `check --against` did not."""
    import torch
    from click.testing import CliRunner

    from edgeseq.cli import main
    from models.families import FAMILIES

    model = FAMILIES["gru"]()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    weights = tmp_path / "trained.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "m.onnx"
    ref = "models/families.py:gru"
    assert CliRunner().invoke(main, ["export", ref, "--weights", str(weights), "-o", str(out)]).exit_code == 0
    result = CliRunner().invoke(main, ["check", str(out), "--against", ref, "--lengths", "1,20"])
    assert result.exit_code == 1
    assert f"the file was exported from {ref} --weights trained.pt: pass the same --weights" in result.stderr
    passed = CliRunner().invoke(main, ["check", str(out), "--against", ref, "--weights", str(weights), "--lengths", "1,20"])
    assert passed.exit_code == 0, passed.output


def test_check_against_a_factory_of_random_weights_says_so(tmp_path):
    from click.testing import CliRunner

    from edgeseq.cli import main

    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\ndef build():\n    return torch.nn.GRU(4, 8, batch_first=True)\n")
    out = tmp_path / "m.onnx"
    assert CliRunner().invoke(main, ["export", f"{factory}:build", "-o", str(out), "--input-shape", "1,10,4"]).exit_code == 0
    result = CliRunner().invoke(main, ["check", str(out), "--against", f"{factory}:build", "--lengths", "1,20"])
    assert result.exit_code == 1
    assert "builds different random weights on each call" in result.stderr and "--weights" in result.stderr


def test_a_nan_tolerance_from_python_is_refused_too():
    import pytest

    from edgeseq.errors import InputError
    from edgeseq.tolerances import TOLERANCES

    for bad in (float("nan"), float("inf"), -1.0, "1e-3"):
        with pytest.raises(InputError, match="must be a finite number >= 0"):
            TOLERANCES["float32"].overridden(atol=bad)
