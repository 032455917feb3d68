"""Tuning experiments behind bench/README.md's "what was tried" table (run: python -m bench.experiments).

Each experiment times variants of one thing in the same process, interleaved in rounds, and prints
medians; it reuses the files the suite built in bench/build/.  Timings: per-call medians of
``time.perf_counter`` (wall) over interleaved rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

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


def graph_cleanup(models: list[str]) -> None:
    """onnxslim and ONNX Runtime's offline optimizer after export: node count and batch-1 latency."""
    from edgeseq.card import op_histogram

    print("\n## graph cleanup after export (1 thread; float file and streaming step)")
    try:
        import onnxslim
    except ImportError:
        onnxslim = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            for kind in ("float", "stream-float"):
                f = BUILD / name / f"{kind}.onnx"
                if not f.exists():
                    continue
                files = {"as exported": f}
                if onnxslim is not None:
                    slim = Path(tmp) / f"{name}-{kind}.slim.onnx"
                    with contextlib.redirect_stdout(io.StringIO()):  # onnxslim prints a summary table
                        onnxslim.slim(str(f), str(slim))
                    files["onnxslim"] = slim
                pre = Path(tmp) / f"{name}-{kind}.ortopt.onnx"
                ort_session(f, 1, level="extended", optimized_model_filepath=str(pre))
                files["ORT offline (extended)"] = pre
                sessions = {k: ort_session(p, 1, level="all") for k, p in files.items()}
                if kind == "float":
                    x = sample(name, 1)
                    feeds = {k: {"x": x} for k in files}
                else:
                    s0 = next(iter(sessions.values()))
                    x = sample(name, 1, 1)
                    feed = {"x": x}
                    for i in s0.get_inputs()[1:]:
                        feed[i.name] = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
                    feeds = {k: feed for k in files}
                res = interleaved({k: (lambda s=s, fd=feeds[k]: s.run(None, fd)) for k, s in sessions.items()})
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


EXPERIMENTS = {"threads": threads_and_spinning, "stream-threads": stream_threads, "levels": optimization_levels,
               "startup": startup, "cleanup": graph_cleanup, "overhead": overhead, "quant": quantization}


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
    for name in args.experiments or list(EXPERIMENTS):
        EXPERIMENTS[name](models)


if __name__ == "__main__":
    main()
