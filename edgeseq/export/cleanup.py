"""Graph cleanup at export time, before the parity gate: fewer nodes for ONNX Runtime to run per call.

Passes kept because they measured faster (``python -m bench.experiments cleanup``, ``cell-loop`` and
``decoder-loop``; bench/README.md "What was tried"):

* :func:`simplify` -- onnxslim (in the ``export`` extra; skipped when absent) folds the exporters'
  shape arithmetic (Shape/Gather/Unsqueeze/Concat chains) that ONNX Runtime cannot fold at load
  because the axes are dynamic.  It pays off for CNN front-ends (msft_cnnlstm: 63 -> 32 nodes, -12% at
  batch 1); for plain LSTM/GRU graphs it changes nothing at run time (ONNX Runtime folds the same).
* :func:`drop_full_slices` -- ``x[:, t]`` in a scripted loop: no copy of the whole input per step.
* :func:`scatter_to_scan` -- ``outputs[t] = y`` in a scripted loop: no copy of the whole output per step.
* :func:`split_layer_states` -- streaming exports only: a stacked ``nn.LSTM``'s state
  ``[num_layers, batch, hidden]`` enters the graph as one tensor that Slice nodes cut per layer and
  leaves through a Concat, four extra nodes per step that cost more than a tenth of motion_lstm's
  step; each layer gets its own ``<input>.<k>`` / ``<output>.<k>`` instead.

A pass that fails, or changes the graph's inputs, outputs or recurrent nodes, is dropped (the file
is then written as exported); the parity gate runs on the cleaned graph.

>>> proto, note = simplify(onnx.load("model.onnx"))        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..subgraphs import graphs, nodes

RECURRENT = ("LSTM", "GRU", "RNN", "Loop", "Scan")


def node_count(proto: Any) -> int:
    return len(proto.graph.node)


def cleanup_record(raw_nodes: int, proto: Any, by: list[str]) -> dict[str, Any]:
    """The model card's ``graph_cleanup``: node counts as exported and as written, and the passes applied."""
    return {"nodes": [raw_nodes, node_count(proto)], "by": by}


def _dims(value: Any) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def _interface(proto: Any) -> tuple[Any, ...]:
    g = proto.graph
    return (tuple((v.name, v.type.tensor_type.elem_type, tuple(_dims(v))) for v in g.input),
            tuple((v.name, v.type.tensor_type.elem_type, tuple(_dims(v))) for v in g.output))


def _same_interface(before: Any, after: Any) -> bool:
    """The same inputs and outputs, except that an output dim the exporter named on its own
    (``Gemmy_dim_1``, not an input's ``batch``/``seq``) may have become the number it always is."""
    (ins, outs), (ins2, outs2) = _interface(before), _interface(after)
    if ins != ins2 or len(outs) != len(outs2):
        return False
    axes = {d for _, _, dims in ins for d in dims if isinstance(d, str)}
    for (name, kind, dims), (name2, kind2, dims2) in zip(outs, outs2):
        if (name, kind, len(dims)) != (name2, kind2, len(dims2)):
            return False
        for d, d2 in zip(dims, dims2):
            if d != d2 and not (isinstance(d, str) and d not in axes and isinstance(d2, int) and d2 > 0):
                return False
    return True


def _recurrent(proto: Any) -> Counter:
    return Counter(n.op_type for n in proto.graph.node if n.op_type in RECURRENT)


def simplify(proto: Any, say: Callable[[str], None] | None = None) -> tuple[Any, str | None]:
    """``proto`` simplified, and what did it ("onnxslim 0.1.x", "full-range slices"); ``proto`` and None
    when nothing changed.  onnxslim's result is dropped when it fails or would change the interface
    or the recurrent nodes; :func:`drop_full_slices` then runs on whichever graph is kept."""
    import onnx

    slim, by = _onnxslim(proto, say)
    if slim is proto:
        if not full_slices(proto) and not loop_writes_carried_tensor(proto) and not _duplicate_initializers(proto):
            return proto, None
        slim = onnx.ModelProto()  # drop_full_slices works in place; ``proto`` stays as exported
        slim.CopyFrom(proto)
    dropped = drop_full_slices(slim)
    if dropped:
        by = f"{by} + full-range slices" if by else "full-range slices"
    if scatter_to_scan(slim):
        by = f"{by} + per-step writes" if by else "per-step writes"
    if merge_duplicate_initializers(slim):
        by = f"{by} + shared weights" if by else "shared weights"
    return (slim, by) if by else (proto, None)


