"""StreamPool: many streams in one batched run per tick, joining and leaving, with no cross-talk."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq import StreamingSession
from edgeseq.errors import InputError
from edgeseq.runtime.pool import StreamPool
from models.families import FAMILIES


@pytest.fixture(scope="module")
def gru_stream(extras):
    return extras("gru", FAMILIES["gru"], streaming=True)[0]


def solo(path, steps: np.ndarray) -> list[np.ndarray]:
    """Outputs of one stream run alone, step by step, in its own session."""
    s = StreamingSession(path, device="cpu")
    return [s.step(step[None, None])[0] for step in steps]


def test_streams_joining_leaving_and_resetting_match_solo_runs(gru_stream):
    rng = np.random.default_rng(0)
    data = {k: rng.standard_normal((30, 12)).astype(np.float32) for k in "abcde"}
    pool = StreamPool(gru_stream, device="cpu")
    seen: dict[str, list[np.ndarray]] = {k: [] for k in data}
    pos = dict.fromkeys(data, 0)
    schedule = {0: ["a", "b"], 3: ["c"], 7: ["d"], 12: ["e"]}  # tick -> streams joining
    leaving = {9: "b"}
    resets = {15: "a"}
    for tick in range(24):
        for k in schedule.get(tick, []):
            pool.join(k)
        if tick in leaving:
            pool.leave(leaving[tick])
        if tick in resets:
            pool.reset(resets[tick])
            cut = len(seen["a"])  # where a's second sequence starts
        # every third tick 'c' sends nothing: a tick with a subset of the streams
        batch = {k: data[k][pos[k]] for k in pool.keys if not (k == "c" and tick % 3 == 0)}
        for k, y in pool.step(batch).items():
            seen[k].append(y)
            pos[k] += 1
    for k in "bcde":
        np.testing.assert_allclose(np.stack(seen[k]), np.stack(solo(gru_stream, data[k][: pos[k]])), atol=1e-6)
    first, second = seen["a"][:cut], seen["a"][cut:]
    np.testing.assert_allclose(np.stack(first), np.stack(solo(gru_stream, data["a"][:cut])), atol=1e-6)
    np.testing.assert_allclose(np.stack(second), np.stack(solo(gru_stream, data["a"][cut : pos["a"]])), atol=1e-6)
    assert "b" not in pool and len(pool) == 4


def test_a_stream_output_does_not_depend_on_its_neighbours(gru_stream):
    """1000 streams in one run; changing every other stream's input leaves stream 0's output bit-identical."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1000, 4, 12)).astype(np.float32)
    outs = []
    for noise in (0.0, 5.0):
        pool = StreamPool(gru_stream, device="cpu")
        for _ in range(1000):
            pool.join()
        y = x.copy()
        y[1:] += noise
        outs.append([pool.step_all(y[:, t : t + 1]) for t in range(4)][-1])
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    assert np.abs(outs[0][1:] - outs[1][1:]).max() > 1e-3


def test_step_all_matches_dict_step_and_order_is_keys(gru_stream):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 1, 12)).astype(np.float32)
    pool_a, pool_b = StreamPool(gru_stream, device="cpu"), StreamPool(gru_stream, device="cpu")
    for k in ("x", "y", "z"):
        pool_a.join(k)
        pool_b.join(k)
    ya = pool_a.step_all(x)
    yb = pool_b.step({"z": x[2, 0], "x": x[0, 0], "y": x[1, 0]})  # any order in, matched by key
    np.testing.assert_array_equal(np.stack([yb[k] for k in pool_b.keys]), ya)


def test_pool_errors(gru_stream):
    pool = StreamPool(gru_stream, device="cpu")
    a = pool.join()
    with pytest.raises(InputError, match="already joined"):
        pool.join(a)
    with pytest.raises(InputError, match="have not joined"):
        pool.step({"ghost": np.zeros(12)})
    b = pool.join()
    pool.join("c")
    with pytest.raises(InputError, match=r"stream 'c' sent a chunk of shape \(3, 12\), the others \(2, 12\).*takes "
                                         r"\(steps, 12\) per stream"):
        pool.step({a: np.zeros((2, 12)), b: np.zeros((2, 12)), "c": np.zeros((3, 12))})
    bad = np.zeros(12, np.float32)
    bad[4] = np.nan
    before = pool.stream.state
    with pytest.raises(InputError, match=r"^stream 'c': input 'x' has NaN/Inf"):  # which of the streams, by key
        pool.step({a: np.zeros(12), "c": bad})
    np.testing.assert_array_equal(pool.stream.state["gru.h"], before["gru.h"])  # the tick was refused whole
    pool.leave("c")
    with pytest.raises(InputError, match="one row per stream"):
        pool.step_all(np.zeros((5, 1, 12), np.float32))
    pool.leave(a)
    pool.leave(b)
    with pytest.raises(InputError, match="no streams"):
        pool.step_all(np.zeros((0, 1, 12), np.float32))


