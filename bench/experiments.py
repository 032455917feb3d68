"""Tuning experiments behind bench/README.md's "what was tried" table (run: python -m bench.experiments).

Each experiment times variants of one thing in the same process, interleaved in rounds, and prints
medians; it reuses the files the suite built in bench/build/, building the missing ones first (export and
quantize of each --models entry, as the suite does).  Timings: per-call medians of
``time.perf_counter`` (wall) over interleaved rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BUILD = ROOT / "bench" / "build"


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int = 5, seconds: float = 0.3) -> dict[str, float]:
    """Median seconds per call of each function, timed in ``rounds`` interleaved slices."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(3):
                fn()
            end = time.perf_counter() + seconds / rounds
            while True:
                t = time.perf_counter()
                fn()
                now = time.perf_counter()
                samples[name].append(now - t)
                if now > end:
                    break
    return {k: statistics.median(v) for k, v in samples.items()}


def ort_session(path: Path | str, threads: int = 1, spinning: bool = False, level: str = "all", **extra: Any) -> Any:
    import onnxruntime as ort

    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = levels[level]
    o.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    o.log_severity_level = 3
    for k, v in extra.items():
        setattr(o, k, v)
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def sample(name: str, batch: int, length: int | None = None) -> np.ndarray:
    x = np.load(BUILD / name / "sample.npy")
    length = length or x.shape[1]
    rows = np.zeros(batch, dtype=int)
    steps = np.arange(length) % x.shape[1]
    return np.ascontiguousarray(x[rows][:, steps])


def threads_and_spinning(models: list[str]) -> None:
    """Intra-op threads (1 vs 2) and spinning, per workload: batch 1 and batch 64."""
    print("\n## threads x spinning (ONNX Runtime float, Session options)")
    for name in models:
        f = BUILD / name / "float.onnx"
        variants = {"1 thread": ort_session(f, 1), "2 threads": ort_session(f, 2),
                    "2 threads + spinning": ort_session(f, 2, spinning=True)}
        for batch in (1, 64):
            x = sample(name, batch)
            res = interleaved({k: (lambda s=s: s.run(None, {"x": x})) for k, s in variants.items()})
            base = res["1 thread"]
            print(f"{name:16} batch {batch:>3}: " + ", ".join(f"{k} {v * 1e6:8.0f} µs ({base / v:.2f}x)" for k, v in res.items()))


def optimization_levels(models: list[str]) -> None:
    """Graph optimization level at run time (the cost at load time is measured in startup())."""
    print("\n## graph optimization level (run time, batch 1 natural length, 1 thread)")
    for name in models:
        f = BUILD / name / "float.onnx"
        x = sample(name, 1)
        sessions = {lvl: ort_session(f, 1, level=lvl) for lvl in ("none", "basic", "extended", "all")}
        res = interleaved({k: (lambda s=s: s.run(None, {"x": x})) for k, s in sessions.items()})
        print(f"{name:16}: " + ", ".join(f"{k} {v * 1e6:7.1f} µs" for k, v in res.items()))


