"""Models that cannot be exported correctly are refused with one clear line and no file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeseq.errors import ExportError, UnsupportedModelError
from edgeseq.export import export


class UnscriptableLoop(nn.Module):
    """pytorch/examples' time_sequence_prediction: LSTMCells stepped in Python, then fed their own
    output; ``output`` is defined only inside the first loop, so torch.jit.script cannot compile it."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm1 = nn.LSTMCell(1, 16)
        self.lstm2 = nn.LSTMCell(16, 16)
        self.linear = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, future: int = 0) -> torch.Tensor:
        outputs = []
        h, c = x.new_zeros(x.size(0), 16), x.new_zeros(x.size(0), 16)
        h2, c2 = x.new_zeros(x.size(0), 16), x.new_zeros(x.size(0), 16)
        for x_t in x.split(1, dim=1):
            h, c = self.lstm1(x_t, (h, c))
            h2, c2 = self.lstm2(h, (h2, c2))
            output = self.linear(h2)
            outputs += [output]
        for _ in range(future):
            h, c = self.lstm1(output, (h, c))
            h2, c2 = self.lstm2(h, (h2, c2))
            output = self.linear(h2)
            outputs += [output]
        return torch.cat(outputs, dim=1)


def test_python_loop_that_cannot_be_scripted_is_refused_with_the_line_at_fault(tmp_path):
    out = tmp_path / "loop.onnx"
    with pytest.raises(ExportError, match="frozen or unrolled") as info:
        export(UnscriptableLoop(), out, input_shape=[2, 12])
    text = str(info.value)
    assert "'lstm1', 'lstm2' in a Python loop" in text and "torch.jit.script could not compile forward" in text
    assert "undefined value output" in text and "self.lstm1(output" in text  # TorchScript's reason, and where
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_no_check_skips_the_gate_but_still_writes_a_card(tmp_path):
    from edgeseq.card import read_card
    from models.families import gru

    out = tmp_path / "g.onnx"
    export(gru(), out, check=False)
    assert read_card(out)["parity"]["passed"] is None


def test_input_shape_and_dynamic_axes_for_rank4(tmp_path):
    from edgeseq.card import read_card
    from edgeseq.export import parity
    from models.families import CNNLSTM

    class Undeclared(CNNLSTM):
        example_inputs = None  # no declared example: --input-shape must be used

    out = tmp_path / "cnn.onnx"
    model = Undeclared(sub_len=4)
    export(model, out, input_shape=[1, 10, 4, 1], dynamic_axes=[0, 1])
    card = read_card(out)
    assert card["inputs"][0]["symbolic_shape"] == ["batch", "seq", 4, 1]
    report = parity.measure(out, model, batch_sizes=[1, 5], lengths=[1, 3, 40])
    assert report.passed


class UnivariateLSTM(nn.Module):
    """Takes a plain series (batch, length) and adds the feature axis itself."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, 8, batch_first=True)
        self.fc = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x.unsqueeze(-1))[0][:, -1])


def test_a_univariate_series_model_is_exported_as_batch_by_length(tmp_path):
    import numpy as np

    from edgeseq import Session

    torch.manual_seed(0)
    model, out, log = UnivariateLSTM().eval(), tmp_path / "uni.onnx", []
    export(model, out, log=log.append)
    assert any("univariate series (batch, length)" in m for m in log)
    s = Session(out, device="cpu")
    assert list(s.inputs[0].shape) == ["batch", "seq"]
    series = [np.linspace(0, 1, n, dtype=np.float32) for n in (5, 30)]
    with torch.inference_mode():
        want = np.concatenate([model(torch.from_numpy(v)[None]).numpy() for v in series])
    np.testing.assert_allclose(s.predict(series), want, atol=1e-5, rtol=1e-5)


class BuildsDoubles(UnivariateLSTM):
    """pytorch/examples' habit: state created as float64 in forward, model converted with .double()."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(1, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.size(0), 8, dtype=torch.double)
        c = torch.zeros(x.size(0), 8, dtype=torch.double)
        for x_t in x.split(1, dim=1):
            h, c = self.cell(x_t, (h, c))
        return self.fc(h)


def test_float64_tensors_made_in_forward_get_the_fix_not_a_shape_hint(tmp_path):
    out = tmp_path / "d.onnx"
    with pytest.raises(ExportError, match=r"fails in float32.*Double and Float.*dtype=x.dtype") as info:
        export(BuildsDoubles().double(), out)
    assert "--input-shape" not in str(info.value)
    assert not out.exists()