def test_a_channels_first_stream_takes_one_step_of_its_channels(extras):
    import torch
    from torch import nn

    class ChannelsFirst(nn.Module):  # x: (batch, 4, seq), transposed for the LSTM
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 8, batch_first=True)

        def forward(self, x):
            return self.lstm(x.transpose(1, 2))[0][:, -1]

    torch.manual_seed(0)
    path = extras("channels_first", ChannelsFirst, streaming=True)[0]
    x = np.random.default_rng(0).standard_normal((2, 4, 6)).astype(np.float32)
    pool = StreamPool(path, device="cpu")
    a, b = pool.join(), pool.join()
    for t in range(6):
        ys = pool.step({a: x[0, :, t], b: x[1, :, t]})  # one step: (channels,)
    np.testing.assert_allclose(np.stack([ys[a], ys[b]]), StreamingSession(path, device="cpu").step(x), atol=1e-6)


def test_a_stream_saved_from_one_pool_resumes_in_another(gru_stream):
    """get_state/set_state move one stream between pools (or processes) mid-sequence without changing its outputs."""
    rng = np.random.default_rng(5)
    data = {k: rng.standard_normal((12, 12)).astype(np.float32) for k in "abc"}
    first = StreamPool(gru_stream, device="cpu")
    for k in "abc":
        first.join(k)
    out = {k: [] for k in data}
    for t in range(7):
        for k, y in first.step({k: data[k][t] for k in data}).items():
            out[k].append(y)
    saved = first.get_state("b")
    assert all(a.shape[1] == 1 for a in saved.values())
    second = StreamPool(gru_stream, device="cpu")
    second.join("other")
    second.join("b")
    second.set_state("b", saved)
    assert {k: a.tolist() for k, a in second.get_state("b").items()} == {k: a.tolist() for k, a in saved.items()}
    for t in range(7, 12):
        out["b"].append(second.step({"b": data["b"][t], "other": data["a"][t]})["b"])
    np.testing.assert_allclose(np.stack(out["b"]), np.stack(solo(gru_stream, data["b"])), atol=1e-6)
    # and into a StreamingSession, whose state has the same layout with a batch of 1
    s = StreamingSession(gru_stream, device="cpu")
    s.state = first.get_state("c")
    tail = [s.step(step[None, None])[0] for step in data["c"][7:]]
    np.testing.assert_allclose(np.stack(out["c"] + tail), np.stack(solo(gru_stream, data["c"])), atol=1e-6)


def test_get_state_of_a_new_or_reset_stream_is_the_start_state(gru_stream):
    pool = StreamPool(gru_stream, device="cpu")
    a = pool.join()
    assert all(not v.any() for v in pool.get_state(a).values())
    pool.step({a: np.ones(12, np.float32)})
    assert any(v.any() for v in pool.get_state(a).values())
    pool.reset(a)
    assert all(not v.any() for v in pool.get_state(a).values())


def test_set_state_errors_name_the_stream_and_the_shape(gru_stream):
    pool = StreamPool(gru_stream, device="cpu")
    a, b = pool.join(), pool.join()
    pool.step_all(np.ones((2, 1, 12), np.float32))
    whole = pool.stream.state  # both streams: a batch of 2
    with pytest.raises(InputError, match=r"stream 0: state .* must have shape .*get_state\(\) returns it"):
        pool.set_state(a, whole)
    with pytest.raises(InputError, match="exactly the keys"):
        pool.set_state(a, {})
    bad = {k: np.full_like(v, np.nan) for k, v in pool.get_state(b).items()}
    with pytest.raises(InputError, match="NaN"):
        pool.set_state(b, bad)
    with pytest.raises(InputError, match="not in the pool"):
        pool.get_state("nobody")
    pool.set_state(a, pool.get_state(b))
    pool.leave(a)  # a pending state is dropped with its stream
    assert pool.keys == [b]


def test_step_all_with_the_keys_it_was_laid_out_by_refuses_a_changed_pool(gru_stream):
    pool = StreamPool(gru_stream, device="cpu")
    pool.join("a")
    pool.join("b")
    keys = pool.keys
    pool.leave("a")  # another thread, between reading keys and the tick
    pool.join("c")
    with pytest.raises(InputError, match="the pool's streams changed since these keys were read"):
        pool.step_all(np.ones((2, 1, 12), np.float32), keys=keys)
    assert pool.step_all(np.ones((2, 1, 12), np.float32), keys=pool.keys).shape[0] == 2


def test_an_unhashable_stream_key_is_said(gru_stream):
    with pytest.raises(InputError, match="a stream key must be hashable"):
        StreamPool(gru_stream, device="cpu").join(["a"])


def test_every_pool_call_says_an_unhashable_key_in_one_line(gru_stream):
    pool = StreamPool(gru_stream, device="cpu")
    for call in (pool.leave, pool.reset, pool.get_state, lambda k: pool.set_state(k, {})):
        with pytest.raises(InputError, match="a stream key must be hashable"):
            call([1])