def startup(models: list[str]) -> None:
    """Session creation: optimizing at load vs loading a file optimized ahead of time (.onnx / .ort)."""
    import onnxruntime as ort

    print("\n## session start-up (ms, median of 15)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            f = BUILD / name / "float.onnx"
            pre = Path(tmp) / f"{name}.opt.onnx"
            ortf = Path(tmp) / f"{name}.ort"
            for target in (pre, ortf):
                s = ort_session(f, 1, level="extended", optimized_model_filepath=str(target))
                del s
            variants = {"optimize at load (all)": (f, "all"), "pre-optimized .onnx, no optimization": (pre, "none"),
                        "pre-optimized .ort, no optimization": (ortf, "none")}
            out = []
            for label, (path, level) in variants.items():
                ts = []
                for _ in range(15):
                    t = time.perf_counter()
                    ort_session(path, 1, level=level)
                    ts.append(time.perf_counter() - t)
                out.append(f"{label} {statistics.median(ts) * 1e3:.2f}")
            print(f"{name:16}: " + ", ".join(out))
    del ort


def _export_uncleaned(name: str, out: Path, streaming: bool) -> None:
    """Export a zoo model the way edgeseq did before its graph cleanup (no onnxslim, packed state)."""
    from edgeseq.export import exporter, stateful
    from models.zoo import ZOO

    recipe = next(r for r in ZOO if r.name == name)
    keep = exporter.simplify, stateful.simplify, stateful.split_layer_states
    exporter.simplify = stateful.simplify = lambda proto, say=None: (proto, None)
    stateful.split_layer_states = lambda proto, states: {}
    try:
        stateful.export_with_extras(recipe.factory, out, streaming=streaming)
    finally:
        exporter.simplify, stateful.simplify, stateful.split_layer_states = keep


def graph_cleanup(models: list[str]) -> None:
    """Graph cleanup after export: the file as exported by torch, onnxslim, ONNX Runtime's offline
    optimizer, and edgeseq's export (onnxslim + per-layer streaming state): nodes and batch-1 latency."""
    from edgeseq.card import op_histogram

    print("\n## graph cleanup after export (1 thread; float file at natural length and streaming step)")
    try:
        import onnxslim
    except ImportError:
        onnxslim = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            for kind in ("float", "stream-float"):
                built = BUILD / name / f"{kind}.onnx"
                if not built.exists():
                    continue
                f = Path(tmp) / f"{name}-{kind}.raw.onnx"
                _export_uncleaned(name, f, streaming=kind != "float")
                files = {"as exported": f}
                if onnxslim is not None:
                    slim = Path(tmp) / f"{name}-{kind}.slim.onnx"
                    with contextlib.redirect_stdout(io.StringIO()):  # onnxslim prints a summary table
                        onnxslim.slim(str(f), str(slim))
                    files["onnxslim"] = slim
                pre = Path(tmp) / f"{name}-{kind}.ortopt.onnx"
                ort_session(f, 1, level="extended", optimized_model_filepath=str(pre))
                files["ORT offline (extended)"] = pre
                files["edgeseq export"] = built
                sessions = {k: ort_session(p, 1, level="all") for k, p in files.items()}
                x = sample(name, 1, None if kind == "float" else 1)
                feeds = {}
                for k, sess in sessions.items():
                    feeds[k] = {"x": x}
                    for i in sess.get_inputs()[1:]:  # streaming state: zeros
                        feeds[k][i.name] = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
                res = interleaved({k: (lambda s=s, fd=feeds[k]: s.run(None, fd)) for k, s in sessions.items()},
                                  rounds=7, seconds=1.0)
                nodes = {k: sum(op_histogram(p).values()) for k, p in files.items()}
                print(f"{name:16} {kind:13}: " + ", ".join(f"{k} {nodes[k]} nodes {res[k] * 1e6:7.1f} µs" for k in files))


def stream_threads(models: list[str]) -> None:
    """StreamingSession.step (one step, batch 1) on 1 and 2 intra-op threads."""
    from edgeseq.runtime.streaming import StreamingSession

    print("\n## streaming step: threads (StreamingSession, batch 1, one step)")
    for name in models:
        f = BUILD / name / "stream-float.onnx"
        if not f.exists():
            continue
        x = sample(name, 1, 1)
        sessions = {t: StreamingSession(f, device="cpu", threads=t) for t in (1, 2)}
        res = interleaved({f"{t} thread(s)": (lambda s=s: s.step(x)) for t, s in sessions.items()}, rounds=7, seconds=1.0)
        print(f"{name:16}: " + ", ".join(f"{k} {v * 1e6:.1f} µs" for k, v in res.items()))


def overhead(models: list[str]) -> None:
    """Per-call cost of edgeseq's Python layer: Session.predict vs a bare InferenceSession.run, and
    StreamingSession.step vs the bare run_with_iobinding it wraps (batch 1, one step)."""
    from edgeseq.runtime.session import Session
    from edgeseq.runtime.streaming import StreamingSession

    print("\n## per-call overhead of the Python layer (batch 1 x 1 step, 1 thread)")
    for name in models:
        x = sample(name, 1, 1)
        s = Session(BUILD / name / "float.onnx", device="cpu", threads=1)
        raw = ort_session(BUILD / name / "float.onnx", 1)
        fns = {"Session.predict": lambda: s.predict(x), "InferenceSession.run": lambda: raw.run(None, {"x": x})}
        stream = BUILD / name / "stream-float.onnx"
        if stream.exists():
            ss = StreamingSession(stream, device="cpu", threads=1)
            ss.step(x)
            binding = ss._plans[x.shape].bindings[0]  # the pre-bound run that step() wraps
            fns["StreamingSession.step"] = lambda: ss.step(x)
            fns["run_with_iobinding"] = lambda: ss._ort.run_with_iobinding(binding)
        res = interleaved(fns, rounds=7, seconds=1.0)
        print(f"{name:16}: " + ", ".join(f"{k} {v * 1e6:.1f} µs" for k, v in res.items()))


def quantization(models: list[str]) -> None:
    """INT8 of every supported op (edgeseq quantize's dynamic mode) vs INT8 of the LSTM layers only."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's "consider pre-processing" warning
    print("\n## INT8: which ops to quantize (1 thread)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            f = BUILD / name / "float.onnx"
            lstm_only = Path(tmp) / f"{name}.lstm-only.onnx"
            quantize_dynamic(str(f), str(lstm_only), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"])
            files = {"float": f, "int8, all ops": BUILD / name / "int8.onnx", "int8, LSTM only": lstm_only}
            sessions = {k: ort_session(p, 1) for k, p in files.items()}
            natural = np.load(BUILD / name / "sample.npy").shape[1]
            for batch, length in ((1, natural), (1, 100), (64, natural)):
                x = sample(name, batch, length)
                res = interleaved({k: (lambda s=s: s.run(None, {"x": x})) for k, s in sessions.items()},
                                  seconds=0.6 if batch == 1 else 2.0)
                print(f"{name:16} b{batch}x{length}: " + ", ".join(f"{k} {v * 1e6:.1f} µs" for k, v in res.items()))


def stream_state(models: list[str]) -> None:
    """Streaming state of a stacked layer: one [layers, batch, hidden] tensor per state (cut by Slice and
    joined by Concat inside the graph at every step) vs one input/output per layer (what export writes)."""
    from edgeseq.card import op_histogram
    from edgeseq.export import stateful
    from edgeseq.export.stateful import export_with_extras
    from edgeseq.quantize import quantize
    from edgeseq.runtime.streaming import StreamingSession
    from models.zoo import ZOO

    print("\n## streaming state: packed vs per layer (StreamingSession.step, batch 1, one step, 1 thread)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            recipe = next(r for r in ZOO if r.name == name)
            files = {}
            for label in ("packed", "per layer"):
                f = Path(tmp) / f"{name}-{label.replace(' ', '-')}.onnx"
                original = stateful.split_layer_states
                if label == "packed":
                    stateful.split_layer_states = lambda proto, states: {}
                try:
                    export_with_extras(recipe.factory, f, streaming=True)
                except Exception as exc:  # noqa: BLE001 - e.g. a model that cannot stream
                    print(f"{name:16}: {str(exc).splitlines()[0][:100]}")
                    break
                finally:
                    stateful.split_layer_states = original
                files[f"float {label}"] = f
                q = f.with_suffix(".int8.onnx")
                quantize(f, q, mode="dynamic")
                files[f"int8 {label}"] = q
            if not files:
                continue
            x = sample(name, 1, 1)
            sessions = {k: StreamingSession(f, device="cpu", threads=1) for k, f in files.items()}
            res = interleaved({k: (lambda s=s: s.step(x)) for k, s in sessions.items()}, rounds=9, seconds=2.0)
            nodes = {k: sum(op_histogram(f).values()) for k, f in files.items()}
            print(f"{name:16}: " + ", ".join(f"{k} ({nodes[k]} nodes) {v * 1e6:.1f} µs" for k, v in res.items()))


def conv_int8(_models: list[str]) -> None:
    """Dynamic INT8 of a Conv1d front-end (ConvInteger + run-time activation quantization) vs keeping the
    Conv float and quantizing only the LSTM/MatMul/Gemm (what ``edgeseq quantize --mode dynamic`` does)."""
    import torch

    from edgeseq.export import export
    from edgeseq.quantize import modes
    from models.families import Conv1dLSTM

    print("\n## dynamic INT8 of convolutions: ConvInteger vs float Conv (Conv1d front-end + LSTM, 1 thread)")
    with tempfile.TemporaryDirectory() as tmp:
        for features, filters, hidden in ((64, 128, 64), (32, 64, 128)):
            torch.manual_seed(0)
            f = Path(tmp) / f"conv{features}.onnx"
            export(Conv1dLSTM(features, filters, hidden).eval(), f)
            files = {"float": f, "int8 with ConvInteger": f.with_suffix(".all.onnx"),
                     "int8, Conv float": f.with_suffix(".noconv.onnx")}
            modes.dynamic(f, files["int8 with ConvInteger"], op_types=(*modes.DYNAMIC_OPS, "Conv"))
            modes.dynamic(f, files["int8, Conv float"])
            sessions = {k: ort_session(p, 1) for k, p in files.items()}
            for batch in (1, 64):
                x = np.random.default_rng(0).standard_normal((batch, 100, features)).astype(np.float32)
                res = interleaved({k: (lambda s=s: s.run(None, {"x": x})) for k, s in sessions.items()},
                                  seconds=1.0 if batch == 1 else 3.0)
                print(f"Conv1d {features}->{filters} k3 ({features * filters * 3} weights) + LSTM {hidden}, "
                      f"b{batch}x100: " + ", ".join(f"{k} {v * 1e6:.0f} µs" for k, v in res.items()))


def memory_arena(models: list[str]) -> None:
    """ONNX Runtime's CPU memory arena on/off: whole sequences (Session) and one streaming step."""
    from edgeseq.runtime.session import Session
    from edgeseq.runtime.streaming import StreamingSession

    print("\n## CPU memory arena on vs off (1 thread)")
    for name in models:
        for kind in ("float", "int8"):
            f = BUILD / name / f"{kind}.onnx"
            if not f.exists():
                continue
            on, off = Session(f, device="cpu", threads=1), Session(f, device="cpu", threads=1, memory_arena=False)
            out = []
            for batch, length in ((1, 1), (1, 100), (64, 100)):
                x = sample(name, batch, length)
                r = interleaved({"on": lambda: on.predict(x), "off": lambda: off.predict(x)},
                                rounds=7, seconds=1.0 if batch == 1 else 3.0)
                out.append(f"b{batch}x{length} {r['on'] * 1e6:.1f} -> {r['off'] * 1e6:.1f} µs")
            stream = BUILD / name / f"stream-{kind}.onnx"
            if stream.exists():
                a = StreamingSession(stream, device="cpu", threads=1)
                a.session = Session(stream, device="cpu", threads=1)  # the same file with the arena on
                a._ort = a.session._sess
                b = StreamingSession(stream, device="cpu", threads=1)  # arena off (StreamingSession's default)
                x = sample(name, 1, 1)
                r = interleaved({"on": lambda: a.step(x), "off": lambda: b.step(x)}, rounds=9, seconds=2.0)
                out.append(f"step {r['on'] * 1e6:.2f} -> {r['off'] * 1e6:.2f} µs")
            print(f"{name:16} {kind:5} arena on -> off: " + "; ".join(out))


def _bound_run(sess: Any) -> Callable[[], Any]:
    """A run_with_iobinding call with every input (zeros) and output bound once, as StreamingSession does."""
    import onnxruntime as ort

    values = {i.name: ort.OrtValue.ortvalue_from_numpy(np.zeros([d if isinstance(d, int) else 1 for d in i.shape],
                                                                np.float32)) for i in sess.get_inputs()}
    probe = sess.io_binding()
    for k, v in values.items():
        probe.bind_ortvalue_input(k, v)
    for o in sess.get_outputs():
        probe.bind_output(o.name, "cpu")
    sess.run_with_iobinding(probe)
    binding = sess.io_binding()
    for k, v in values.items():
        binding.bind_ortvalue_input(k, v)
    for o, v in zip(sess.get_outputs(), probe.get_outputs()):
        binding.bind_ortvalue_output(o.name, ort.OrtValue.ortvalue_from_numpy(np.zeros(v.shape(), np.float32)))
    return lambda: sess.run_with_iobinding(binding)


def _lstm_nodes(path: Path) -> tuple[list[Any], dict[str, Any], int, int]:
    """(the file's LSTM nodes, its initializers by name, the first layer's input features and hidden size)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    weights = {t.name: t for t in proto.graph.initializer}
    lstms = [n for n in proto.graph.node if n.op_type == "LSTM"]
    if not lstms:
        return [], weights, 0, 0
    hidden = next(a.i for a in lstms[0].attribute if a.name == "hidden_size")
    return lstms, weights, int(numpy_helper.to_array(weights[lstms[0].input[1]]).shape[-1]), int(hidden)


def step_floor(models: list[str]) -> None:
    """What a streaming step cannot go below in ONNX Runtime: the exported step graph vs a graph of only
    its LSTM nodes (same weights, per-layer state) vs a one-node Identity graph, all pre-bound, no Python."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    print("\n## streaming step floor (run_with_iobinding, batch 1, one step, 1 thread)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            f = BUILD / name / "stream-float.onnx"
            if not f.exists():
                continue
            lstms, weights, features, hidden = _lstm_nodes(f)
            nodes, inputs, outputs, inits, prev = [], [], [], [], "x"
            inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, features]))
            for k, n in enumerate(lstms):
                inits += [numpy_helper.from_array(numpy_helper.to_array(weights[n.input[j]]), f"{w}{k}")
                          for j, w in ((1, "W"), (2, "R"), (3, "B"))]
                for st in ("h", "c"):
                    inputs.append(helper.make_tensor_value_info(f"{st}{k}", TensorProto.FLOAT, [1, 1, hidden]))
                    outputs.append(helper.make_tensor_value_info(f"{st}o{k}", TensorProto.FLOAT, [1, 1, hidden]))
                nodes.append(helper.make_node("LSTM", [prev, f"W{k}", f"R{k}", f"B{k}", "", f"h{k}", f"c{k}"],
                                              [f"Y{k}", f"ho{k}", f"co{k}"], hidden_size=hidden))
                prev = f"ho{k}"  # (1, batch, hidden): the next layer's one-step input
            opset = [helper.make_opsetid("", 17)]
            only = Path(tmp) / "lstm-only.onnx"
            onnx.save(helper.make_model(helper.make_graph(nodes, "lstm_only", inputs, outputs, inits),
                                        opset_imports=opset), str(only))
            ident = Path(tmp) / "identity.onnx"
            io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 1, features]) for v in ("x", "y")]
            onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                                                          io[:1], io[1:]), opset_imports=opset), str(ident))
            files = {"exported step": f, f"{len(lstms)} LSTM nodes only": only, "Identity": ident}
            runs = {k: _bound_run(ort_session(p, 1)) for k, p in files.items()}
            res = interleaved(runs, rounds=7, seconds=1.5)
            print(f"{name:16}: " + ", ".join(f"{k} {v * 1e6:.2f} µs" for k, v in res.items()))