def explicit_same_pads(proto: Any) -> int:
    """Write ``auto_pad=SAME_*`` of dilated, stride-1 Conv nodes as explicit pads; returns how many changed.

    The TorchScript exporter writes ``nn.Conv1d(padding='same', dilation=2)`` as ``auto_pad=SAME_UPPER``,
    which ONNX Runtime refuses to load ("Dilation not supported for AutoPadType::SAME_UPPER").  At stride 1
    'same' is ``dilation * (kernel - 1)`` zeros, the odd one at the end (SAME_UPPER, PyTorch's choice) or the
    start (SAME_LOWER): the same numbers, spelled so that every runtime takes them.
    """
    from onnx import helper

    weights = {t.name: list(t.dims) for g in graphs(proto.graph) for t in g.initializer}
    changed = 0
    for node in nodes(proto.graph):
        if node.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        dilations = list(attrs.get("dilations") or [])
        kernel = list(attrs.get("kernel_shape") or weights.get(node.input[1], [])[2:])
        if mode not in ("SAME_UPPER", "SAME_LOWER") or not any(d > 1 for d in dilations) or not kernel \
                or any(s != 1 for s in attrs.get("strides") or []) or len(dilations) != len(kernel):
            continue
        totals = [d * (k - 1) for d, k in zip(dilations, kernel)]
        small = [t // 2 for t in totals]
        begins = small if mode == "SAME_UPPER" else [t - b for t, b in zip(totals, small)]
        ends = [t - b for t, b in zip(totals, begins)]
        kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("pads", begins + ends)])
        changed += 1
    return changed


def merge_duplicate_initializers(proto: Any) -> int:
    """Point every use of an initializer at the first identical one (same type, shape and values) and drop
    the copies; return how many went.

    A layer called several times in ``forward`` (an autoregressive decoder's ``nn.LSTM`` stepped over a
    horizon in Python) is traced as one node per call, and torch.onnx writes each node its own copy of the
    weights: a 10-step decoder's file was 5x its parameters.
    """
    alias = _duplicate_initializers(proto)
    if not alias:
        return 0
    for node in nodes(proto.graph):  # subgraphs (Loop bodies) may read outer initializers too
        for k, name in enumerate(node.input):
            if name in alias:
                node.input[k] = alias[name]
    kept = [init for init in proto.graph.initializer if init.name not in alias]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return len(alias)


def _duplicate_initializers(proto: Any) -> dict[str, str]:
    """{initializer name: the first initializer with the same type, shape and values}."""
    from onnx import numpy_helper

    graph = proto.graph
    # an initializer that is also an input or an output is part of the interface: left alone
    interface = {v.name for v in graph.input} | {v.name for v in graph.output}
    first: dict[tuple[Any, ...], str] = {}
    alias: dict[str, str] = {}
    for init in graph.initializer:
        if init.name in interface or init.data_location == 1:  # 1: EXTERNAL data, not loaded here
            continue
        key = (init.data_type, tuple(init.dims), numpy_helper.to_array(init).tobytes())
        if key in first:
            alias[init.name] = first[key]
        else:
            first[key] = init.name
    return alias


def full_slices(proto: Any) -> dict[str, str]:
    """{output: input} of every ``Slice`` that keeps its whole input (start 0, end past any size, step 1),
    in the graph and its subgraphs; only the slices' bounds are read, not the weights."""
    from onnx import numpy_helper

    every = list(graphs(proto.graph))
    bounds = {name for g in every for n in g.node if n.op_type == "Slice" for name in n.input[1:5] if name}
    values: dict[str, Any] = {}
    for g in every:
        values.update({t.name: numpy_helper.to_array(t) for t in g.initializer if t.name in bounds})
        for n in g.node:
            if (n.op_type == "Constant" and n.output[0] in bounds and n.attribute
                    and n.attribute[0].name == "value"):
                values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def ints(name: str) -> list[int] | None:
        v = values.get(name)
        return [int(x) for x in v.reshape(-1)] if v is not None and v.dtype.kind in "iu" else None

    found: dict[str, str] = {}
    for g in every:
        kept = {v.name for v in g.output}
        for n in g.node:
            if n.op_type != "Slice" or len(n.input) < 3 or n.output[0] in kept:
                continue
            starts, ends = ints(n.input[1]), ints(n.input[2])
            steps = ints(n.input[4]) if len(n.input) > 4 and n.input[4] else None
            if (starts and ends and all(v == 0 for v in starts) and all(v >= 2**31 - 1 for v in ends)
                    and (steps is None or all(v == 1 for v in steps))):
                found[n.output[0]] = n.input[0]
    return found


