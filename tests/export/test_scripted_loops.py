"""A Python loop over time (nn.LSTMCell/GRUCell or a hand-written cell): tracing unrolls it to the
example's length, so edgeseq exports the model scripted, as an ONNX Loop, and checks every length."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgeseq import Session
from edgeseq.card import op_histogram, read_card
from edgeseq.cli import main
from edgeseq.errors import ExportError
from edgeseq.export import export, parity

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script, deprecated in 2.13


class CellLoop(nn.Module):
    """The FINDINGS case: an LSTMCell stepped over ``x[:, t]``, last state to a head."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(4, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], 16)
        c = x.new_zeros(x.shape[0], 16)
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
        return self.head(h)


class HandWrittenCell(nn.Module):
    """A minimal GRU-like cell of Linear layers, every step's output returned (batch, seq, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.gates = nn.Linear(5 + 8, 16)
        self.candidate = nn.Linear(5 + 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.size(0), 8, dtype=x.dtype)
        steps: list[torch.Tensor] = []
        for t in range(x.size(1)):
            x_t = x[:, t]
            z, r = torch.sigmoid(self.gates(torch.cat([x_t, h], 1))).chunk(2, 1)
            n = torch.tanh(self.candidate(torch.cat([x_t, r * h], 1)))
            h = (1 - z) * n + z * h
            steps.append(h)
        return torch.stack(steps, 1)


def _seeded(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_a_cell_stepped_in_python_exports_as_a_loop_that_takes_any_length(tmp_path, exporter):
    model, out, log = _seeded(CellLoop), tmp_path / "loop.onnx", []
    result = export(model, out, exporter=exporter, log=log.append)
    assert result.report.passed and "Loop" in op_histogram(out)
    assert read_card(out)["loops"]["layers"] == ["cell"]
    assert any("exported it scripted" in m and "'cell'" in m for m in log)
    # lengths far from the example's (8): an unrolled graph fails or is wrong at these
    report = parity.measure(out, model, batch_sizes=[1, 5], lengths=[1, 3, 300])
    assert report.passed, report.failures


def test_a_hand_written_cell_keeps_per_step_outputs_and_the_loop_copies_no_input(tmp_path):
    model, out = _seeded(HandWrittenCell), tmp_path / "cell.onnx"
    export(model, out, input_shape=[2, 10, 5])  # the first Linear reads x_t and h: 13 is not the feature count
    assert list(Session(out, device="cpu").outputs[0].shape) == ["batch", "seq", 8]  # 8 from the PyTorch run
    x = np.random.default_rng(0).standard_normal((2, 57, 5)).astype(np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(Session(out, device="cpu").run({"x": x})["y"], want, atol=1e-5, rtol=1e-5)


def test_the_loop_body_reads_the_input_without_a_full_copy_per_step(tmp_path):
    out = tmp_path / "loop.onnx"
    export(_seeded(CellLoop), out)
    (loop,) = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Loop"]
    body = loop.attribute[0].g
    slices_of_x = [n for n in body.node if n.op_type == "Slice" and n.input[0] == "x"]
    assert slices_of_x == []  # x[:, t] was Slice(x, 0, INT64_MAX) + Gather: a copy of x at every step
    assert "full-range slices" in " ".join(read_card(out)["graph_cleanup"]["by"])


def test_dynamo_alone_cannot_script_and_says_which_exporter_can(tmp_path):
    out = tmp_path / "loop.onnx"
    with pytest.raises(ExportError, match="frozen or unrolled") as info:
        export(_seeded(CellLoop), out, exporter="dynamo")
    assert "'cell' in a Python loop" in str(info.value) and "--exporter torchscript (or auto)" in str(info.value)
    assert not out.exists()


def test_cli_export_then_infer_sequences_of_different_lengths(tmp_path):
    src = tmp_path / "net.py"
    src.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.cell = nn.GRUCell(3, 8)\n"
        "        self.fc = nn.Linear(8, 2)\n\n"
        "    def forward(self, x):\n"
        "        h = torch.zeros(x.size(0), 8)\n"
        "        for t in range(x.size(1)):\n"
        "            h = self.cell(x[:, t], h)\n"
        "        return self.fc(h)\n\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return Net()\n"
    )
    out = tmp_path / "net.onnx"
    result = CliRunner().invoke(main, ["export", f"{src}:build", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported it scripted (torch.jit.script) as an ONNX Loop" in result.stderr
    checked = CliRunner().invoke(main, ["check", str(out), "--against", f"{src}:build", "--lengths", "1,9,400"])
    assert checked.exit_code == 0, checked.output
    shown = CliRunner().invoke(main, ["inspect", str(out)])
    assert "in loop bodies (per step): " in shown.output and "MatMul x2" in shown.output  # the cell's two products
    assert "loop over time: cell (forward steps through time in a Python loop" in shown.output


class StepsACell(nn.Module):
    """A given cell stepped over ``x[:, t]`` (nn.GRUCell and nn.RNNCell need edgeseq's symbolics)."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.size(0), 5)
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
        return h


CELLS = {"gru": lambda: nn.GRUCell(3, 5), "gru-nobias": lambda: nn.GRUCell(3, 5, bias=False),
         "tanh": lambda: nn.RNNCell(3, 5), "relu": lambda: nn.RNNCell(3, 5, nonlinearity="relu")}


@pytest.mark.parametrize("kind", list(CELLS))
def test_gru_and_rnn_cells_export_with_their_equations(tmp_path, kind):
    torch.manual_seed(1)
    model, out = StepsACell(CELLS[kind]()).eval(), tmp_path / "cell.onnx"
    export(model, out, input_shape=[2, 6, 3])
    assert parity.measure(out, model, batch_sizes=[1, 4], lengths=[1, 2, 90]).passed


def test_a_scripted_torchscript_file_with_a_gru_cell_exports(tmp_path):
    torch.manual_seed(1)
    saved, out = tmp_path / "scripted.pt", tmp_path / "m.onnx"
    torch.jit.save(torch.jit.script(StepsACell(nn.GRUCell(3, 5)).eval()), saved)
    result = CliRunner().invoke(main, ["export", str(saved), "-o", str(out), "--input-shape", "2,6,3"])
    assert result.exit_code == 0, result.output  # was: "ONNX symbolic expected node type prim::ListConstruct"
    checked = CliRunner().invoke(main, ["check", str(out), "--against", str(saved), "--lengths", "1,50"])
    assert checked.exit_code == 0, checked.output


def test_the_cell_symbolics_apply_during_an_export_only(tmp_path):
    from edgeseq.export.symbolics import cell_symbolics

    scripted = torch.jit.script(StepsACell(nn.GRUCell(3, 5)).eval())

    def plain_export() -> None:
        torch.onnx.export(scripted, (torch.randn(2, 6, 3),), str(tmp_path / "m.onnx"), dynamo=False, opset_version=17)

    with cell_symbolics(17):
        plain_export()
    with pytest.raises(Exception, match="ListConstruct|gru_cell"):  # torch.onnx alone, as before
        plain_export()


class WideCellLoop(CellLoop):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(4, 64)  # 4*64*(4+64) weights: above dynamic INT8's small-layer cut
        self.head = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], 64)
        c = x.new_zeros(x.shape[0], 64)
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
        return self.head(h)