def _cell_graph(lstms: list[Any], weights: dict[str, Any], features: int, hidden: int) -> Any:
    """The exported step's LSTM layers as one-step cells of primitive ops: Concat, Gemm, Split, Sigmoid, Tanh, Mul, Add."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inputs, outputs, inits, prev = [], [], [], [], "x"
    inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features]))
    for k, n in enumerate(lstms):
        w, r, b = (numpy_helper.to_array(weights[n.input[j]])[0] for j in (1, 2, 3))  # ONNX gate order i, o, f, c
        for st in ("h", "c"):
            inputs.append(helper.make_tensor_value_info(f"{st}{k}", TensorProto.FLOAT, [1, hidden]))
            outputs.append(helper.make_tensor_value_info(f"{st}o{k}", TensorProto.FLOAT, [1, hidden]))
        inits += [numpy_helper.from_array(np.concatenate([w, r], 1).T.copy(), f"WR{k}"),
                  numpy_helper.from_array(b[: 4 * hidden] + b[4 * hidden:], f"b{k}"),
                  numpy_helper.from_array(np.array([3 * hidden, hidden], np.int64), f"split{k}")]
        nodes += [helper.make_node("Concat", [prev, f"h{k}"], [f"xh{k}"], axis=1),
                  helper.make_node("Gemm", [f"xh{k}", f"WR{k}", f"b{k}"], [f"g{k}"]),
                  helper.make_node("Split", [f"g{k}", f"split{k}"], [f"sg{k}", f"tg{k}"], axis=1),
                  helper.make_node("Sigmoid", [f"sg{k}"], [f"sig{k}"]),
                  helper.make_node("Tanh", [f"tg{k}"], [f"gt{k}"]),
                  helper.make_node("Split", [f"sig{k}"], [f"i{k}", f"o{k}", f"f{k}"], axis=1, num_outputs=3),
                  helper.make_node("Mul", [f"f{k}", f"c{k}"], [f"fc{k}"]),
                  helper.make_node("Mul", [f"i{k}", f"gt{k}"], [f"ig{k}"]),
                  helper.make_node("Add", [f"fc{k}", f"ig{k}"], [f"co{k}"]),
                  helper.make_node("Tanh", [f"co{k}"], [f"tc{k}"]),
                  helper.make_node("Mul", [f"o{k}", f"tc{k}"], [f"ho{k}"])]
        prev = f"ho{k}"
    return helper.make_model(helper.make_graph(nodes, "cells", inputs, outputs, inits),
                             opset_imports=[helper.make_opsetid("", 18)])


def cell_ops(models: list[str]) -> None:
    """The streaming step with its LSTM nodes written as primitive-op cells, pre-bound, no Python."""
    import onnx

    print("\n## one-step LSTM as primitive ops vs the exported step (run_with_iobinding, batch 1, 1 thread)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            f = BUILD / name / "stream-float.onnx"
            if not f.exists():
                continue
            lstms, weights, features, hidden = _lstm_nodes(f)
            cells = Path(tmp) / f"{name}-cells.onnx"
            onnx.save(_cell_graph(lstms, weights, features, hidden), str(cells))
            runs = {k: _bound_run(ort_session(p, 1)) for k, p in {"exported step": f, "cells": cells}.items()}
            res = interleaved(runs, rounds=7, seconds=1.5)
            print(f"{name:16}: " + ", ".join(f"{k} {v * 1e6:.2f} µs" for k, v in res.items()))


def _layer_graph(features: int, hidden: int, scan: bool) -> Any:
    """One LSTM layer over (batch, seq, features) with random weights: the ``LSTM`` node, or the same layer
    as a ``Scan`` of primitive ops with the input projection of every step done up front in one MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4 * hidden, features)) * 0.1).astype(np.float32)  # ONNX gate order i, o, f, c
    r = (rng.standard_normal((4 * hidden, hidden)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(8 * hidden) * 0.1).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["seq", "batch", hidden])
    transpose = helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2])
    if not scan:
        nodes = [transpose, helper.make_node("LSTM", ["xt", "W", "R", "B"], ["y4"], hidden_size=hidden),
                 helper.make_node("Squeeze", ["y4", "one"], ["y"])]
        inits = [numpy_helper.from_array(w[None], "W"), numpy_helper.from_array(r[None], "R"),
                 numpy_helper.from_array(b[None], "B"), numpy_helper.from_array(np.array([1], np.int64), "one")]
    else:
        def ifoc_to_iofc(m: np.ndarray) -> np.ndarray:  # sigmoid gates first, then the cell gate
            i, o, f, c = np.split(m, 4, axis=0)
            return np.concatenate([i, o, f, c], axis=0)

        body = helper.make_graph(
            [helper.make_node("MatMul", ["h", "Rt"], ["hr"]), helper.make_node("Add", ["hr", "g"], ["z"]),
             helper.make_node("Split", ["z", "split"], ["sz", "cz"], axis=1),
             helper.make_node("Sigmoid", ["sz"], ["s"]), helper.make_node("Tanh", ["cz"], ["ct"]),
             helper.make_node("Split", ["s"], ["i", "o", "f"], axis=1, num_outputs=3),
             helper.make_node("Mul", ["f", "c"], ["fc"]), helper.make_node("Mul", ["i", "ct"], ["ic"]),
             helper.make_node("Add", ["fc", "ic"], ["c2"]), helper.make_node("Tanh", ["c2"], ["tc"]),
             helper.make_node("Mul", ["o", "tc"], ["h2"]), helper.make_node("Identity", ["h2"], ["yt"])],
            "step",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", k * hidden]) for n, k in (("h", 1), ("c", 1), ("g", 4))],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", hidden]) for n in ("h2", "c2", "yt")],
            [numpy_helper.from_array(ifoc_to_iofc(r).T.copy(), "Rt"),
             numpy_helper.from_array(np.array([3 * hidden, hidden], np.int64), "split")])
        nodes = [transpose, helper.make_node("MatMul", ["xt", "Wt"], ["gx"]), helper.make_node("Add", ["gx", "bias"], ["g"]),
                 helper.make_node("Shape", ["x"], ["b"], start=0, end=1), helper.make_node("Concat", ["b", "H"], ["hs"], axis=0),
                 helper.make_node("ConstantOfShape", ["hs"], ["zeros"]),
                 helper.make_node("Scan", ["zeros", "zeros", "g"], ["hT", "cT", "y"], body=body, num_scan_inputs=1)]
        inits = [numpy_helper.from_array(ifoc_to_iofc(w).T.copy(), "Wt"),
                 numpy_helper.from_array(ifoc_to_iofc(b[: 4 * hidden]) + ifoc_to_iofc(b[4 * hidden:]), "bias"),
                 numpy_helper.from_array(np.array([hidden], np.int64), "H")]
    return helper.make_model(helper.make_graph(nodes, "layer", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 18)])


