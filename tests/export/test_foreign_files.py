"""Files another exporter wrote (a hand-written ``torch.onnx.export``, no model card): check, infer, quantize, bench.

A switcher's own files are where a frozen length or a state input laid out (layers, batch, hidden) shows:
check must find the first and read the second by its axis names, never pass on a sweep it could not run.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgeseq.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning",
                                        "ignore::UserWarning")

MODELS = '''
import torch, torch.nn as nn

class CellState(nn.Module):  # a Python loop over LSTMCell with the state as inputs: traced at one length
    def __init__(s):
        super().__init__(); s.cell = nn.LSTMCell(6, 20); s.fc = nn.Linear(20, 2)
    def forward(s, x, h0, c0):
        h, c = h0[0], c0[0]
        for t in range(x.size(1)):
            h, c = s.cell(x[:, t], (h, c))
        return s.fc(h), h[None], c[None]

class WithState(nn.Module):  # forward(x, h0, c0) -> (y, h_n, c_n), the usual hand-exported streaming form
    def __init__(s):
        super().__init__(); s.lstm = nn.LSTM(6, 20, batch_first=True); s.fc = nn.Linear(20, 2)
    def forward(s, x, h0, c0):
        out, (h, c) = s.lstm(x, (h0, c0))
        return s.fc(out[:, -1]), h, c

class Plain(nn.Module):
    def __init__(s):
        super().__init__(); s.lstm = nn.LSTM(6, 20, 2, batch_first=True); s.fc = nn.Linear(20, 2)
    def forward(s, x):
        return s.fc(s.lstm(x)[0][:, -1])

def cell_state(): torch.manual_seed(0); return CellState().eval()
def with_state(): torch.manual_seed(0); return WithState().eval()
def plain(): torch.manual_seed(0); return Plain().eval()
'''

STATE_AXES = {"x": {0: "batch", 1: "seq"}, "h0": {1: "batch"}, "c0": {1: "batch"}, "y": {0: "batch"},
              "h_n": {1: "batch"}, "c_n": {1: "batch"}}


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """name -> (ONNX file written by torch.onnx.export by hand, the REF of its PyTorch model)."""
    import importlib.util

    folder = tmp_path_factory.mktemp("foreign")
    (folder / "nets.py").write_text(MODELS)
    spec = importlib.util.spec_from_file_location("foreign_nets", folder / "nets.py")
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    files = {}

    def write(name, factory, args, **kw):
        path = folder / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(factory(), args, str(path), dynamo=False, opset_version=17, **kw)
        files[name] = (path, f"{folder / 'nets.py'}:{factory.__name__}")

    state = (torch.zeros(1, 1, 20), torch.zeros(1, 1, 20))
    names = {"input_names": ["x", "h0", "c0"], "output_names": ["y", "h_n", "c_n"], "dynamic_axes": STATE_AXES}
    write("cell_state_at_1", nets.cell_state, (torch.randn(1, 1, 6), *state), **names)
    write("with_state", nets.with_state, (torch.randn(1, 5, 6), *state), **names)
    write("length_frozen", nets.plain, (torch.randn(4, 10, 6),), input_names=["x"], output_names=["y"],
          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    write("all_frozen", nets.plain, (torch.randn(2, 10, 6),), input_names=["x"], output_names=["y"])
    return files


def _check(path, ref, *args):
    return CliRunner().invoke(main, ["check", str(path), "--against", ref, *args])


def test_state_inputs_are_read_by_their_axis_names_and_the_whole_sweep_is_compared(foreign, tmp_path):
    path, ref = foreign["with_state"]
    report = tmp_path / "r.json"
    result = _check(path, ref, "--lengths", "1,7", "--batch-sizes", "1,3", "--json", str(report))
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())["summary"]
    assert summary["skipped"] == 0 and summary["batch_sizes"] == [1, 3] and 7 in summary["lengths"]


def test_a_state_model_traced_at_one_step_fails_instead_of_passing_at_batch_1_length_1(foreign):
    path, ref = foreign["cell_state_at_1"]  # the trace reads step 0 only
    result = _check(path, ref, "--lengths", "1,5", "--batch-sizes", "1,3")
    assert result.exit_code == 1 and "parity FAILED" in result.stderr
    assert "skipped" not in result.output


def test_a_length_frozen_by_the_exporter_is_named_and_the_requested_lengths_are_kept(foreign):
    path, ref = foreign["length_frozen"]  # x: [batch, 10, 6], from an LSTM that runs at any length
    result = _check(path, ref, "--lengths", "3,10,50", "--batch-sizes", "1,3")
    assert result.exit_code == 1
    assert "the file takes length 10 only; PyTorch ran at length 50: frozen at export" in result.output
    assert "its length was frozen when it was exported" in result.stderr


def test_a_sweep_that_pytorch_runs_at_no_length_for_some_batch_does_not_pass():
    from edgeseq.errors import ParityError
    from edgeseq.export.parity import ParityCase, ParityReport, gate

    cases = [ParityCase(1, 5, "y"), ParityCase(3, 5, "*", skipped=True, note="PyTorch rejects this shape: h0 batch")]
    assert ParityReport(cases, 1e-5, 1e-5).passed  # inside export's own checks: as before
    strict = ParityReport(cases, 1e-5, 1e-5, every_batch=True)
    assert not strict.passed and strict.batches_never_compared == [3]
    with pytest.raises(ParityError, match=r"nothing was compared at batch 3 \(PyTorch rejects this shape"):
        gate(strict)


def test_infer_reads_and_writes_state_along_its_batch_axis(foreign, tmp_path):
    path, ref = foreign["with_state"]
    rng = np.random.default_rng(0)
    n = 300  # more than one --batch-size chunk
    feed = {"x": rng.standard_normal((n, 6, 6)).astype(np.float32),
            "h0": rng.standard_normal((1, n, 20)).astype(np.float32),
            "c0": rng.standard_normal((1, n, 20)).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **feed)
    result = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "in.npz"), "-o",
                                       str(tmp_path / "out.npz"), "--batch-size", "128"])
    assert result.exit_code == 0, result.output
    from edgeseq.export.loading import load_model

    want = load_model(ref)(*[torch.from_numpy(feed[k]) for k in ("x", "h0", "c0")])
    with np.load(tmp_path / "out.npz") as got:
        for name, w in zip(("y", "h_n", "c_n"), want):
            np.testing.assert_allclose(got[name], w.detach().numpy(), atol=1e-5)


def test_quantize_and_bench_take_state_inputs_from_their_axis_names(foreign, tmp_path):
    path, _ = foreign["with_state"]
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(main, ["quantize", str(path), "-o", str(out), "--mode", "dynamic"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["bench", str(path), "--lengths", "5", "--batch-sizes", "1,4", "--seconds",
                                       "0.05", "--runtimes", "edgeseq"])
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.output


def test_bench_with_every_case_skipped_exits_non_zero(foreign):
    path, _ = foreign["all_frozen"]  # x: [2, 10, 6]: batch 1 cannot run
    result = CliRunner().invoke(main, ["bench", str(path), "--batch-sizes", "1", "--lengths", "10", "--seconds",
                                       "0.05", "--runtimes", "edgeseq"])
    assert result.exit_code == 1 and "nothing was timed: every case was skipped" in result.stderr


def test_a_fixed_batch_file_quantizes_on_random_inputs_of_its_batch(foreign, tmp_path):
    path, _ = foreign["all_frozen"]
    result = CliRunner().invoke(main, ["quantize", str(path), "-o", str(tmp_path / "q.onnx"), "--mode", "dynamic"])
    assert result.exit_code == 0, result.output
    assert "on 2 random samples" in result.stderr


def test_check_eval_without_labels_is_one_line(foreign, tmp_path):
    path, ref = foreign["length_frozen"]
    np.savez(tmp_path / "real.npz", x=np.zeros((4, 10, 6), np.float32))
    result = _check(path, ref, "--lengths", "10", "--eval", str(tmp_path / "real.npz"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "an eval set needs labels, and this one holds only x" in result.stderr


def test_sizes_count_the_external_data_file(foreign, tmp_path):
    import onnx

    path, _ = foreign["length_frozen"]
    moved = tmp_path / "ext.onnx"
    onnx.save_model(onnx.load(str(path)), str(moved), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    whole = moved.stat().st_size + (tmp_path / "ext.onnx.data").stat().st_size
    shown = CliRunner().invoke(main, ["inspect", str(moved)])
    assert f"({whole / 1024:.1f} KiB)" in shown.output
    result = CliRunner().invoke(main, ["quantize", str(moved), "-o", str(tmp_path / "q.onnx"), "--mode", "fp16"])
    assert result.exit_code == 0, result.output
    assert f"of {whole / 1024:.0f} KiB" in result.output


def test_bench_against_a_model_that_cannot_run_the_files_inputs_is_an_error(foreign):
    path, _ = foreign["with_state"]  # takes x, h0, c0
    _, plain = foreign["length_frozen"]  # forward(x)
    result = CliRunner().invoke(main, ["bench", str(path), "--against", plain, "--lengths", "5", "--batch-sizes", "1",
                                       "--seconds", "0.05", "--runtimes", "edgeseq"])
    assert result.exit_code == 1 and "ran no case, so nothing was compared" in result.stderr


def test_a_time_first_file_from_another_exporter_runs_along_its_named_batch_axis(tmp_path):
    """dynamic_axes {"x": {0: "seq", 1: "batch"}}: its samples are axis 1, past one chunk too."""
    from edgeseq import Session

    class TimeFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(20, 16)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            o, h = self.rnn(x)
            return self.fc(o), h

    torch.manual_seed(0)
    net = TimeFirst().eval()
    path = tmp_path / "tf.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(7, 2, 20),), str(path), input_names=["x"], output_names=["out", "hn"],
                          dynamic_axes={"x": {0: "seq", 1: "batch"}, "out": {0: "seq", 1: "batch"}, "hn": {1: "batch"}},
                          dynamo=False, opset_version=17)
    x = np.random.default_rng(0).standard_normal((40, 9, 20)).astype(np.float32)
    with torch.inference_mode():
        want = [t.numpy() for t in net(torch.from_numpy(x))]
    np.testing.assert_allclose(Session(path, batch_size=4).predict(x), want[0], atol=1e-5)
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npz"),
                                       "--batch-size", "4"])
    assert result.exit_code == 0 and "9 sample(s)" in result.stderr, result.output
    with np.load(tmp_path / "y.npz") as got:
        np.testing.assert_allclose(got["out"], want[0], atol=1e-5)
        np.testing.assert_allclose(got["hn"], want[1], atol=1e-5)