def drop_full_slices(proto: Any) -> int:
    """Skip every Slice :func:`full_slices` finds, in place; returns how many.

    TorchScript writes ``x[:, t]`` as such a Slice over axis 0, then a Gather: in a loop over time
    (a scripted model's ``Loop``) ONNX Runtime copies the whole input at every step, which makes a
    long sequence cost quadratic time.  Consumers read the input itself instead.
    """
    rename = full_slices(proto)
    if not rename:
        return 0
    every = list(graphs(proto.graph))
    for g in every:
        _remove_nodes(g, [i for i, n in enumerate(g.node) if n.op_type == "Slice" and n.output[0] in rename])
        for n in g.node:
            for i, v in enumerate(n.input):
                while v in rename:  # a slice of a slice
                    v = rename[v]
                n.input[i] = v
    used = {v for g in every for n in g.node for v in n.input} | {v.name for g in every for v in g.output}
    for g in every:  # the slices' bounds, now read by nothing (ONNX Runtime warns about each)
        unused = [t for t in g.initializer if t.name not in used]
        for t in unused:
            g.initializer.remove(t)
        _remove_nodes(g, [i for i, n in enumerate(g.node) if n.op_type == "Constant" and n.output[0] not in used])
    return len(rename)


def loop_writes_carried_tensor(proto: Any) -> bool:
    """Whether a ``Loop`` body scatters into one of its loop-carried tensors (``outputs[t] = y`` in a scripted
    loop exports as ``ScatterND`` on the carried tensor), which ONNX Runtime copies whole at every step;
    :func:`scatter_to_scan` removes the cases it can prove safe."""
    for g in graphs(proto.graph):
        for n in g.node:
            if n.op_type != "Loop":
                continue
            body = next(a.g for a in n.attribute if a.name == "body")
            carried = {v.name for v in body.input[2:]}
            if any(b.op_type in ("ScatterND", "ScatterElements") and b.input and b.input[0] in carried
                   for b in body.node):
                return True
    return False


# ops that keep every element of a value equal to one function of the Loop's step number
_KEEPS_STEP = {"Unsqueeze", "Squeeze", "Reshape", "Expand", "Identity", "Cast"}
# ops through which the carried tensor may be read for its shape only
_SHAPE_READERS = {"Gather", "Slice"}


def scatter_to_scan(proto: Any) -> int:
    """Turn each Loop-carried tensor written one step at a time (``outputs[t] = y``: ``ScatterND`` on the carried
    tensor, see :func:`loop_writes_carried_tensor`) into two per-step outputs of the Loop, indices and values,
    written by one ``ScatterND`` after it, in place; returns how many.

    Taken only when every step provably writes rows of its own (:func:`_one_row_per_step`; one scatter then
    equals the sequential ones) and the body reads the carried tensor for its shape only.
    A Loop that ran no step leaves the tensor as it was (an ``If``: its per-step outputs are then empty, with
    dims ONNX Runtime cannot know).  ``python -m bench.experiments decoder-loop``: a greedy decoder at batch 64,
    600 tokens, 127.4 -> 60.1 ms; an ``nn.LSTMCell`` tagger at batch 64 x 1000, 82.0 -> 40.1 ms.
    """
    from onnx import TensorProto, helper

    done = 0
    for graph in list(graphs(proto.graph)):
        for loop in [n for n in graph.node if n.op_type == "Loop"]:
            body = next((a.g for a in loop.attribute if a.name == "body"), None)
            while body is not None and _scatter_to_scan_once(graph, loop, body, helper, TensorProto):
                done += 1
    return done