def scan_lstm(models: list[str]) -> None:
    """An LSTM layer as ONNX Runtime's LSTM kernel vs a Scan of primitive ops (MLAS GEMM and its vectorised
    Sigmoid/Tanh instead of the kernel's gate code), at each model's first-layer sizes; PyTorch for scale."""
    import onnx
    import torch

    print("\n## one LSTM layer: LSTM node vs Scan of primitive ops vs PyTorch (1 thread, medians)")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            f = BUILD / name / "float.onnx"
            if not f.exists():
                continue
            lstms, _weights, features, hidden = _lstm_nodes(f)
            if not lstms:
                continue
            paths = {}
            for kind, scan in (("LSTM node", False), ("Scan", True)):
                paths[kind] = Path(tmp) / f"{name}-{kind.split()[0]}.onnx"
                onnx.save(_layer_graph(features, hidden, scan), str(paths[kind]))
            check = np.random.default_rng(1).standard_normal((3, 11, features)).astype(np.float32)
            outs = [ort_session(p).run(None, {"x": check})[0] for p in paths.values()]
            ref = torch.nn.LSTM(features, hidden).eval()
            for batch, length in ((1, 100), (64, 100), (256, 28)):
                x = np.random.default_rng(2).standard_normal((batch, length, features)).astype(np.float32)
                xt = torch.from_numpy(x.transpose(1, 0, 2).copy())
                sessions = {k: ort_session(p) for k, p in paths.items()}
                runs: dict[str, Callable[[], Any]] = {
                    k: functools.partial(sess.run, None, {"x": x}) for k, sess in sessions.items()}
                runs["PyTorch"] = lambda: ref(xt)
                with torch.inference_mode():
                    res = interleaved(runs, rounds=5, seconds=1.5)
                print(f"{name:16} F={features} H={hidden} batch {batch:3} x {length:3}: "
                      + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in res.items())
                      + f"  (Scan/LSTM {res['Scan'] / res['LSTM node']:.2f}; outputs differ by "
                        f"{np.abs(outs[0] - outs[1]).max():.1e})")


