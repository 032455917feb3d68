"""Walk an ONNX graph together with the graphs nested in it (``Loop``/``Scan`` bodies, ``If`` branches).

Plain protobuf traversal: works on an ``onnx.GraphProto`` without importing onnx itself.

>>> [len(g.node) for g in graphs(model.graph)]     # doctest: +SKIP
[8, 9]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def graphs(graph: Any) -> Iterator[Any]:
    """``graph``, then every subgraph in it, depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.ByteSize():
                yield from graphs(attr.g)
            for sub in attr.graphs:
                yield from graphs(sub)


def nodes(graph: Any) -> Iterator[Any]:
    """Every node: each of ``graph``'s, followed by the nodes of the subgraphs it holds, depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.ByteSize():
                yield from nodes(attr.g)
            for sub in attr.graphs:
                yield from nodes(sub)


def names_read(graph: Any) -> set[str]:
    """Every value name the nodes of ``graph`` and of its subgraphs read."""
    return {name for g in graphs(graph) for node in g.node for name in node.input}
