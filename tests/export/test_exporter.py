from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgeseq.card import read_card
from edgeseq.export import export, parity
from models.families import FAMILIES

EXPORTERS = ["torchscript", "dynamo"]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_parity_over_batch_and_length(family, exporter, exported):
    """Every family x exporter matches PyTorch within 1e-5 at batch {1,3} x length {1,2,17,100,1000}."""
    path = exported(family, exporter)
    report = parity.measure(path, FAMILIES[family](), batch_sizes=[1, 3], lengths=[1, 2, 17, 100, 1000])
    checked = [c for c in report.cases if not c.skipped]
    # conv front-ends reject length 1 and 2 in PyTorch itself; every other case must be checked
    assert len(checked) >= 6
    assert report.passed, parity.gate(report)
    assert max(c.max_abs for c in checked) <= 1e-5


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_recurrent_layers_are_native_nodes_with_dynamic_axes(family, exported):
    proto = onnx.load(str(exported(family)))
    ops = {n.op_type for n in proto.graph.node}
    assert ops & {"LSTM", "GRU"}, ops
    assert not ops & {"Loop", "Scan"}
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param  # batch and sequence stay symbolic


def test_card_records_export_facts(exported):
    card = read_card(exported("stacked_lstm"))
    assert card["exporter"] == "torchscript"
    assert card["inputs"][0]["symbolic_shape"] == ["batch", "seq", 28]
    assert card["layout"] == "batch_first"
    assert card["features"] == 28
    assert card["parity"]["passed"] is True
    assert set(card["versions"]) >= {"torch", "onnx", "onnxruntime", "edgeseq"}


def test_text_model_takes_int64_tokens_with_vocab(exported):
    card = read_card(exported("text_bilstm"))
    assert card["inputs"][0]["dtype"] == "int64"
    assert card["inputs"][0]["vocab_size"] == 500


def test_the_python_export_takes_the_streaming_and_lengths_flags(tmp_path):
    from edgeseq.export import export as public_export
    from models.families import FAMILIES

    result = public_export(FAMILIES["gru"](), tmp_path / "s.onnx", streaming=True, lengths=True)
    assert result.card["state_inputs"] and result.card["lengths_input"] == "lengths"


class PositionTable(torch.nn.Module):
    """A learned position table over arange(T), added to float features: the Embedding never sees the input."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = torch.nn.Embedding(32, 4)
        self.lstm = torch.nn.LSTM(4, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(self.lstm(x + self.pos(torch.arange(x.size(1))))[0][:, -1])


@pytest.mark.parametrize("shape", [None, (2, 10, 4)])
def test_an_embedding_of_positions_leaves_the_input_float(tmp_path, shape):
    from edgeseq import Session

    out = tmp_path / "pos.onnx"
    result = export(PositionTable().eval(), out, input_shape=shape)
    assert result.card["inputs"][0]["dtype"] == "float32" and result.card["max_steps"] == 32
    x = np.random.default_rng(0).standard_normal((3, 20, 4)).astype(np.float32)
    assert Session(out, device="cpu").predict(x).shape == (3, 2)


class BagOfIds(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(50, 8, mode="sum")
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.bag(x))


class BagPerStep(torch.nn.Module):
    """K ids per step, each step's bag averaged, then a GRU: (batch, steps, K) int64."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(50, 8, mode="mean")
        self.rnn = torch.nn.GRU(8, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        b, t, k = x.shape
        return self.fc(self.rnn(self.bag(x.reshape(b * t, k)).reshape(b, t, -1))[0][:, -1])


def test_an_embedding_bag_first_takes_token_ids(tmp_path):
    from edgeseq.errors import ExportError

    first = export(BagOfIds().eval(), tmp_path / "bag.onnx")
    assert first.card["inputs"][0]["dtype"] == "int64" and first.card["inputs"][0]["vocab_size"] == 50
    with pytest.raises(ExportError, match=r"forward unpacks 3 axes from the input: give that many"):
        export(BagPerStep().eval(), tmp_path / "steps.onnx")
    per_step = export(BagPerStep().eval(), tmp_path / "steps.onnx", input_shape=(2, 8, 4))
    assert per_step.card["inputs"][0]["dtype"] == "int64"


class PositionTableAfterALinear(torch.nn.Module):
    """The features go through a Linear before the position lookup: ids fail before any Embedding runs."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = torch.nn.Embedding(64, 16)
        self.inp = torch.nn.Linear(4, 16)
        self.rnn = torch.nn.GRU(16, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.rnn(self.inp(x) + self.pos(torch.arange(x.size(1))))[0][:, -1])


def test_an_embedding_of_positions_after_a_linear_leaves_the_input_float(tmp_path):
    result = export(PositionTableAfterALinear().eval(), tmp_path / "pos.onnx")
    assert result.card["inputs"][0]["dtype"] == "float32" and result.card["inputs"][0]["shape"][-1] == 4