def lstmp(_models: list[str]) -> None:
    """Projected LSTMs (nn.LSTM(proj_size>0)), exported as edgeseq's loop over time, vs PyTorch: whole
    sequences (a 2-layer bidirectional LSTMP, float and INT8) and a streaming step (a unidirectional one)."""
    import torch
    from torch import nn

    from edgeseq import Session, StreamingSession
    from edgeseq.export import export
    from edgeseq.export.stateful import export_with_extras
    from edgeseq.quantize import quantize

    torch.set_num_threads(1)
    torch.manual_seed(0)
    bi = nn.LSTM(40, 128, num_layers=2, proj_size=32, batch_first=True, bidirectional=True).eval()
    uni = nn.LSTM(40, 64, num_layers=2, proj_size=16, batch_first=True).eval()
    print("\n## projected LSTMs: edgeseq's loop vs PyTorch (1 thread, medians)")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        f32, i8, stream = Path(tmp) / "bi.onnx", Path(tmp) / "bi.int8.onnx", Path(tmp) / "uni.onnx"
        export(bi, f32, input_shape=(1, 20, 40))
        quantize(f32, i8, mode="dynamic")
        export_with_extras(uni, stream, input_shape=(1, 20, 40), streaming=True)
        for batch in (1, 64):
            x = np.random.default_rng(0).standard_normal((batch, 100, 40)).astype(np.float32)
            xt = torch.from_numpy(x)
            sessions = {"edgeseq float": Session(f32, device="cpu", threads=1), "edgeseq int8": Session(i8, device="cpu", threads=1)}
            runs: dict[str, Callable[[], Any]] = {k: functools.partial(v.predict, x) for k, v in sessions.items()}
            runs["PyTorch"] = functools.partial(bi, xt)
            with torch.inference_mode():
                res = interleaved(runs, rounds=5, seconds=3.0)
            print(f"bidirectional 2 x (40 -> 128, proj 32), batch {batch:2} x 100: "
                  + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in res.items())
                  + f"  (float {res['PyTorch'] / res['edgeseq float']:.2f}x, int8 {res['PyTorch'] / res['edgeseq int8']:.2f}x)")
        s = StreamingSession(stream, device="cpu", threads=1)
        one = np.random.default_rng(1).standard_normal((1, 1, 40)).astype(np.float32)
        state: list[Any] = [None]

        def torch_step() -> None:
            _out, state[0] = uni(torch.from_numpy(one), state[0])

        with torch.inference_mode():
            res = interleaved({"StreamingSession.step": functools.partial(s.step, one), "PyTorch": torch_step},
                              rounds=7, seconds=2.0)
        print("unidirectional 2 x (40 -> 64, proj 16), one step: "
              + ", ".join(f"{k} {v * 1e6:.1f} µs" for k, v in res.items())
              + f"  ({res['PyTorch'] / res['StreamingSession.step']:.2f}x)")


