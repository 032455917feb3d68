"""Graph cleanup at export time: recorded in the card, gated by parity, dropped when it breaks results."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
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