def _scatter_to_scan_once(graph: Any, loop: Any, body: Any, helper: Any, tensor_proto: Any) -> bool:
    readers: dict[str, list[Any]] = {}
    for n in body.node:
        for v in n.input:
            readers.setdefault(v, []).append(n)
    made = {o: n for n in body.node for o in n.output}
    outputs = [o.name for o in body.output]
    for j in range(len(body.input) - 2):
        carried, written = body.input[2 + j].name, body.output[1 + j].name
        scatter = made.get(written)
        if (scatter is None or scatter.op_type != "ScatterND" or scatter.input[0] != carried
                or outputs.count(written) != 1 or readers.get(written)
                or any(a.name == "reduction" and a.s not in (b"", b"none") for a in scatter.attribute)):
            continue
        others = [n for n in readers.get(carried, []) if n is not scatter]
        shape_only = all(n.op_type == "Shape" or (n.op_type in _SHAPE_READERS and n.input[0] == carried and all(
            r.op_type == "Shape" for o in n.output for r in readers.get(o, []))) for n in others)
        if not shape_only or not _one_row_per_step(scatter.input[1], made, body.input[0].name, graph):
            continue
        start, final = loop.input[2 + j], loop.output[j]
        for n in others:  # the carried tensor keeps its shape: read the one it starts from
            for k, v in enumerate(n.input):
                if v == carried:
                    n.input[k] = start
        elem = body.input[2 + j].type.tensor_type.elem_type
        body.node.remove(scatter)
        del body.input[2 + j]
        del body.output[1 + j]
        del loop.input[2 + j]
        del loop.output[j]
        body.output.extend([helper.make_tensor_value_info(scatter.input[1], tensor_proto.INT64, None),
                            helper.make_tensor_value_info(scatter.input[2], elem, None)])
        indices, values = f"{final}.step_indices", f"{final}.step_values"
        loop.output.extend([indices, values])
        scattered, unchanged = f"{final}.scattered", f"{final}.unchanged"
        ran = helper.make_graph([helper.make_node("ScatterND", [start, indices, values], [scattered])], "ran", [],
                                [helper.make_tensor_value_info(scattered, elem, None)])
        idle = helper.make_graph([helper.make_node("Identity", [start], [unchanged])], "idle", [],
                                 [helper.make_tensor_value_info(unchanged, elem, None)])
        zero = helper.make_tensor(f"{final}.zero", tensor_proto.INT64, [], [0])
        after = [helper.make_node("Size", [indices], [f"{final}.steps"]),
                 helper.make_node("Constant", [], [zero.name], value=zero),
                 helper.make_node("Greater", [f"{final}.steps", zero.name], [f"{final}.ran"]),
                 helper.make_node("If", [f"{final}.ran"], [final], then_branch=ran, else_branch=idle)]
        at = list(graph.node).index(loop) + 1
        for k, node in enumerate(after):
            graph.node.insert(at + k, node)
        return True
    return False


def _one_row_per_step(name: str, made: dict[str, Any], step: str, outer: Any) -> bool:
    """Whether the scatter indices ``name`` give each step rows of its own: every element is the step number
    through ``+ c``/``* c`` (a one-element constant ``c``) and reshapes (``outputs[t]``, time-first), or index
    tuples concatenated on the last axis with such a coordinate (``outputs[:, t]``: ``[b, t]`` for every b)."""
    single = {t.name for t in outer.initializer if _elements(t.dims) == 1}
    single |= {o for o, n in made.items() if n.op_type == "Constant" and n.attribute and _elements(n.attribute[0].t.dims) == 1}
    single |= {n.output[0] for n in outer.node if n.op_type == "Constant" and n.attribute
               and _elements(n.attribute[0].t.dims) == 1}

    def kind(value: str, depth: int = 0) -> str | None:
        if value == step:
            return "step"
        node = made.get(value)
        if node is None or depth > 32:
            return None
        if node.op_type in _KEEPS_STEP:
            return "step" if kind(node.input[0], depth + 1) == "step" else None
        if node.op_type in ("Add", "Sub", "Mul") and len(node.input) == 2:
            a, b = node.input
            if b in single and kind(a, depth + 1) == "step" or (a in single and kind(b, depth + 1) == "step"
                                                                and node.op_type != "Sub"):
                return "step"
            return None
        if node.op_type == "Concat" and any(x.name == "axis" and x.i == -1 for x in node.attribute):
            return "rows" if any(kind(v, depth + 1) == "step" for v in node.input) else None
        return None

    return kind(name) is not None


def _elements(dims: Any) -> int:
    count = 1
    for d in dims:
        count *= int(d)
    return count


def _onnxslim(proto: Any, say: Callable[[str], None] | None = None) -> tuple[Any, str | None]:
    """onnxslim's graph and "onnxslim 0.1.x", or ``proto`` and None (not installed, failed, unsafe)."""
    try:
        import onnxslim
    except ImportError:
        return proto, None
    say = say or (lambda _m: None)
    logger = logging.getLogger("onnxslim")
    level = logger.level
    try:
        logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(proto)  # returns a new model; ``proto`` is left as it was
    except Exception as exc:  # noqa: BLE001 - any failure means: keep the graph as exported
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        say(f"  graph cleanup skipped: onnxslim failed ({first})")
        return proto, None
    finally:
        logger.setLevel(level)
    if slim is None or not _same_interface(proto, slim) or _recurrent(slim) != _recurrent(proto):
        say("  graph cleanup skipped: onnxslim changed the graph's inputs, outputs or recurrent nodes")
        return proto, None
    return slim, f"onnxslim {getattr(onnxslim, '__version__', '?')}"