def cell_loop(_models: list[str]) -> None:
    """Python loops over time (nn.LSTMCell / nn.GRUCell stepped over ``x[:, t]``), exported scripted as an
    ONNX Loop, vs PyTorch eager running the same loop; and the Loop with the full-range Slice that
    ``x[:, t]`` exports as (a copy of the whole input every step) kept, as before that cleanup pass."""
    from unittest import mock

    import torch
    from torch import nn

    from edgeseq import Session
    from edgeseq.export import cleanup, export
    from edgeseq.quantize import quantize

    class Loop(nn.Module):
        def __init__(self, cell: nn.Module) -> None:
            super().__init__()
            self.cell, self.head = cell, nn.Linear(64, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x.new_zeros(x.shape[0], 64)
            if isinstance(self.cell, nn.LSTMCell):
                c = x.new_zeros(x.shape[0], 64)
                for t in range(x.shape[1]):
                    h, c = self.cell(x[:, t], (h, c))
            else:
                for t in range(x.shape[1]):
                    h = self.cell(x[:, t], h)
            return self.head(h)

    torch.set_num_threads(1)
    print("\n## Python loops over time, exported scripted (ONNX Loop) vs PyTorch eager (1 thread, medians)")
    for kind in ("LSTMCell", "GRUCell"):
        torch.manual_seed(0)
        model = Loop(getattr(nn, kind)(16, 64)).eval()
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
            f32, i8, kept = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx", Path(tmp) / "kept.onnx"
            export(model, f32, input_shape=(1, 20, 16))
            quantize(f32, i8, mode="dynamic")
            with mock.patch.object(cleanup, "drop_full_slices", lambda proto: 0):
                export(model, kept, input_shape=(1, 20, 16))
            for batch, length in ((1, 100), (64, 100), (64, 1000)):
                x = np.random.default_rng(0).standard_normal((batch, length, 16)).astype(np.float32)
                runs: dict[str, Callable[[], Any]] = {
                    label: functools.partial(Session(path, device="cpu", threads=1).predict, x)
                    for label, path in (("edgeseq float", f32), ("edgeseq int8", i8), ("full-slice kept", kept))}
                runs["PyTorch"] = functools.partial(model, torch.from_numpy(x))
                with torch.inference_mode():
                    res = interleaved(runs, rounds=5, seconds=2.0 if length < 1000 else 4.0)
                print(f"{kind} 16 -> 64, batch {batch:2} x {length:4}: "
                      + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in res.items())
                      + f"  (float {res['PyTorch'] / res['edgeseq float']:.2f}x, int8 "
                      f"{res['PyTorch'] / res['edgeseq int8']:.2f}x, slice kept {res['PyTorch'] / res['full-slice kept']:.2f}x)")


