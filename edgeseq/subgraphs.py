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
        for sub in _held_by(node):
            yield from graphs(sub)


def nodes(graph: Any) -> Iterator[Any]:
    """Every node: each of ``graph``'s, followed by the nodes of the subgraphs it holds, depth first."""
    for node in graph.node:
        yield node
        for sub in _held_by(node):
            yield from nodes(sub)


def _held_by(node: Any) -> Iterator[Any]:
    """The graphs in a node's attributes (a ``Loop``'s ``body``, an ``If``'s branches)."""
    for attr in node.attribute:
        if attr.g.ByteSize():
            yield attr.g
        yield from attr.graphs


def names_read(graph: Any) -> set[str]:
    """Every value name the nodes of ``graph`` and of its subgraphs read."""
    return {name for g in graphs(graph) for node in g.node for name in node.input}