# ------------------------------------------------------------------------- per-layer streaming state
def _constant_ints(proto: Any) -> dict[str, list[int]]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return {k: [int(x) for x in v.reshape(-1)] for k, v in values.items() if v.dtype.kind in "iu" and v.size <= 8}


def _layer_slices(proto: Any, name: str, layers: int, ints: dict[str, list[int]]) -> dict[str, int] | None:
    """{slice output: layer} when every consumer of ``name`` is ``Slice(name, [k], [k+1], axes=[0])``."""
    found: dict[str, int] = {}
    for n in proto.graph.node:
        if name not in n.input:
            continue
        if n.op_type != "Slice" or list(n.input).index(name) != 0 or len(n.input) < 4:
            return None
        starts, ends, axes = (ints.get(i) for i in n.input[1:4])
        steps = ints.get(n.input[4]) if len(n.input) > 4 and n.input[4] else [1]
        if not (starts and ends and axes and len(starts) == 1 and axes in ([0], [-3]) and steps == [1]):
            return None
        k = starts[0]
        if not (0 <= k < layers and ends[0] == k + 1):
            return None
        found[n.output[0]] = k
    return found if set(found.values()) == set(range(layers)) else None


def split_layer_states(proto: Any, states: list[tuple[str, str, int]]) -> dict[str, list[tuple[str, str]]]:
    """Give each layer of a stacked recurrent state its own graph input and output, in place.

    ``states``: (input, output, num_layers) of each packed state, e.g. ("lstm.h_in", "lstm.h_out", 2).
    Returns {input: [(input.k, output.k) for each layer k]} for the states it split; a state whose
    graph does not have the exporters' Slice/Concat pattern is left packed.
    """
    import onnx

    g = proto.graph
    ints = _constant_ints(proto)
    split: dict[str, list[tuple[str, str]]] = {}
    for name_in, name_out, layers in states:
        if layers < 2:
            continue
        slices = _layer_slices(proto, name_in, layers, ints)
        concat = [n for n in g.node if name_out in n.output]
        internal = [n for n in g.node if name_out in n.input]
        if not slices or len(concat) != 1 or internal:
            continue
        cat = concat[0]
        axis = next((a.i for a in cat.attribute if a.name == "axis"), None)
        graph_inputs = {v.name for v in g.input}
        if (cat.op_type != "Concat" or axis not in (0, -3) or len(cat.input) != layers
                or len(set(cat.input)) != layers or set(cat.input) & graph_inputs):
            continue
        parts = [(f"{name_in}.{k}", f"{name_out}.{k}") for k in range(layers)]
        # inputs: each Slice's output becomes the layer's own graph input
        rename = {out: parts[k][0] for out, k in slices.items()}
        # outputs: each tensor the Concat joined becomes the layer's own graph output
        rename.update({t: parts[k][1] for k, t in enumerate(cat.input)})
        _remove_nodes(g, [i for i, n in enumerate(g.node)
                          if n.output[0] == name_out or (n.op_type == "Slice" and n.output[0] in slices)])
        for n in g.node:
            for i, v in enumerate(n.input):
                if v in rename:
                    n.input[i] = rename[v]
            for i, v in enumerate(n.output):
                if v in rename:
                    n.output[i] = rename[v]
        stale = [v for v in g.value_info if v.name in rename or v.name in (name_in, name_out)]
        for v in stale:
            g.value_info.remove(v)
        for values, index in ((g.input, 0), (g.output, 1)):
            pos = next(i for i, v in enumerate(values) if v.name == (name_in, name_out)[index])
            old = values[pos]
            dims = _dims(old)
            new = [onnx.helper.make_tensor_value_info(p[index], old.type.tensor_type.elem_type, [1, *dims[1:]])
                   for p in parts]
            rest = list(values)
            rest[pos : pos + 1] = new
            del values[:]
            values.extend(rest)
        split[name_in] = parts
    if split:
        _drop_dead_nodes(proto)
    return split


def _remove_nodes(graph: Any, indices: list[int]) -> None:
    for i in sorted(indices, reverse=True):  # by index: protobuf's repeated fields have no stable identity
        del graph.node[i]


def _drop_dead_nodes(proto: Any) -> None:
    """Remove nodes none of whose outputs are used (the Slices' constants, after a split)."""
    g = proto.graph
    while True:
        used = {v.name for v in g.output} | {i for n in g.node for i in n.input}
        dead = [i for i, n in enumerate(g.node) if not any(o in used for o in n.output)]
        if not dead:
            return
        _remove_nodes(g, dead)
