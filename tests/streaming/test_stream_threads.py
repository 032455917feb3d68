"""Thread model: one StreamingSession per thread is enforced; StreamPool serializes its callers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeseq.errors import InputError
from edgeseq.runtime import StreamingSession, StreamPool


@pytest.fixture(scope="module")
def streaming_file(extras):
    from models.families import stacked_lstm

    return extras("stacked_lstm", stacked_lstm, streaming=True)[0]


def test_concurrent_use_of_one_streaming_session_raises(streaming_file):
    s = StreamingSession(streaming_file, device="cpu")
    x = np.zeros((1, 1, s.input.shape[-1]), np.float32)
    s.step(x)
    s._busy.acquire()  # another thread is inside step()
    try:
        with pytest.raises(InputError, match="already in use by another thread"):
            s.step(x)
    finally:
        s._busy.release()
    s.step(x)  # free again


def test_pool_joins_and_steps_from_many_threads(streaming_file):
    pool = StreamPool(streaming_file, device="cpu")
    features = int(pool.input_shape[-1])
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            key = pool.join(f"w{seed}")
            rng = np.random.default_rng(seed)
            for _ in range(20):
                pool.step({key: rng.standard_normal(features).astype(np.float32)})
            pool.leave(key)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
