"""Graph cleanup at export time: recorded in the card, gated by parity, dropped when it breaks results."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgeseq.card import read_card
from edgeseq.export import export, parity
from edgeseq.export.cleanup import simplify, split_layer_states
from models.families import FAMILIES

HAS_ONNXSLIM = importlib.util.find_spec("onnxslim") is not None


@pytest.mark.skipif(not HAS_ONNXSLIM, reason="onnxslim is not installed (edgeseq[export] installs it)")
def test_cnn_front_end_loses_its_shape_arithmetic_and_keeps_its_interface(exported):
    card = read_card(exported("cnn_lstm"))
    before, after = card["graph_cleanup"]["nodes"]
    assert after < before and card["graph_cleanup"]["by"][0].startswith("onnxslim")
    proto = onnx.load(str(exported("cnn_lstm")))
    assert sum(n.op_type == "LSTM" for n in proto.graph.node) == 1
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param


def test_a_cleanup_that_changes_results_is_dropped(tmp_path, monkeypatch):
    from edgeseq.export import exporter

    def breaking(proto, say=None):  # a "cleanup" that shifts the head's bias: parity must catch it
        bad = onnx.ModelProto()
        bad.CopyFrom(proto)
        for t in bad.graph.initializer:
            if t.name.endswith("head.bias"):
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) + 1.0, t.name))
        return bad, "breaking-cleanup"

    monkeypatch.setattr(exporter, "simplify", breaking)
    model = FAMILIES["stacked_lstm"]()
    result = export(model, tmp_path / "m.onnx", exporter="torchscript")
    assert result.card["graph_cleanup"]["by"] == []
    report = parity.measure(result.path, model, batch_sizes=[2], lengths=[5])
    assert report.passed


def test_a_cleanup_that_onnx_runtime_cannot_run_is_dropped(tmp_path, monkeypatch):
    from edgeseq.export import exporter

    def unloadable(proto, say=None):  # a "cleanup" whose graph ONNX Runtime refuses to load
        bad = onnx.ModelProto()
        bad.CopyFrom(proto)
        bad.graph.node[0].op_type = "NoSuchOperator"
        return bad, "unloadable-cleanup"

    monkeypatch.setattr(exporter, "simplify", unloadable)
    log: list[str] = []
    result = export(FAMILIES["stacked_lstm"](), tmp_path / "m.onnx", exporter="torchscript", log=log.append)
    assert result.report.passed and result.card["graph_cleanup"]["by"] == []
    assert any("failed to run" in m and "keeping it as exported" in m for m in log)


def test_a_slimmed_graph_with_another_interface_is_refused(exported, monkeypatch):
    import sys
    import types

    def rename(model):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        out.graph.input[0].name = "renamed"
        return out

    monkeypatch.setitem(sys.modules, "onnxslim", types.SimpleNamespace(slim=rename, __version__="fake"))
    proto = onnx.load(str(exported("gru")))
    kept, by = simplify(proto)
    assert by is None and kept is proto


def test_split_leaves_a_state_the_graph_reads_itself_packed(tmp_path):
    """A 2-layer GRU whose head reads the final state h_n: the Concat feeds the head, so it stays."""
    import torch
    from torch import nn

    from edgeseq.export.stateful import export_with_extras
    from edgeseq.runtime.streaming import StreamingSession

    class LastState(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(4, 8, num_layers=2, batch_first=True)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.gru(x)[1][-1])

    torch.manual_seed(0)
    model = LastState().eval()
    path = tmp_path / "s.onnx"
    export_with_extras(model, path, input_shape=[2, 6, 4], streaming=True)  # the streaming check passes
    card = read_card(path)
    assert card["state_inputs"] == ["gru.h_in"] and "parts" not in card["streaming"]["layers"][0]["states"][0]
    s = StreamingSession(path, device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    s.step(x[:, :2])
    with torch.inference_mode():
        np.testing.assert_allclose(s.step(x[:, 2:]), model(torch.from_numpy(x)).numpy(), atol=1e-5, rtol=1e-5)


def test_split_needs_the_exporters_slice_pattern(exported):
    proto = onnx.load(str(exported("stacked_lstm")))  # not a streaming export: no state inputs at all
    assert split_layer_states(proto, [("lstm.h_in", "lstm.h_out", 2)]) == {}


def _slice_graph(end: int, slice_is_output: bool = False):
    from onnx import TensorProto, helper

    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("starts", [0]), ("ends", [end]), ("axes", [0]), ("steps", [1]), ("t", 1))]
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["xs"]),
             helper.make_node("Gather", ["xs", "t"], ["y"], axis=1)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if slice_is_output:
        outputs.append(helper.make_tensor_value_info("xs", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 2])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_slice_that_keeps_everything_is_skipped_and_its_bounds_dropped():
    import onnxruntime as ort

    from edgeseq.export.cleanup import drop_full_slices

    x = np.random.default_rng(0).standard_normal((3, 4, 2)).astype(np.float32)
    proto = _slice_graph(2**63 - 1)
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    assert drop_full_slices(proto) == 1
    assert [n.op_type for n in proto.graph.node] == ["Gather"] and proto.graph.node[0].input[0] == "x"
    assert {t.name for t in proto.graph.initializer} == {"t"}  # starts/ends/axes/steps read by nothing now
    np.testing.assert_array_equal(ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0], want)


@pytest.mark.parametrize("end, is_output", [(2, False), (2**63 - 1, True)], ids=["cuts", "graph-output"])
def test_a_slice_that_cuts_or_is_an_output_stays(end, is_output):
    from edgeseq.export.cleanup import drop_full_slices

    proto = _slice_graph(end, is_output)
    assert drop_full_slices(proto) == 0 and [n.op_type for n in proto.graph.node] == ["Slice", "Gather"]


class ForecastDecoder(torch.nn.Module):
    """An encoder, then a decoder nn.LSTM stepped over a 6-step horizon in Python, feeding back its output."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.LSTM(3, 16, 2, batch_first=True)
        self.dec = torch.nn.LSTM(1, 16, 2, batch_first=True)
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x):
        _, state = self.enc(x)
        y, outs = x[:, -1:, :1], []
        for _ in range(6):
            o, state = self.dec(y, state)
            y = self.head(o)
            outs.append(y)
        return torch.cat(outs, 1)


