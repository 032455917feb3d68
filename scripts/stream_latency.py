"""Per-step streaming latency: batch 1 and many streams, as a Markdown table.

    python scripts/stream_latency.py                       # exports models/motion_lstm.py:build --streaming
    python scripts/stream_latency.py --model m.onnx --steps 5000 --streams 1000 --threads 1

Rows: a plain ``InferenceSession.run`` loop that round-trips the state through numpy (the baseline
users write by hand), ``StreamingSession.step`` (state bound in place with I/O binding), and a
``StreamPool`` serving N streams with one batched run per tick (``step_all`` with a stacked array,
and ``step`` with a {stream: step} dict).  Times are wall-clock per call; all rows come from one
process, so compare ratios on shared machines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeseq.runtime.ort import create_inference_session  # noqa: E402
from edgeseq.runtime.pool import StreamPool  # noqa: E402
from edgeseq.runtime.providers import resolve_device  # noqa: E402
from edgeseq.runtime.streaming import StreamingSession  # noqa: E402


def timed(fn, steps: int, warmup: int = 50) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(steps)
    for i in range(steps):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - t0
    return out / 1000.0  # µs


def state_pairs(slots: list) -> list[tuple[str, str]]:
    """(graph input, graph output) of every state tensor (a layer's state may be split per layer)."""
    return [pair for s in slots for pair in s.parts]


def zero_state(slots: list, batch: int) -> dict[str, np.ndarray]:
    """Zero initial state keyed by graph input name, as a hand-written loop feeds it."""
    state = {}
    for s in slots:
        for (inp, _), part in zip(s.parts, s.split(np.zeros(s.shape(batch), np.float32))):
            state[inp] = part
    return state


def baseline(path: Path, x: np.ndarray, threads: int, steps: int) -> np.ndarray:
    """InferenceSession.run, state fed back as numpy arrays: what hand-written streaming loops do."""
    probe = StreamingSession(path, device="cpu", threads=threads)
    sess = create_inference_session(path, resolve_device("cpu"), threads)
    slots = probe._slots
    pairs = state_pairs(slots)
    state = zero_state(slots, x.shape[0])
    names = probe.output_names + [out for _, out in pairs]
    name = probe.input.name

    def step() -> None:
        values = sess.run(names, {name: x, **state})
        for (inp, _), v in zip(pairs, values[len(probe.output_names):]):
            state[inp] = v

    return timed(step, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a --streaming ONNX file (default: export motion_lstm)")
    ap.add_argument("--steps", type=int, default=3000, help="timed steps per row (batch 1)")
    ap.add_argument("--ticks", type=int, default=300, help="timed ticks per many-streams row")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            from edgeseq.export.stateful import export_with_extras

            path = Path(tmp) / "motion-stream.onnx"
            export_with_extras("models/motion_lstm.py:build", path, streaming=True)
        run(path, args)


def run(path: Path, args: argparse.Namespace) -> None:
    stream = StreamingSession(path, device="cpu", threads=args.threads)
    features = [d for a, d in enumerate(stream.input.shape) if a not in (stream.batch_axis, stream.seq_axis)]
    rng = np.random.default_rng(0)
    one = rng.standard_normal([1, 1, *features]).astype(stream.input.dtype)
    rows = [("batch 1, `InferenceSession.run` + numpy state", 1, baseline(path, one, args.threads, args.steps)),
            ("batch 1, `StreamingSession.step`", 1, timed(lambda: stream.step(one), args.steps))]
    n = args.streams
    pool = StreamPool(path, device="cpu", threads=args.threads)
    keys = [pool.join() for _ in range(n)]
    xs = rng.standard_normal([n, 1, *features]).astype(stream.input.dtype)
    rows.append((f"{n} streams, `StreamPool.step_all` (one run per tick)", n, timed(lambda: pool.step_all(xs), args.ticks, 10)))
    per_key = {k: xs[i, 0] for i, k in enumerate(keys)}
    rows.append((f"{n} streams, `StreamPool.step` dict in/out", n, timed(lambda: pool.step(per_key), args.ticks, 10)))
    # baseline: one InferenceSession.run per stream per tick, each stream's state kept as numpy arrays
    slots, name = stream._slots, stream.input.name
    pairs = state_pairs(slots)
    states = [zero_state(slots, 1) for _ in range(n)]
    names = stream.output_names + [out for _, out in pairs]
    chunks = [np.ascontiguousarray(xs[i : i + 1]) for i in range(n)]

    def one_run_per_stream() -> None:
        for i in range(n):
            values = stream._ort.run(names, {name: chunks[i], **states[i]})
            states[i] = {inp: v for (inp, _), v in zip(pairs, values[len(stream.output_names):])}

    rows.append((f"{n} streams, one `run` per stream (baseline)", n, timed(one_run_per_stream, max(5, args.ticks // 20), 2)))
    half = dict(list(per_key.items())[: n // 2])
    rows.append((f"{n // 2} of {n} streams, `StreamPool.step` (gather/scatter)", n // 2,
                 timed(lambda: pool.step(half), args.ticks, 10)))
    print(f"model: {path.name}; CPU, {args.threads} thread(s); one step per call\n")
    print("| case | median µs / call | p99 µs / call | µs per stream-step (median) |")
    print("| --- | ---: | ---: | ---: |")
    for label, streams, t in rows:
        med, p99 = np.median(t), np.percentile(t, 99)
        print(f"| {label} | {med:.0f} | {p99:.0f} | {med / streams:.2f} |")


if __name__ == "__main__":
    main()
