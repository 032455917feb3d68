"""Each mode on a small model family: the right operators, a smaller file, a model card, runs on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.card import op_histogram, read_card
from edgeseq.errors import InputError, ModelFileError, QuantizationError
from edgeseq.quantize import quantize
from edgeseq.quantize.api import sha256
from edgeseq.runtime.session import Session
from edgeseq.tolerances import TOLERANCES


@pytest.fixture(scope="module")
def lstm(exported, make_eval_set, tmp_path_factory):
    path = exported("stacked_lstm")
    return path, make_eval_set(path, tmp_path_factory.mktemp("lstm-eval") / "eval.npz")


def test_dynamic_quantizes_lstm_and_records_the_card(lstm, tmp_path):
    src, evalset = lstm
    out = tmp_path / "int8.onnx"
    r = quantize(src, out, mode="dynamic", eval_data=evalset)
    ops = op_histogram(out)
    assert ops.get("com.microsoft::DynamicQuantizeLSTM") == 2 and "LSTM" not in ops
    assert r.size_ratio < 0.35  # LSTM-dominated: ~4x smaller weights
    card = read_card(out)
    float_card = read_card(src)
    assert card["precision"] == "int8-dynamic"
    assert card["inputs"] == float_card["inputs"] and card["exporter"] == float_card["exporter"]
    q = card["quantization"]
    assert q["mode"] == "dynamic"
    assert q["float_model"]["sha256"] == sha256(src)
    assert q["metrics"]["metric"] == "accuracy" and q["metrics"]["passed"] is True
    assert q["metrics"]["float_value"] == 1.0 and q["metrics"]["quantized_value"] >= 0.99
    assert isinstance(q["settings"]["reduce_range"], bool) and q["settings"]["cpu"]["reason"]
    assert q["drift"]["inputs"] == "eval" and q["drift"]["sqnr_db"] > 20
    x = np.load(evalset)["x"]
    assert Session(out, device="cpu").predict(x).shape == Session(src, device="cpu").predict(x).shape


def test_gru_stays_float_and_says_so(exported, tmp_path):
    src = exported("gru")
    calib = tmp_path / "calib.npz"
    from edgeseq.export.parity import spec_of_session

    np.savez(calib, x=spec_of_session(Session(src, device="cpu")).random(16, 10, seed=3)[0])
    out = tmp_path / "gru.onnx"
    r = quantize(src, out, mode="static", calibration=calib)  # static quantizes the small head
    assert "GRU" in op_histogram(out)
    assert read_card(out)["quantization"]["settings"]["kept_float"] == ["GRU"]
    assert any("GRU kept in float32" in n for n in r.notes)


def test_dynamic_refuses_when_nothing_can_be_quantized(exported, tmp_path):
    # GRU has no INT8 kernel and the 432-weight head is under MIN_WEIGHTS: an "int8" file would be float
    out = tmp_path / "gru.onnx"
    log: list[str] = []
    with pytest.raises(QuantizationError, match="^nothing written: .*no layer could be quantized.*GRU.*--mode fp16$"):
        quantize(exported("gru"), out, mode="dynamic", log=log.append)
    assert not out.exists()
    assert not any("no layer could be quantized" in line for line in log)  # said once, by the error


def test_static_calibrates_the_convolution(exported, tmp_path):
    src = exported("conv1d_lstm")
    calib = tmp_path / "calib.npz"
    from edgeseq.export.parity import spec_of_session

    np.savez(calib, x=spec_of_session(Session(src, device="cpu")).random(48, 30, seed=3)[0])
    out = tmp_path / "static.onnx"
    r = quantize(src, out, mode="static", calibration=calib)
    ops = op_histogram(out)
    assert ops.get("QuantizeLinear", 0) >= 1 and ops.get("DequantizeLinear", 0) >= 2  # QDQ around the Conv
    assert ops.get("com.microsoft::DynamicQuantizeLSTM") == 1
    q = read_card(out)["quantization"]
    assert read_card(out)["precision"] == "int8-static"
    assert q["settings"]["calibration"] == {"file": "calib.npz", "samples": 48, "method": "minmax"}
    assert q["drift"]["inputs"] == "calibration" and r.drift.sqnr_db > 20
    assert "the data the scales came from" in r.drift.note  # it cannot show ranges the calibration missed
    log: list[str] = []
    np.savez(calib, x=spec_of_session(Session(src, device="cpu")).random(2, 30, seed=3)[0])
    quantize(src, out, mode="static", calibration=calib, log=log.append)
    assert any(line.startswith("warning: static scales from 2 calibration sample(s)") for line in log)


def test_options_that_do_not_apply_are_named_and_bad_numbers_refused_up_front(lstm, tmp_path):
    src, evalset = lstm
    log: list[str] = []
    quantize(src, tmp_path / "h.onnx", mode="fp16", per_channel=True, calibration_method="entropy", log=log.append)
    assert "warning: ignoring --per-channel (fp16 has no scales)" in log
    assert any(line.startswith("warning: ignoring --calibration-method entropy") for line in log)
    assert not any("per-channel" in line for line in log if line.startswith("quantizing"))
    log.clear()
    with pytest.raises(InputError, match=r"--max-drop 1.0: expected a number from 0 up to \(not including\) 1"):
        quantize(src, tmp_path / "q.onnx", mode="dynamic", eval_data=evalset, max_drop=1.0, log=log.append)
    assert log == []  # refused before any candidate was built
    with pytest.raises(InputError, match="calibration_samples must be a positive whole number, got -3"):
        quantize(src, tmp_path / "q.onnx", calibration_samples=-3)


def test_static_without_calibration_is_refused(exported, tmp_path):
    with pytest.raises(InputError, match="--calibration"):
        quantize(exported("conv1d_lstm"), tmp_path / "s.onnx", mode="static")
    assert not (tmp_path / "s.onnx").exists()


def test_fp16_halves_the_file_and_runs_on_cpu(lstm, tmp_path):
    src, evalset = lstm
    out = tmp_path / "fp16.onnx"
    r = quantize(src, out, mode="fp16", eval_data=evalset)
    assert r.precision == "float16" and 0.45 < r.size_ratio < 0.6
    assert op_histogram(out).get("LSTM") == 2  # kept as a float32 node, fed by Casts of float16 weights
    x = np.load(evalset)["x"]
    got, ref = Session(out, device="cpu").predict(x), Session(src, device="cpu").predict(x)
    tol = TOLERANCES["float16"]
    np.testing.assert_allclose(got, ref, atol=tol.atol, rtol=tol.rtol)
    assert Session(out, device="cpu").inputs[0].dtype == np.float32  # io types kept


def test_without_eval_drift_is_measured_on_random_inputs(lstm, tmp_path):
    src, _ = lstm
    out = tmp_path / "int8.onnx"
    r = quantize(src, out, mode="dynamic")
    assert r.metric is None and r.drift.inputs == "random" and np.isfinite(r.drift.sqnr_db)
    assert read_card(out)["quantization"]["metrics"] is None


def test_refuses_quantized_input_and_overwriting_the_float_file(lstm, tmp_path):
    src, _ = lstm
    out = tmp_path / "int8.onnx"
    quantize(src, out, mode="dynamic")
    with pytest.raises(ModelFileError, match="already quantized"):
        quantize(out, tmp_path / "again.onnx", mode="dynamic")
    with pytest.raises(InputError, match="overwrite the float model"):
        quantize(src, src, mode="dynamic")


def test_auto_writes_nothing_when_no_mode_makes_a_tiny_file_smaller(tmp_path):
    import torch

    from edgeseq.export import export

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.RNN(4, 8, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0][:, -1]

    src, out = tmp_path / "tiny.onnx", tmp_path / "tiny.q.onnx"
    export(Tiny().eval(), src, input_shape=(1, 10, 4))
    with pytest.raises(QuantizationError, match="is not smaller than the float32 file's .*already the smallest"):
        quantize(src, out, mode="auto")
    assert not out.exists()
    log: list[str] = []
    quantize(src, out, mode="fp16", log=log.append)  # asked for by name: written, its size reported
    assert out.exists() and any(line.startswith("warning: float16: ") and "is not smaller" in line for line in log)
