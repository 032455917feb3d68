"""The accuracy gate: a bad quantization is refused and leaves no file; auto falls back and says why."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgeseq.card import read_card
from edgeseq.cli import main
from edgeseq.errors import InputError, QuantizationError
from edgeseq.quantize import quantize


def test_gate_refuses_a_bad_quantization_and_writes_nothing(outlier_lstm, tmp_path):
    src, evalset, _ = outlier_lstm
    out = tmp_path / "bad.onnx"
    with pytest.raises(QuantizationError) as info:
        quantize(src, out, mode="dynamic", eval_data=evalset)
    msg = str(info.value)
    assert "refused, nothing written" in msg and "accuracy float 1.0000 vs int8-dynamic" in msg
    assert "--per-channel" in msg
    assert list(tmp_path.iterdir()) == []  # no output, no temporary left behind


def test_per_channel_passes_the_same_gate(outlier_lstm, tmp_path):
    src, evalset, _ = outlier_lstm
    r = quantize(src, tmp_path / "ok.onnx", mode="dynamic", eval_data=evalset, per_channel=True)
    assert r.metric.passed and r.metric.drop <= 0.01
    assert read_card(r.path)["quantization"]["settings"]["per_channel"] is True


def test_max_drop_is_honoured_and_checked(outlier_lstm, tmp_path):
    src, evalset, _ = outlier_lstm
    r = quantize(src, tmp_path / "lax.onnx", mode="dynamic", eval_data=evalset, max_drop=0.9)
    assert not r.metric.drop <= 0.01 and r.metric.passed  # written: the caller accepted the loss
    assert read_card(r.path)["quantization"]["metrics"]["max_drop"] == 0.9
    with pytest.raises(InputError, match="--max-drop"):
        quantize(src, tmp_path / "x.onnx", mode="dynamic", eval_data=evalset, max_drop=5)


def test_auto_falls_back_to_per_channel_and_records_why(outlier_lstm, tmp_path):
    src, evalset, _ = outlier_lstm
    lines: list[str] = []
    r = quantize(src, tmp_path / "auto.onnx", mode="auto", eval_data=evalset, log=lines.append)
    q = read_card(r.path)["quantization"]
    assert r.mode == "dynamic" and q["settings"]["per_channel"] is True
    assert "per-channel scales" in q["auto_reason"]
    assert any(line.startswith("auto: dynamic because") for line in lines)


def test_cli_refusal_exits_1_without_a_file(outlier_lstm, tmp_path):
    src, evalset, _ = outlier_lstm
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(main, ["quantize", str(src), "-o", str(out), "--mode", "dynamic",
                                       "--eval", str(evalset)])
    assert result.exit_code == 1
    assert "Error: refused, nothing written" in result.output
    assert "accuracy float 1.0000 vs int8-dynamic" in result.output
    assert not out.exists()


def test_cli_writes_and_reports_size(outlier_lstm, tmp_path):
    src, evalset, _ = outlier_lstm
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(main, ["quantize", str(src), "-o", str(out), "--mode", "dynamic",
                                       "--per-channel", "--eval", str(evalset)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (int8-dynamic" in result.output and "x of" in result.output
    assert out.exists()


def test_sigterm_mid_quantize_leaves_no_candidate_or_output(outlier_lstm, tmp_path, monkeypatch):
    import os
    import signal
    import tempfile

    import edgeseq.quantize.api as api

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.mkdir(tmp_path / "tmp")
    real_apply = api._apply

    def killed(*args, **kwargs):  # `kill PID` while the first candidate is being written
        real_apply(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(api, "_apply", killed)
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(main, ["quantize", str(outlier_lstm[0]), "-o", str(out), "--mode", "dynamic"])
    assert result.exit_code == 143 and "Terminated; no partial output was written." in result.stderr
    assert not out.exists() and os.listdir(tmp_path / "tmp") == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