def test_a_layer_called_at_every_step_keeps_one_copy_of_its_weights(tmp_path):
    torch.manual_seed(0)
    model, out, log = ForecastDecoder().eval(), tmp_path / "f.onnx", []
    export(model, out, log=log.append)  # parity-checked as usual
    assert any("shared weights" in line for line in log)
    stored = sum(numpy_helper.to_array(i).size for i in onnx.load(str(out)).graph.initializer)
    params = sum(p.numel() for p in model.parameters())
    assert stored < 1.1 * params  # was one copy of the decoder's weights per call: 6 of them


def test_merging_reaches_loop_bodies_and_leaves_the_interface():
    from onnx import TensorProto, helper

    from edgeseq.export.cleanup import merge_duplicate_initializers

    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    w2 = numpy_helper.from_array(np.ones((2, 2), np.float32), "w2")
    fed = numpy_helper.from_array(np.ones((2, 2), np.float32), "fed")  # also a graph input: may be overridden
    body = helper.make_graph([helper.make_node("Add", ["v", "w2"], ["v_out"]),
                              helper.make_node("Identity", ["c"], ["c_out"])], "body",
                             [helper.make_tensor_value_info(n, t, s) for n, t, s in
                              (("i", TensorProto.INT64, []), ("c", TensorProto.BOOL, []), ("v", TensorProto.FLOAT, [2, 2]))],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2, 2])])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("MatMul", ["a", "fed"], ["b"]),
         helper.make_node("Loop", ["n", "", "b"], ["y"], body=body)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2]), helper.make_tensor_value_info("n", TensorProto.INT64, []),
         helper.make_tensor_value_info("fed", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], initializer=[w, w2, fed])
    proto = helper.make_model(graph)
    assert merge_duplicate_initializers(proto) == 1
    assert [i.name for i in proto.graph.initializer] == ["w", "fed"]
    assert list(proto.graph.node[2].attribute[0].g.node[0].input) == ["v", "w"]