def test_auto_quantizes_the_loop_body_to_int8_and_never_picks_fp16(tmp_path):
    from edgeseq.quantize import quantize

    model, out, q = _seeded(WideCellLoop), tmp_path / "loop.onnx", tmp_path / "loop.int8.onnx"
    export(model, out)
    result = quantize(out, q, mode="auto")
    assert result.mode == "dynamic" and "loops over time" in " ".join(result.notes + [str(result.card)])
    assert "com.microsoft::DynamicQuantizeLSTM" in op_histogram(q, nested=True)
    assert "com.microsoft::DynamicQuantizeLSTM" not in op_histogram(q)  # it is inside the Loop
    assert result.bytes < 0.5 * result.float_bytes
    x = np.random.default_rng(2).standard_normal((3, 250, 4)).astype(np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(Session(q, device="cpu").run({"x": x})["y"], want, atol=0.05)
    with pytest.raises(Exception, match="Loop"):
        quantize(out, tmp_path / "loop.fp16.onnx", mode="fp16")
    assert not (tmp_path / "loop.fp16.onnx").exists()


def test_streaming_a_cell_loop_is_refused_with_the_way_to_stream(tmp_path):
    from edgeseq.errors import UnsupportedModelError
    from edgeseq.export.stateful import export_with_extras

    out = tmp_path / "loop.onnx"
    with pytest.raises(UnsupportedModelError, match=r"'cell' is an nn.LSTMCell stepped in a Python loop.*weight_ih_l0"):
        export_with_extras(_seeded(CellLoop), out, streaming=True)
    assert not out.exists()


def test_no_check_warns_that_an_unrolled_cell_loop_goes_unchecked(tmp_path):
    log: list[str] = []
    export(_seeded(CellLoop), tmp_path / "loop.onnx", check=False, log=log.append)
    assert any(m.startswith("warning: the model steps 'cell' without an ONNX Loop") for m in log)


class SplitLoopWithFuture(nn.Module):
    """pytorch/examples' time_sequence_prediction, made scriptable (``output`` defined before the loop):
    a univariate series split per step, and a ``future`` argument with a default."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm1 = nn.LSTMCell(1, 16)
        self.linear = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, future: int = 0) -> torch.Tensor:
        h, c = x.new_zeros(x.size(0), 16), x.new_zeros(x.size(0), 16)
        output = x.new_zeros(x.size(0), 1)
        outputs: list[torch.Tensor] = []
        for x_t in x.split(1, dim=1):
            h, c = self.lstm1(x_t, (h, c))
            output = self.linear(h)
            outputs.append(output)
        for _ in range(future):
            h, c = self.lstm1(output, (h, c))
            output = self.linear(h)
            outputs.append(output)
        return torch.cat(outputs, dim=1)


def test_a_parameter_with_a_default_stays_a_constant_of_the_scripted_export(tmp_path):
    model, out = _seeded(SplitLoopWithFuture), tmp_path / "f.onnx"
    export(model, out)  # (batch, length, 1) fails the cell; edgeseq finds the univariate (batch, length)
    session = Session(out, device="cpu")
    assert [i.name for i in session.inputs] == ["x"]  # not 'future' as well
    assert parity.measure(out, model, batch_sizes=[2], lengths=[1, 60]).passed


class ConvLSTMCell(nn.Module):
    """The ConvLSTM cell most video models copy; its state argument without a type annotation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1 + 4, 4 * 4, 3, padding=1)

    def forward(self, input_tensor, cur_state):  # noqa: ANN001 - as the original, unannotated
        h_cur, c_cur = cur_state
        i, f, o, g = torch.split(self.conv(torch.cat([input_tensor, h_cur], dim=1)), 4, dim=1)
        c_next = torch.sigmoid(f) * c_cur + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_next), c_next


