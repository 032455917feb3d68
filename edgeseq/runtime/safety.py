"""Safety checks on untrusted ONNX files, done before ONNX Runtime opens them (no onnx package needed).

An ONNX tensor can keep its data in a separate file named by ``external_data["location"]``.
A hostile file could name ``/etc/shadow`` or ``../../secret`` and have its bytes read into a
weight tensor.  :func:`check_external_data` walks the protobuf (every graph, subgraph,
function and training graph) and refuses any location that is absolute, leaves the model's
folder (also through a symlink), or does not exist.  Recent ONNX Runtime versions check
this too; edgeseq does not rely on it.  :func:`check_names` refuses names that are not
UTF-8 (a corrupt file), which ONNX Runtime's Python API would otherwise fail on with a
``UnicodeDecodeError``.

>>> check_model_file("model.onnx")     # doctest: +SKIP
[]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..card import _iter_fields, mapped_file
from ..errors import ModelFileError

# onnx.proto field numbers of the messages that can hold tensors (checked against onnx 1.23's descriptors).
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_SPARSE_INIT = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_FUNCTION_NODE = 7
_TRAINING_GRAPHS = (1, 2)  # initialization, algorithm
_TENSOR_NAME, _TENSOR_EXTERNAL = 8, 13
_MODEL_STRINGS = (2, 3, 4, 6)  # producer_name, producer_version, domain, doc_string
_GRAPH_STRINGS = (2, 10)  # name, doc_string
_GRAPH_IO = (11, 12, 13)  # input, output, value_info (ValueInfoProto)
_NODE_STRINGS = (1, 2, 3, 4, 7)  # input, output, name, op_type, domain
_MAX_DEPTH = 64  # nested subgraphs (If/Loop/Scan); deeper files are refused rather than recursed into


def check_model_file(path: str | Path) -> list[Path]:
    """All checks of this module on an ONNX file; returns the external data files it uses.

    >>> check_model_file("model.onnx")     # doctest: +SKIP
    []
    """
    path = Path(path)
    with mapped_file(path) as data:
        check_names(path, data)
        return check_external_data(path, data)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror})") from None


def _corrupt(path: Path) -> ModelFileError:
    return ModelFileError(f"{path}: not a valid ONNX file (truncated or corrupt); re-export it with 'edgeseq export'")


def check_names(path: str | Path, data: bytes | memoryview | None = None) -> None:
    """Refuse a file whose names ONNX Runtime's Python API would fail to decode (not UTF-8: a corrupt file)."""
    path = Path(path)
    try:
        for _ in _surface_strings(memoryview(_read(path) if data is None else data)):
            pass
    except (ValueError, UnicodeDecodeError):
        raise _corrupt(path) from None


def _surface_strings(model: memoryview) -> Iterator[str]:
    """The strings ONNX Runtime's Python API decodes (model/graph/node/value names, symbolic dims), strictly."""
    for field, wire, value in _iter_fields(model):
        if wire != 2:
            continue
        if field in _MODEL_STRINGS:
            yield bytes(value).decode("utf-8")
        elif field == _MODEL_GRAPH:
            for gfield, gwire, gvalue in _iter_fields(value):
                if gwire != 2:
                    continue
                if gfield in _GRAPH_STRINGS:
                    yield bytes(gvalue).decode("utf-8")
                elif gfield in _GRAPH_IO:
                    yield from _value_info_strings(gvalue)
                elif gfield == _GRAPH_NODE:
                    yield from _strings(gvalue, _NODE_STRINGS)
                elif gfield == _GRAPH_INIT:
                    yield from _strings(gvalue, (_TENSOR_NAME,))


def _strings(message: memoryview, fields: tuple[int, ...]) -> Iterator[str]:
    for field, wire, value in _iter_fields(message):
        if field in fields and wire == 2:
            yield bytes(value).decode("utf-8")


def _value_info_strings(info: memoryview) -> Iterator[str]:
    for field, wire, value in _iter_fields(info):
        if wire != 2:
            continue
        if field == 1:  # ValueInfoProto.name
            yield bytes(value).decode("utf-8")
        elif field == 2:  # .type -> TypeProto.tensor_type -> .shape -> .dim -> dim_param / denotation
            for tf, tw, tensor_type in _iter_fields(value):
                if tf != 1 or tw != 2:
                    continue
                for sf, sw, shape in _iter_fields(tensor_type):
                    if sf != 2 or sw != 2:
                        continue
                    for df, dw, dim in _iter_fields(shape):
                        if df == 1 and dw == 2:
                            for f, w, v in _iter_fields(dim):
                                if f in (2, 3) and w == 2:
                                    yield bytes(v).decode("utf-8")


