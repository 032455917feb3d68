"""A hand-edited or damaged model card is one clear error at open, never a crash deep inside a command."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgeseq import Session
from edgeseq.card import CARD_KEY
from edgeseq.card_schema import card_problem
from edgeseq.cli import main
from edgeseq.errors import ModelFileError


def _with_card(src, dst, edit):
    model = onnx.load(str(src))
    prop = next(p for p in model.metadata_props if p.key == CARD_KEY)
    card = json.loads(prop.value)
    edit(card)
    prop.value = json.dumps(card)
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("edit, problem", [
    (lambda c: c.update(parity="x"), "parity must be an object, got 'x'"),
    (lambda c: c.update(inputs=-1), "inputs must be a list, got -1"),
    (lambda c: c["inputs"][0].update(batch_axis="0"), "inputs[0].batch_axis must be an integer or null, got '0'"),
    (lambda c: c["inputs"][0].update(seq_axis=-1), "inputs[0].seq_axis is -1, outside the input's 3 axes"),
    (lambda c: c.update(streaming={}), "streaming.layers is missing"),
    (lambda c: c.update(output_axes={"y": []}), "output_axes.y must be an object, got list"),
    (lambda c: c.update(graph_cleanup=True), "graph_cleanup must be an object, got True"),
    (lambda c: c["parity"].update(max_abs="abc"), "parity.max_abs must be a number or null, got 'abc'"),
    (lambda c: c["inputs"][0].update(dtype="complex"),
     "inputs[0].dtype must be one of float32, float16, float64, int64, int32, int16, int8, uint8, bool, got 'complex'"),
])
def test_a_damaged_card_is_named_in_one_line(tiny_model, tmp_path, edit, problem):
    bad = _with_card(tiny_model, tmp_path / "bad.onnx", edit)
    for args in (["inspect", str(bad)], ["infer", str(bad), "-i", str(tmp_path / "x.npy")]):
        np.save(tmp_path / "x.npy", np.zeros((1, 5, 4), np.float32))
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert f"its edgeseq model card is damaged ({problem}); export the file again" in result.stderr
    with pytest.raises(ModelFileError, match="model card is damaged"):
        Session(bad)


def test_edgeseqs_own_cards_pass_the_schema(tiny_model):
    from edgeseq.card import read_card

    assert card_problem(read_card(tiny_model)) is None


def test_a_graph_with_no_inputs_is_refused_by_check_and_bench(tmp_path):
    from onnx import TensorProto, helper

    const = helper.make_node("Constant", [], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    graph = helper.make_graph([const], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "noinput.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    for args in (["check", str(path), "--against", "models/families.py:gru"], ["bench", str(path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "the graph takes no inputs" in result.stderr, result.output