class AnnotatedConvLSTMCell(ConvLSTMCell):
    def forward(self, input_tensor: torch.Tensor, cur_state: tuple[torch.Tensor, torch.Tensor]):
        h_cur, c_cur = cur_state  # (TorchScript compiles no super() call: the body again)
        i, f, o, g = torch.split(self.conv(torch.cat([input_tensor, h_cur], dim=1)), 4, dim=1)
        c_next = torch.sigmoid(f) * c_cur + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_next), c_next


class ConvLSTM(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.cell, self.head = cell(), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, time, 1, H, W)
        h = x.new_zeros(x.size(0), 4, x.size(3), x.size(4))
        c = x.new_zeros(x.size(0), 4, x.size(3), x.size(4))
        for t in range(x.size(1)):
            h, c = self.cell(x[:, t], (h, c))
        return self.head(h.mean(dim=(2, 3)))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 6, 1, 5, 5),)


def test_an_unannotated_tuple_state_is_annotated_from_one_call(tmp_path):
    torch.manual_seed(0)
    model, out, log = ConvLSTM(ConvLSTMCell).eval(), tmp_path / "c.onnx", []
    export(model, out, log=log.append)
    assert any("annotated for TorchScript" in m and "cur_state: tuple[torch.Tensor, torch.Tensor]" in m for m in log)
    assert parity.measure(out, model, batch_sizes=[2], lengths=[1, 17]).passed
    import inspect

    assert inspect.signature(ConvLSTMCell.forward).parameters["cur_state"].annotation is inspect.Parameter.empty