class DoubleState(nn.Module):
    """An nn.LSTM given a float64 initial state: PyTorch's CPU error is 'get_mkldnn_dtype: unsupported data type'."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(1, x.size(0), 8, dtype=torch.double)
        return self.lstm(x, (h0, torch.zeros_like(h0)))[0][:, -1]


class DoubleHead(DoubleState):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # float @ double: "... got: float != double"
        return self.lstm(x)[0][:, -1] @ torch.ones(8, 2, dtype=torch.double)


@pytest.mark.parametrize("cls", [DoubleState, DoubleHead])
def test_every_wording_of_float64_in_forward_gets_the_fix(tmp_path, cls):
    with pytest.raises(ExportError, match=r"fails in float32.*dtype=x.dtype") as info:
        export(cls().eval(), tmp_path / "d.onnx")
    assert "--input-shape" not in str(info.value)


class FixedBatchState(DoubleState):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # a state built for batch 32 only
        h0 = torch.zeros(1, 32, 8)
        return self.lstm(x, (h0, torch.zeros_like(h0)))[0][:, -1]


def test_a_state_of_one_batch_size_is_refused_at_once_not_sent_to_input_shape(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"runs at batch 32 only .*torch.zeros\(layers, 32, hidden\)"):
        export(FixedBatchState().eval(), tmp_path / "b.onnx")


class AddsTimeIndex(nn.Module):
    """A forecaster that appends a time-index column in forward: x has 4 features, its LSTM takes 5."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.size(1), dtype=x.dtype).expand(x.size(0), -1).unsqueeze(-1) / 100
        return self.lstm(torch.cat([x, t], -1))[0][:, -1]


