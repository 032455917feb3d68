"""nn.LSTM(proj_size=...) has no native ONNX node: it is exported as a Loop over time, checked against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgeseq import Session
from edgeseq.card import op_histogram, read_card
from edgeseq.cli import main
from edgeseq.errors import QuantizationError, UnsupportedModelError
from edgeseq.export import check, export
from edgeseq.export.projected import projected_lstm
from edgeseq.export.stateful import export_with_extras
from edgeseq.quantize import quantize

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")  # PyTorch's


@pytest.mark.parametrize("bidirectional, batch_first", [(False, True), (True, True), (False, False)])
def test_the_loop_module_computes_what_nn_lstm_computes(bidirectional, batch_first):
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 16, num_layers=2, proj_size=8, batch_first=batch_first, bidirectional=bidirectional).eval()
    loop = projected_lstm(lstm)
    x = torch.randn(3, 11, 4) if batch_first else torch.randn(11, 3, 4)
    dirs = 2 if bidirectional else 1
    state = (torch.randn(2 * dirs, 3, 8), torch.randn(2 * dirs, 3, 16))
    with torch.inference_mode():
        for args in ((x,), (x, state)):
            (want, (h, c)), (got, (h2, c2)) = lstm(*args), loop(*args)
            for a, b in ((want, got), (h, h2), (c, c2)):
                torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


class Projected(nn.Module):
    """A bidirectional projected LSTM with a per-step head (the LSTMP of on-device speech models)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(12, 64, num_layers=2, proj_size=32, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return Projected().eval()


def test_a_projected_lstm_exports_as_a_loop_with_any_length(tmp_path):
    out = tmp_path / "m.onnx"
    result = export(_model(), out, input_shape=(1, 10, 12))
    assert result.report.passed
    assert "Loop" in op_histogram(out) and "LSTM" not in op_histogram(out)
    assert read_card(out)["loops"]["layers"] == ["rnn"]
    report = check(out, _model(), batch_sizes=[1, 4], lengths=[1, 37])
    assert report.passed, [c.note for c in report.failures]
    x = np.random.default_rng(0).standard_normal((2, 23, 12)).astype(np.float32)
    with torch.inference_mode():
        want = _model()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(Session(out, device="cpu").predict(x), want, atol=1e-5)


def test_int8_works_and_fp16_and_streaming_say_why_not(tmp_path):
    out = tmp_path / "m.onnx"
    export(_model(), out, input_shape=(1, 10, 12))
    quantize(out, tmp_path / "m.int8.onnx", mode="dynamic")
    with pytest.raises(QuantizationError, match="has a Loop .*use --mode dynamic"):
        quantize(out, tmp_path / "m.fp16.onnx", mode="fp16")
    assert not (tmp_path / "m.fp16.onnx").exists()
    with pytest.raises(UnsupportedModelError, match="proj_size=32.*--lengths"):
        export_with_extras(_model(), tmp_path / "s.onnx", input_shape=(1, 10, 12), lengths=True)


class _Streamable(nn.Module):
    """A unidirectional stacked LSTMP with a per-step head: the streaming speech shape."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(12, 32, num_layers=2, proj_size=8, batch_first=True)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


def test_a_projected_lstm_streams_with_its_narrow_h_and_wide_c(tmp_path):
    from edgeseq import StreamingSession

    torch.manual_seed(0)
    model = _Streamable().eval()
    path = tmp_path / "s.onnx"
    export_with_extras(model, path, input_shape=(1, 10, 12), streaming=True)
    s = StreamingSession(path, device="cpu")
    x = np.random.default_rng(1).standard_normal((2, 19, 12)).astype(np.float32)
    got = np.concatenate([s.step(x[:, t : t + 4]) for t in range(0, 19, 4)], axis=1)
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert {k: v.shape for k, v in s.state.items()} == {"rnn.h": (2, 2, 8), "rnn.c": (2, 2, 32)}


def test_cli_says_the_layer_became_a_loop(tmp_path):
    ref = tmp_path / "net.py"
    ref.write_text("import torch\n\ndef build():\n    torch.manual_seed(0)\n"
                   "    return torch.nn.LSTM(6, 16, proj_size=4, batch_first=True)\n")
    result = CliRunner().invoke(main, ["export", f"{ref}:build", "-o", str(tmp_path / "m.onnx"), "--input-shape", "1,9,6"])
    assert result.exit_code == 0, result.output
    assert "exported as an ONNX Loop over time" in result.stderr


def test_the_dynamo_exporter_is_refused_for_the_loop_with_the_way_that_works(tmp_path):
    with pytest.raises(UnsupportedModelError, match="TorchScript exporter only; use --exporter torchscript"):
        export(_model(), tmp_path / "m.onnx", input_shape=(1, 10, 12), exporter="dynamo")


def test_pytorchs_own_warnings_stay_out_of_the_cli_output(tmp_path):
    """torch warns "LSTM with projections is not supported with oneDNN" on every projected forward."""
    import subprocess
    import sys

    (tmp_path / "proj.py").write_text(
        "import torch\nfrom torch import nn\n\nclass P(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.rnn = nn.LSTM(6, 16, proj_size=8, batch_first=True)\n        self.fc = nn.Linear(8, 3)\n\n"
        "    def forward(self, x):\n        return self.fc(self.rnn(x)[0][:, -1])\n\n"
        "def build():\n    torch.manual_seed(0)\n    return P()\n")
    done = subprocess.run([sys.executable, "-m", "edgeseq", "export", f"{tmp_path / 'proj.py'}:build", "-o",
                           str(tmp_path / "p.onnx")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "_VF" not in done.stderr