def test_a_type_torchscript_could_not_infer_gets_the_annotation_to_add():
    from edgeseq.export.scripted import script_error

    text = script_error(RuntimeError("\nTensor (inferred) cannot be used as a tuple:\n  h, c = state\n  ~~~~ <--- HERE\n"))
    assert "(at: h, c = state)" in text and "annotate it in the signature" in text


class UnbindLoop(nn.Module):
    """``for x_t in x.unbind(1)`` (batch-first), every step's output stacked."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(4, 16)
        self.out = nn.Linear(16, 2)

    def forward(self, x):
        h = x.new_zeros(x.size(0), 16)
        outs = []
        for x_t in x.unbind(1):
            h = self.cell(x_t, h)
            outs.append(self.out(h))
        return torch.stack(outs, 1)


class IterateTimeFirst(nn.Module):
    """``for x_t in x`` over a time-first input."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(4, 16)
        self.out = nn.Linear(16, 2)

    def forward(self, x):
        h, c = x.new_zeros(x.size(1), 16), x.new_zeros(x.size(1), 16)
        for x_t in x:
            h, c = self.cell(x_t, (h, c))
        return self.out(h)


@pytest.mark.parametrize("cls", [UnbindLoop, IterateTimeFirst])
def test_a_loop_over_unbound_steps_exports(cls, tmp_path):
    # the exporter's own unbind keeps each step's length-1 axis ("First input tensor must have rank 3")
    out, model = tmp_path / "u.onnx", _seeded(cls)
    result = export(model, out, time_first=cls is IterateTimeFirst)
    assert result.report.passed and result.card.get("loops")
    assert parity.measure(out, model, batch_sizes=[2], lengths=[1, 40]).passed


class WritesPreallocated(nn.Module):
    """pytorch-seq2seq's decoder loop, made deterministic: every step but the first written into a tensor made
    before the loop (``outputs[t] = y``, time-first), so a 1-step target runs the loop zero times."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.GRU(3, 8)
        self.cell = nn.GRUCell(2, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x, tgt):
        _, h = self.enc(x)
        h = h[0]
        outputs = torch.zeros(tgt.size(0), tgt.size(1), 2)
        step = tgt[0]
        for t in range(1, tgt.size(0)):
            h = self.cell(step, h)
            y = self.out(h)
            outputs[t] = self.row(outputs, t, y)
            step = y
        return outputs

    def row(self, outputs: torch.Tensor, t: int, y: torch.Tensor) -> torch.Tensor:
        return y

    def example_inputs(self):
        return torch.randn(9, 2, 3), torch.randn(5, 2, 2)


class WritesAtACounter(WritesPreallocated):
    """The same writes at a counter the loop carries (``outputs[i] = y; i += 1``): not provably one row each."""

    def forward(self, x, tgt):
        _, h = self.enc(x)
        h = h[0]
        outputs = torch.zeros(tgt.size(0), tgt.size(1), 2)
        step, i = tgt[0], 1
        for _step in range(1, tgt.size(0)):
            h = self.cell(step, h)
            y = self.out(h)
            outputs[i] = y
            step, i = y, i + 1
        return outputs


def test_per_step_writes_into_a_preallocated_tensor_become_one_write_after_the_loop(tmp_path):
    from edgeseq.export.cleanup import loop_writes_carried_tensor

    model, out, log = _seeded(WritesPreallocated), tmp_path / "w.onnx", []
    result = export(model, out, log=log.append)  # time-first: detected
    assert result.report.passed and "per-step writes" in " ".join(result.card["graph_cleanup"]["by"])
    assert not loop_writes_carried_tensor(onnx.load(str(out)))
    assert not any("outputs[t] = y" in m for m in log)
    rng = np.random.default_rng(3)
    session = Session(out, device="cpu")
    for steps in (1, 2, 40):  # 1: the loop runs no step, and the tensor stays zeros
        x, tgt = rng.standard_normal((6, 3, 3), np.float32), rng.standard_normal((steps, 3, 2), np.float32)
        with torch.inference_mode():
            want = model(torch.from_numpy(x), torch.from_numpy(tgt)).numpy()
        np.testing.assert_allclose(session.run({"x": x, "tgt": tgt})["y"], want, atol=1e-5)


class WritesBatchFirst(nn.Module):
    """A batch-first tagger writing ``outputs[:, t] = y``: scattered as ``[b, t]`` for every sample b."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h, c = x.new_zeros(x.size(0), 8), x.new_zeros(x.size(0), 8)
        outputs = x.new_zeros(x.size(0), x.size(1), 3)
        for t in range(x.size(1)):
            h, c = self.cell(x[:, t], (h, c))
            outputs[:, t] = self.head(h)
        return outputs


