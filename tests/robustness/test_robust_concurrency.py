"""Concurrency: one Session shared by 8 threads; streaming sessions keep their streams apart."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgeseq import Session

THREADS = 8


def _inputs(features: int, count: int = 24) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    # different batch sizes and lengths, so concurrent runs have different shapes
    return [rng.standard_normal((1 + i % 5, 3 + (i * 7) % 40, features)).astype(np.float32) for i in range(count)]


def test_one_session_eight_threads_equals_serial(exported):
    session = Session(exported("stacked_lstm"), device="cpu", threads=1)
    xs = _inputs(28)
    serial = [session.predict(x, batch_size=2) for x in xs]
    start = threading.Barrier(THREADS)

    def worker(k: int) -> list[tuple[int, np.ndarray]]:
        start.wait()  # all threads enter predict together
        order = list(range(len(xs)))[k::1] + list(range(len(xs)))[:k]  # each thread its own order
        return [(i, session.predict(xs[i], batch_size=2)) for i in order for _ in range(2)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS)))
    assert sum(len(r) for r in results) == THREADS * len(xs) * 2
    for per_thread in results:
        for i, y in per_thread:
            np.testing.assert_array_equal(y, serial[i])


def test_errors_in_one_thread_do_not_disturb_others(exported):
    from edgeseq.errors import InputError

    session = Session(exported("gru"), device="cpu", threads=1)
    good = np.random.default_rng(0).standard_normal((3, 9, 12)).astype(np.float32)
    bad = good.copy()
    bad[1, 4, 0] = np.nan
    want = session.predict(good)

    def worker(k: int) -> str:
        if k % 2:
            with pytest.raises(InputError, match="sample 1, step 4"):
                session.predict(bad)
            return "refused"
        np.testing.assert_array_equal(session.predict(good), want)
        return "ok"

    with ThreadPoolExecutor(THREADS) as pool:
        assert sorted(pool.map(worker, range(2 * THREADS))) == ["ok"] * THREADS + ["refused"] * THREADS


@pytest.fixture(scope="module")
def streaming_file(tmp_path_factory):
    from edgeseq.export.stateful import export_with_extras

    out = tmp_path_factory.mktemp("stream") / "gru-stream.onnx"
    export_with_extras("models/families.py:gru", out, streaming=True, exporter="torchscript")
    return out


def test_streaming_sessions_in_threads_stay_isolated(streaming_file):
    """Each thread steps its own StreamingSession (the documented thread model); results match serial runs."""
    from edgeseq import StreamingSession

    rng = np.random.default_rng(3)
    streams = [rng.standard_normal((1, 12, 12)).astype(np.float32) for _ in range(THREADS)]

    def run(x: np.ndarray) -> np.ndarray:
        s = StreamingSession(streaming_file, device="cpu", threads=1)
        return np.stack([s.step(x[:, t : t + 1]) for t in range(x.shape[1])])

    serial = [run(x) for x in streams]
    with ThreadPoolExecutor(THREADS) as pool:
        parallel = list(pool.map(run, streams))
    for a, b in zip(parallel, serial):
        np.testing.assert_array_equal(a, b)
    whole = Session(streaming_file, device="cpu").predict(streams[0])
    np.testing.assert_allclose(serial[0][-1], whole, atol=1e-5)  # stepping == the whole sequence at once


def test_stream_pool_keeps_streams_apart(streaming_file):
    """Streams that join, step and leave a pool get the same outputs as if each ran alone."""
    from edgeseq import StreamingSession
    from edgeseq.runtime.pool import StreamPool

    rng = np.random.default_rng(5)
    xs = {k: rng.standard_normal((10, 12)).astype(np.float32) for k in "abc"}
    alone = {}
    for k, x in xs.items():
        s = StreamingSession(streaming_file, device="cpu")
        alone[k] = [s.step(x[None, t : t + 1])[0] for t in range(10)]
    pool = StreamPool(streaming_file, device="cpu")
    keys = {k: pool.join(k) for k in "ab"}
    got: dict[str, list[np.ndarray]] = {k: [] for k in "abc"}
    for t in range(10):
        if t == 3:  # c joins late; its own step 0 is the pool's tick 3
            keys["c"] = pool.join("c")
        step = {keys[k]: xs[k][t - (3 if k == "c" else 0)][None] for k in keys}
        for key, y in pool.step(step).items():
            got[key].append(y)
    for k in "ab":
        np.testing.assert_allclose(np.stack(got[k]), np.stack(alone[k]), atol=1e-6)
    np.testing.assert_allclose(np.stack(got["c"]), np.stack(alone["c"][:7]), atol=1e-6)