class AddsLagDifferences(AddsTimeIndex):
    """x and its first differences side by side: x has 4 features, the LSTM takes 8."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)
        return self.lstm(torch.cat([x, diff], -1))[0][:, -1]


@pytest.mark.parametrize("cls", [AddsTimeIndex, AddsLagDifferences])
def test_features_added_in_forward_are_found_without_flags(tmp_path, cls):
    log: list[str] = []
    result = export(cls().eval(), tmp_path / "f.onnx", log=log.append)
    assert result.card["inputs"][0]["shape"][-1] == 4
    assert any("forward adds or drops features before its first recurrent layer" in line for line in log)


def test_a_wrong_feature_count_gets_the_count_that_fits(tmp_path):
    with pytest.raises(ExportError, match=r"Expected 5, got 6; pass --input-shape BATCH,LENGTH,4 \(forward adds"):
        export(AddsTimeIndex().eval(), tmp_path / "f.onnx", input_shape=(2, 8, 5))
    with pytest.raises(ExportError, match=r"Expected 5, got 4; pass --input-shape BATCH,LENGTH,5$"):
        export(_Plain().eval(), tmp_path / "f.onnx", input_shape=(1, 20, 4))


class _Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0][:, -1]


class CharRNN(nn.Module):
    """Udacity's char-RNN: forward(x, hidden) -> (logits over batch*steps, hidden), and init_hidden()."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(10, 16, 2, batch_first=True)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor] | None) -> tuple:
        out, hidden = self.lstm(x, hidden)
        return self.fc(out.contiguous().view(-1, 16)), hidden

    def init_hidden(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(2, batch_size, 16), torch.zeros(2, batch_size, 16)


def test_a_state_parameter_gets_the_default_to_give_it(tmp_path):
    with pytest.raises(ExportError, match=r"'hidden' looks like the recurrent state.*def forward\(self, x, hidden=None\)"):
        export(CharRNN(), tmp_path / "c.onnx")


def test_an_output_that_merges_batch_and_time_is_named(tmp_path):
    from edgeseq.errors import UnsupportedModelError
    from edgeseq.export.stateful import export_with_extras

    class Defaulted(CharRNN):
        def forward(self, x, hidden=None):
            return super().forward(x, hidden)

    log: list[str] = []
    export(Defaulted().eval(), tmp_path / "c.onnx", log=log.append)
    assert any(m.startswith("warning: output 'y0' merges the batch and time axes") for m in log)
    with pytest.raises(UnsupportedModelError, match=r"refused --streaming: output 'y0' merges the batch and time axes"):
        export_with_extras(Defaulted().eval(), tmp_path / "s.onnx", streaming=True)
    assert not (tmp_path / "s.onnx").exists()


class CharRNNStep(nn.Module):
    """pytorch.org's name classifier: one step per call, forward(input, hidden), Linear layers only."""

    def __init__(self) -> None:
        super().__init__()
        self.i2h = nn.Linear(7 + 16, 16)
        self.i2o = nn.Linear(7 + 16, 3)

    def forward(self, input: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        combined = torch.cat((input, hidden), 1)
        return self.i2o(combined), self.i2h(combined)


def test_a_step_model_with_a_carried_state_is_told_to_declare_its_inputs(tmp_path):
    with pytest.raises(ExportError, match=r"forward\(input, hidden\) takes one step.*example_inputs\(\)"):
        export(CharRNNStep(), tmp_path / "c.onnx")

    class Declared(CharRNNStep):
        def example_inputs(self):
            return torch.zeros(1, 7), torch.zeros(1, 16)

    out = tmp_path / "d.onnx"
    assert export(Declared().eval(), out).report.passed  # the step, with the state as an input and an output


class DecodesInPython(nn.Module):
    """A tagger that decodes with .item() into a Python list (the Bi-LSTM CRF tutorial's viterbi path)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        scores = self.fc(self.lstm(x)[0])
        return scores, [int(scores[0, t].argmax().item()) for t in range(scores.size(1))]


def test_python_values_among_the_outputs_are_refused_by_name(tmp_path):
    out = tmp_path / "d.onnx"
    with pytest.raises(UnsupportedModelError, match=r"forward returns Python values.*output 1 is int"):
        export(DecodesInPython(), out)
    assert not out.exists()


class SpectrumHead(nn.Module):
    """No loop over time, but torch.fft.rfft, which the TorchScript exporter has no ONNX form for."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(self.lstm(x)[0], dim=1).abs()


def test_an_operator_with_no_onnx_form_is_named_first_not_blamed_on_a_frozen_length(tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(UnsupportedModelError) as info:
        export(SpectrumHead(), out, input_shape=(2, 8, 4))
    assert str(info.value).startswith("refused: PyTorch's ONNX export has no form for operator 'aten::fft_rfft' at "
                                      "opset 17")
    assert "probably depends on the sequence length in Python" not in str(info.value)
    assert not out.exists()


class StateInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(5, 16, num_layers=3, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x, h0, c0):
        out, (h, c) = self.rnn(x, (h0, c0))
        return self.fc(out), h, c

    def example_inputs(self):
        return torch.randn(4, 10, 5), torch.randn(3, 4, 16), torch.randn(3, 4, 16)


class NestedStateInput(StateInputs):
    def forward(self, x, hc):
        return self.fc(self.rnn(x, hc)[0])

    def example_inputs(self):
        return torch.randn(4, 10, 5), (torch.randn(3, 4, 16), torch.randn(3, 4, 16))


@pytest.mark.parametrize("model, name", [(StateInputs, "h0"), (NestedStateInput, "hc")])
def test_state_given_as_inputs_points_to_a_default_and_streaming_not_to_a_fixed_batch(tmp_path, model, name):
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError) as info:
        export(model(), out)
    text = str(info.value)
    assert f"forward's input {name!r} is a recurrent layer's start state" in text and "--streaming" in text
    assert "runs at batch" not in text and not out.exists()


def test_a_dynamic_axis_the_model_cannot_vary_is_refused(tmp_path):
    out = tmp_path / "m.onnx"

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 8, batch_first=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.lstm(x)[0][:, -1])

    with pytest.raises(ExportError, match=r"--dynamic-axes 2: axis 2 of the input \(4\) cannot vary: PyTorch fails at 5"):
        export(Net(), out, input_shape=(2, 8, 4), dynamic_axes=[2])
    assert not out.exists()


class StepsArgument(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(6, 16, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x, steps: int):
        return self.fc(self.rnn(x)[0][:, -steps:])


def test_a_required_python_number_argument_gets_the_default_fix(tmp_path):
    with pytest.raises(ExportError, match=r"forward's 'steps' is a Python int, not a tensor: give it a default \(def forward\(self, x, steps: int = 4\)\)"):
        export(StepsArgument(), tmp_path / "m.onnx")


class LengthAsNumber(nn.Module):
    """Time-first, averaged over time with len(out): no loop, but a length used as a Python number."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(6, 16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out.sum(0) / len(out))


def test_a_length_used_as_a_number_is_not_called_a_loop(tmp_path):
    said: list[str] = []
    export(LengthAsNumber(), tmp_path / "m.onnx", log=said.append)
    assert any("uses the sequence length as a Python number" in line for line in said)
    assert not any("loops over time" in line for line in said)


def test_a_channels_axis_named_as_time_points_to_the_real_time_axis(tmp_path):
    class ChannelsFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(4, 8, 3, padding=1)
            self.rnn = nn.GRU(8, 16, batch_first=True)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):  # (batch, channels, time)
            return self.fc(self.rnn(self.conv(x).transpose(1, 2))[0][:, -1])

    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=r"axis 1 \(4\) cannot vary .* and axis 2 can: .*--dynamic-axes 0,2"):
        export(ChannelsFirst(), out, input_shape=(2, 4, 10), dynamic_axes=[0, 1])
    assert not out.exists()
    assert export(ChannelsFirst(), out, input_shape=(2, 4, 10), dynamic_axes=[0, 2]).report.passed


def test_state_inputs_without_an_example_get_the_state_advice(tmp_path):
    class NoExample(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(5, 16, batch_first=True)
            self.fc = nn.Linear(16, 3)

        def forward(self, x, h0, c0):
            return self.fc(self.rnn(x, (h0, c0))[0])

    with pytest.raises(ExportError, match=r"forward's input 'h0' is a recurrent layer's start state"):
        export(NoExample(), tmp_path / "m.onnx")