def test_batch_first_per_step_writes_are_written_once_too(tmp_path):
    from edgeseq.export.cleanup import loop_writes_carried_tensor

    model, out = _seeded(WritesBatchFirst), tmp_path / "b.onnx"
    result = export(model, out, input_shape=(2, 8, 4))
    assert "per-step writes" in " ".join(result.card["graph_cleanup"]["by"])
    assert not loop_writes_carried_tensor(onnx.load(str(out)))
    assert parity.measure(out, model, batch_sizes=[1, 5], lengths=[1, 37]).passed


class ReadsWhatItWrote(WritesPreallocated):
    """Each step adds the row written the step before (``outputs[t] = y + outputs[t - 1]``): the body reads the
    tensor's values, so its writes cannot wait until after the loop."""

    def row(self, outputs: torch.Tensor, t: int, y: torch.Tensor) -> torch.Tensor:
        return y + outputs[t - 1]


@pytest.mark.parametrize("cls", [WritesAtACounter, ReadsWhatItWrote])
def test_writes_the_pass_cannot_prove_safe_stay_and_get_a_note_on_their_cost(cls, tmp_path):
    log: list[str] = []
    result = export(_seeded(cls), tmp_path / "c.onnx", log=log.append)
    assert result.report.passed and "per-step writes" not in " ".join(result.card["graph_cleanup"]["by"])
    assert any("outputs[t] = y" in m and "torch.stack" in m for m in log)


class TeacherForcing(nn.Module):
    """The seq2seq tutorials' decoder loop: feed back the prediction, or the target at random."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.LSTM(3, 8, batch_first=True)
        self.cell = nn.LSTMCell(2, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x, tgt, teacher_forcing_ratio: float = 0.0):
        _, (h, c) = self.enc(x)
        h, c = h[0], c[0]
        step, outs = tgt[:, 0], []
        for t in range(1, tgt.size(1)):
            h, c = self.cell(step, (h, c))
            y = self.out(h)
            outs.append(y)
            step = tgt[:, t] if random.random() < teacher_forcing_ratio else y
        return torch.stack(outs, 1)

    def example_inputs(self):
        return torch.randn(2, 9, 3), torch.randn(2, 5, 2)


def test_teacher_forcing_with_python_random_gets_the_way_out(tmp_path):
    with pytest.raises(ExportError, match=r"random\.random\(\).*TorchScript cannot call Python's random"):
        export(_seeded(TeacherForcing), tmp_path / "t.onnx")
    assert not (tmp_path / "t.onnx").exists()


def test_an_annotated_conv_lstm_exports_as_a_loop(tmp_path):
    torch.manual_seed(0)
    model, out = ConvLSTM(AnnotatedConvLSTMCell).eval(), tmp_path / "c.onnx"
    export(model, out)
    assert "Loop" in op_histogram(out)
    assert parity.measure(out, model, batch_sizes=[1, 3], lengths=[1, 17]).passed