def check_external_data(path: str | Path, data: bytes | memoryview | None = None) -> list[Path]:
    """Refuse an ONNX file whose external data lies outside its folder; return the external files it uses.

    Raises :class:`ModelFileError` naming the tensor and the location.
    """
    path = Path(path)
    data = _read(path) if data is None else data
    if isinstance(data, bytes) and b"location" not in data:  # fast path: every external-data entry carries this key
        return []  # (a mapped file is walked instead: a search would touch every page)
    folder = path.resolve().parent
    used: list[Path] = []
    try:
        for tensor, location in _external_locations(memoryview(data)):
            used.append(_resolve_location(path, folder, tensor, location))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _corrupt(path) from None
    return sorted(set(used))


def _resolve_location(path: Path, folder: Path, tensor: str, location: str) -> Path:
    where = f"{path}: tensor {tensor!r} keeps its data in {location!r}"
    if not location or "\x00" in location:
        raise ModelFileError(f"{where}, which is not a usable file name; re-export the model")
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute() or PureWindowsPath(location).drive:
        raise ModelFileError(f"{where}, an absolute path; external data must sit in the model's folder "
                             "(refused: an untrusted model could read any file)")
    target = (folder / location).resolve()
    if not target.is_relative_to(folder):
        raise ModelFileError(f"{where}, outside the model's folder {folder}; external data must sit beside the model "
                             "(refused: an untrusted model could read any file)")
    if not target.is_file():
        raise ModelFileError(f"{where}, which does not exist in {folder}; copy the data file next to the model")
    if not os.access(target, os.R_OK):
        raise ModelFileError(f"{where}, which cannot be read; check its permissions")
    return target


def _external_locations(model: memoryview) -> Iterator[tuple[str, str]]:
    for field, wire, value in _iter_fields(model):
        if wire != 2:
            continue
        if field == _MODEL_GRAPH:
            yield from _graph(value, 0)
        elif field == _MODEL_FUNCTIONS:
            for f, w, node in _iter_fields(value):
                if f == _FUNCTION_NODE and w == 2:
                    yield from _node(node, 0)
        elif field == _MODEL_TRAINING:
            for f, w, graph in _iter_fields(value):
                if f in _TRAINING_GRAPHS and w == 2:
                    yield from _graph(graph, 0)


def _graph(graph: memoryview, depth: int) -> Iterator[tuple[str, str]]:
    if depth > _MAX_DEPTH:
        raise ValueError("subgraphs nested too deeply")
    for field, wire, value in _iter_fields(graph):
        if wire != 2:
            continue
        if field == _GRAPH_INIT:
            yield from _tensor(value)
        elif field == _GRAPH_SPARSE_INIT:
            yield from _sparse(value)
        elif field == _GRAPH_NODE:
            yield from _node(value, depth)


def _node(node: memoryview, depth: int) -> Iterator[tuple[str, str]]:
    for field, wire, attr in _iter_fields(node):
        if field != _NODE_ATTRIBUTE or wire != 2:
            continue
        for f, w, value in _iter_fields(attr):
            if w != 2:
                continue
            if f in (_ATTR_T, _ATTR_TENSORS):
                yield from _tensor(value)
            elif f in (_ATTR_G, _ATTR_GRAPHS):
                yield from _graph(value, depth + 1)
            elif f in (_ATTR_SPARSE, _ATTR_SPARSES):
                yield from _sparse(value)


def _sparse(sparse: memoryview) -> Iterator[tuple[str, str]]:
    for field, wire, value in _iter_fields(sparse):
        if field in (_SPARSE_VALUES, _SPARSE_INDICES) and wire == 2:
            yield from _tensor(value)


def _tensor(tensor: memoryview) -> Iterator[tuple[str, str]]:
    name = ""
    locations: list[str] = []
    for field, wire, value in _iter_fields(tensor):
        if field == _TENSOR_NAME and wire == 2:
            name = bytes(value).decode("utf-8")
        elif field == _TENSOR_EXTERNAL and wire == 2:
            entry = {f: bytes(v).decode("utf-8") for f, w, v in _iter_fields(value) if w == 2}
            if entry.get(1) == "location":
                locations.append(entry.get(2, ""))
    for location in locations:
        yield name, location
