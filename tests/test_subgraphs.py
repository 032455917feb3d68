"""Walking an ONNX graph with the graphs nested in it."""

from __future__ import annotations

from onnx import TensorProto, helper

from edgeseq.subgraphs import graphs, names_read, nodes


def _loop_model():
    body = helper.make_graph(
        [helper.make_node("Add", ["h", "w"], ["h_next"], name="inner_add"),
         helper.make_node("Identity", ["cond"], ["cond_out"], name="inner_id")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_next", TensorProto.FLOAT, [2])])
    outer = [helper.make_node("Loop", ["n", "", "h0"], ["h"], name="loop", body=body),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    return helper.make_graph(outer, "g", [], [])


def test_graphs_gives_the_graph_then_its_bodies_and_nodes_follow_each_node_with_its_body():
    g = _loop_model()
    assert [x.name for x in graphs(g)] == ["g", "body"]
    assert [n.name for n in nodes(g)] == ["loop", "inner_add", "inner_id", "relu"]
    assert names_read(g.node[0].attribute[0].g) == {"h", "w", "cond"}  # 'w' comes from the outer scope