def decoder_loop(_models: list[str]) -> None:
    """A greedy seq2seq decoder (pytorch-seq2seq's shape: embedding, 2-layer LSTM stepped one token at a time,
    argmax fed back), exported scripted as an ONNX Loop, written two ways: into a preallocated tensor
    (``outputs[t] = y``, a ScatterND on the Loop's carried tensor) and appended to a list then stacked; the
    first also with edgeseq's ``scatter_to_scan`` pass turned off, as before it."""
    from unittest import mock

    import torch
    from torch import nn

    from edgeseq import Session
    from edgeseq.export import cleanup, export

    class Decoder(nn.Module):
        def __init__(self, stacked: bool) -> None:
            super().__init__()
            self.stacked = stacked
            self.src_emb, self.tgt_emb = nn.Embedding(50, 16), nn.Embedding(40, 16)
            self.enc, self.dec = nn.LSTM(16, 32, 2), nn.LSTM(16, 32, 2)
            self.out = nn.Linear(32, 40)

        def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
            _, (h, c) = self.enc(self.src_emb(src))
            token = tgt[0]
            outputs = torch.zeros(tgt.shape[0], tgt.shape[1], 40)
            steps = [torch.zeros(tgt.shape[1], 40)]
            for t in range(1, tgt.shape[0]):
                y, (h, c) = self.dec(self.tgt_emb(token).unsqueeze(0), (h, c))
                logits = self.out(y[0])
                if self.stacked:
                    steps.append(logits)
                else:
                    outputs[t] = logits
                token = logits.argmax(1)
            return torch.stack(steps) if self.stacked else outputs

        def example_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.randint(0, 50, (12, 2)), torch.randint(0, 40, (7, 2))

    torch.set_num_threads(1)
    print("\n## seq2seq greedy decoder loop: outputs[t] = y (scatter_to_scan on/off) vs list + torch.stack "
          "(1 thread, medians)")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        models, files = {}, {}
        for label, stacked in (("outputs[t] = y", False), ("list + stack", True)):
            torch.manual_seed(0)
            models[label] = Decoder(stacked).eval()
            files[label] = Path(tmp) / f"{stacked}.onnx"
            export(models[label], files[label], time_first=True)
        files["outputs[t] = y, pass off"] = Path(tmp) / "off.onnx"
        with mock.patch.object(cleanup, "scatter_to_scan", lambda proto: 0):
            export(models["outputs[t] = y"], files["outputs[t] = y, pass off"], time_first=True)
        for batch, src_len, tgt_len in ((1, 30, 30), (64, 30, 30), (64, 200, 200), (64, 1000, 600)):
            rng = np.random.default_rng(0)
            feed = {"x": rng.integers(0, 50, (src_len, batch)), "tgt": rng.integers(0, 40, (tgt_len, batch))}
            runs: dict[str, Callable[[], Any]] = {
                f"edgeseq {label}": functools.partial(Session(path, device="cpu", threads=1).run, feed)
                for label, path in files.items()}
            runs["PyTorch outputs[t] = y"] = functools.partial(
                models["outputs[t] = y"], torch.from_numpy(feed["x"]), torch.from_numpy(feed["tgt"]))
            with torch.inference_mode():
                res = interleaved(runs, rounds=5, seconds=2.0)
            print(f"batch {batch:2}, {src_len:4} -> {tgt_len:3} tokens: "
                  + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in res.items()))

    class Tagger(nn.Module):  # batch-first: outputs[:, t] = y, scattered as [b, t] for every sample b
        def __init__(self) -> None:
            super().__init__()
            self.cell, self.head = nn.LSTMCell(16, 64), nn.Linear(64, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, c = x.new_zeros(x.size(0), 64), x.new_zeros(x.size(0), 64)
            outputs = x.new_zeros(x.size(0), x.size(1), 8)
            for t in range(x.size(1)):
                h, c = self.cell(x[:, t], (h, c))
                outputs[:, t] = self.head(h)
            return outputs

    print("batch-first per-step outputs, outputs[:, t] = y (nn.LSTMCell 16 -> 64, head 8):")
    torch.manual_seed(0)
    tagger = Tagger().eval()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        on, off = Path(tmp) / "on.onnx", Path(tmp) / "off.onnx"
        export(tagger, on, input_shape=(2, 20, 16))
        with mock.patch.object(cleanup, "scatter_to_scan", lambda proto: 0):
            export(tagger, off, input_shape=(2, 20, 16))
        for batch, length in ((1, 100), (64, 100), (64, 1000)):
            x = np.random.default_rng(0).standard_normal((batch, length, 16)).astype(np.float32)
            runs = {label: functools.partial(Session(path, device="cpu", threads=1).predict, x)
                    for label, path in (("edgeseq", on), ("pass off", off))}
            runs["PyTorch"] = functools.partial(tagger, torch.from_numpy(x))
            with torch.inference_mode():
                res = interleaved(runs, rounds=5, seconds=2.0)
            print(f"batch {batch:2} x {length:4}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in res.items()))


def nchwc(models: list[str]) -> None:
    """ONNX Runtime's NchwcTransformer on and off (edgeseq switches it off for float16 files, where it can
    crash ONNX Runtime: edgeseq/runtime/workarounds.py), float and FP16 files, batch 64 x 100."""
    import onnxruntime as ort

    print("\n## NchwcTransformer on vs off (1 thread, batch 64 x 100)")
    for name in models:
        for kind in ("float", "fp16"):
            f = BUILD / name / f"{kind}.onnx"
            if not f.exists():
                continue
            x = sample(name, 64, 100)
            o = ort.SessionOptions()
            o.intra_op_num_threads, o.inter_op_num_threads = 1, 1
            o.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sessions = {"on": None, "off": None}
            for key in sessions:
                try:
                    sessions[key] = ort.InferenceSession(str(f), o, providers=["CPUExecutionProvider"],
                                                         disabled_optimizers=[] if key == "on" else ["NchwcTransformer"])
                except Exception as exc:  # noqa: BLE001 - reported, not raised
                    print(f"{name:16} {kind:5}: {key}: cannot load ({str(exc).splitlines()[0][:80]})")
            if not all(sessions.values()):
                continue
            feed = {sessions["on"].get_inputs()[0].name: x}
            res = interleaved({k: functools.partial(v.run, None, feed) for k, v in sessions.items()}, rounds=7, seconds=2.0)
            print(f"{name:16} {kind:5}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in res.items())
                  + f"  (off/on {res['off'] / res['on']:.3f})")


def batch_dependence(models: list[str]) -> None:
    """Does a sample's output depend on the rest of its batch? First 64 eval samples in one run vs one at a time."""
    from edgeseq import Session

    print("\n## one batch of 64 vs 64 runs of one sample (max abs difference, same predicted class)")
    for name in models:
        data = np.load(ROOT / "models" / "data" / f"{name}-test.npz")
        if "lengths" in data.files:
            continue  # different lengths would change the runs themselves
        x = data["x"][:64]
        static = BUILD / name / "int8-static.onnx"  # fixed scales for Conv/MatMul/Gemm; is the LSTM's still per run?
        if (BUILD / name / "float.onnx").exists() and not static.exists():
            from edgeseq.quantize import quantize

            calib = BUILD / name / "calibration.npy"
            np.save(calib, data["x"][:256])
            quantize(BUILD / name / "float.onnx", static, mode="static", calibration=calib)
        for kind in ("float", "int8", "int8-static", "fp16"):
            f = BUILD / name / f"{kind}.onnx"
            if not f.exists():
                continue
            s = Session(f, device="cpu", threads=1)
            batch = s.predict(x)
            alone = np.concatenate([s.predict(x[i : i + 1]) for i in range(len(x))])
            same = float(np.mean(batch.argmax(-1) == alone.argmax(-1))) if batch.ndim == 2 else float("nan")
            print(f"{name:16} {kind:5}: max |batch - alone| {np.abs(batch - alone).max():.3g}, same class {same:.0%}")


def run_size(models: list[str]) -> None:
    """Whole eval sets through Session.predict: samples per run (cache cap) and length-sorted runs, on and off."""
    import edgeseq.runtime.session as S
    from edgeseq import Session
    from edgeseq.export.stateful import export_with_extras

    print("\n## run size and length buckets (Session.predict on the eval set, >= 2000 samples, 1 thread)")
    defaults = (S.CPU_RUN_SAMPLE_STEPS, S.LENGTH_WINDOW_RUNS)

    def with_settings(session: Any, x: np.ndarray, lengths: Any, cap: int, window: int) -> Callable[[], Any]:
        def call() -> Any:
            S.CPU_RUN_SAMPLE_STEPS, S.LENGTH_WINDOW_RUNS = cap, window
            try:
                return session.predict(x, lengths=lengths)
            finally:
                S.CPU_RUN_SAMPLE_STEPS, S.LENGTH_WINDOW_RUNS = defaults
        return call

    def padded_runs(session: Any, x: np.ndarray, lengths: Any) -> Callable[[], Any]:
        spec, out = session.data_inputs()[0], [session.outputs[0].name]  # one padded run per 256 samples
        return lambda: [session._run_chunk(spec, x[i : i + 256], lengths[i : i + 256], out) for i in range(0, len(x), 256)]

    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            data = np.load(ROOT / "models" / "data" / f"{name}-test.npz")
            reps = -(-2000 // len(data["x"]))
            x = np.concatenate([data["x"]] * reps)
            lengths = np.concatenate([data["lengths"]] * reps) if "lengths" in data.files else None
            files = {k: BUILD / name / f"{k}.onnx" for k in ("float", "int8") if (BUILD / name / f"{k}.onnx").exists()}
            if lengths is not None:
                files["float --lengths"] = Path(tmp) / f"{name}-lengths.onnx"
                with contextlib.redirect_stderr(io.StringIO()):
                    export_with_extras(f"models/{name}.py:build", files["float --lengths"], lengths=True)
            for kind, f in files.items():
                session = Session(f, device="cpu", threads=1)
                variants = {"256 per run": with_settings(session, x, lengths, 1 << 30, 1),
                            "cache cap": with_settings(session, x, lengths, defaults[0], 1)}
                if lengths is not None:
                    variants["cache cap + length-sorted windows"] = with_settings(session, x, lengths, *defaults)
                    if session.lengths_input:
                        variants = {"padded runs of 256": padded_runs(session, x, lengths), **variants}
                res = interleaved(variants, rounds=5, seconds=3.0)
                print(f"{name:15} {kind:16} {tuple(x.shape)}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in res.items()))


def _attention_core(heads: int, dim: int, fused: bool) -> Any:
    """Self-attention on (batch, seq, dim) projections q, k, v: the Reshape/Transpose/MatMul/Softmax graph edgeseq
    writes for nn.MultiheadAttention, or ONNX Runtime's fused com.microsoft MultiHeadAttention."""
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq", dim]) for n in "qkv"]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if fused:
        nodes = [helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=heads)]
        inits = []
    else:
        inits = [helper.make_tensor("split", TensorProto.INT64, [4], [0, 0, heads, dim // heads]),
                 helper.make_tensor("scale", TensorProto.FLOAT, [], [(dim // heads) ** -0.5]),
                 helper.make_tensor("merged", TensorProto.INT64, [3], [0, 0, dim])]
        nodes = [helper.make_node("Reshape", ["q", "split"], ["q4"]), helper.make_node("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
                 helper.make_node("Reshape", ["k", "split"], ["k4"]), helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
                 helper.make_node("Reshape", ["v", "split"], ["v4"]), helper.make_node("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
                 helper.make_node("Mul", ["qt", "scale"], ["qs"]), helper.make_node("MatMul", ["qs", "kt"], ["s"]),
                 helper.make_node("Softmax", ["s"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "vt"], ["o"]),
                 helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
                 helper.make_node("Reshape", ["ot", "merged"], ["y"])]
    graph = helper.make_graph(nodes, "attention", io, [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def attention(_models: list[str]) -> None:
    """nn.MultiheadAttention after an LSTM (64 -> 128, 8 heads), exported by edgeseq (attention traced with
    head-only reshapes), vs PyTorch eager; and the attention core alone as edgeseq writes it vs ONNX Runtime's
    fused com.microsoft MultiHeadAttention kernel."""
    import torch
    from torch import nn

    from edgeseq import Session
    from edgeseq.export import export

    class LSTMAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(64, 128, batch_first=True)
            self.mha = nn.MultiheadAttention(128, 8, batch_first=True)
            self.fc = nn.Linear(128, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, _ = self.lstm(x)
            return self.fc(self.mha(h, h, h, need_weights=False)[0].mean(1))

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LSTMAttention().eval()
    shapes = ((1, 100), (64, 100), (64, 400))
    print("\n## LSTM + nn.MultiheadAttention (64 -> 128, 8 heads): edgeseq vs PyTorch eager (1 thread, medians)")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        path = Path(tmp) / "attention.onnx"
        export(model, path)
        session = Session(path, device="cpu", threads=1)
        for batch, length in shapes:
            x = np.random.default_rng(0).standard_normal((batch, length, 64)).astype(np.float32)
            with torch.inference_mode():
                res = interleaved({"edgeseq": functools.partial(session.predict, x),
                                   "PyTorch": functools.partial(model, torch.from_numpy(x))}, rounds=5, seconds=1.0)
            print(f"batch {batch:2} x {length}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in res.items())
                  + f" ({res['PyTorch'] / res['edgeseq']:.2f}x)")
    print("attention core alone, q/k/v (batch, seq, 128), 8 heads: edgeseq's graph vs com.microsoft MultiHeadAttention")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    cores = {label: ort.InferenceSession(_attention_core(8, 128, fused).SerializeToString(), options,
                                         providers=["CPUExecutionProvider"])
             for label, fused in (("edgeseq graph", False), ("fused kernel", True))}
    for batch, length in shapes:
        rng = np.random.default_rng(0)
        feed = {n: rng.standard_normal((batch, length, 128)).astype(np.float32) for n in "qkv"}
        res = interleaved({label: functools.partial(s.run, None, feed) for label, s in cores.items()},
                          rounds=5, seconds=1.0)
        print(f"batch {batch:2} x {length}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in res.items()))


EXPERIMENTS = {"threads": threads_and_spinning, "stream-threads": stream_threads, "levels": optimization_levels,
               "startup": startup, "cleanup": graph_cleanup, "overhead": overhead, "quant": quantization,
               "stream-state": stream_state, "conv-int8": conv_int8, "arena": memory_arena,
               "step-floor": step_floor, "run-size": run_size, "cell-ops": cell_ops,
               "batch-dependence": batch_dependence, "scan-lstm": scan_lstm,
               "lstmp": lstmp, "nchwc": nchwc, "cell-loop": cell_loop, "decoder-loop": decoder_loop,
               "attention": attention}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                    help=f"any of {', '.join(EXPERIMENTS)} (default: all)")
    ap.add_argument("--models", default="fashion_lstm,motion_lstm,msft_cnnlstm")
    args = ap.parse_args()
    models = args.models.split(",")
    unknown = set(args.experiments) - set(EXPERIMENTS)
    if unknown:
        ap.error(f"unknown experiment(s) {', '.join(sorted(unknown))}; choose from {', '.join(EXPERIMENTS)}")
    _ensure_built(models)
    for name in args.experiments or list(EXPERIMENTS):
        EXPERIMENTS[name](models)


def _ensure_built(models: list[str]) -> None:
    """The suite's files for ``models`` in bench/build/ (a fresh checkout has none): built where missing."""
    from bench import artifacts
    from bench.suite import zoo_recipes

    for recipe in zoo_recipes(models):
        if not (BUILD / recipe.name / "float.onnx").exists():
            print(f"building bench/build/{recipe.name}/ (export and quantize, once) ...", file=sys.stderr)
        artifacts.build(recipe, lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    main()
