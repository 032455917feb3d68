"""Streaming exports: state as graph inputs/outputs, stepping == PyTorch on the whole sequence, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeseq import StreamingSession
from edgeseq.card import read_card
from edgeseq.errors import InputError, UnsupportedModelError
from edgeseq.export.stateful import export_with_extras
from models.families import FAMILIES

TOL = dict(atol=1e-5, rtol=1e-5)


def first_output(model, x):
    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(x)))
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


class StepEncoder(nn.Module):
    """Outside the repo: Linear -> LSTM (given zero h0/c0, tutorial style) -> 2-layer GRU, per-step outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.gru = nn.GRU(16, 12, num_layers=2, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros(1, x.shape[0], 16)
        z, _ = self.lstm(torch.tanh(self.inp(x)), (zeros, zeros))
        z, _ = self.gru(z)
        return self.head(z)  # (batch, seq, 3): one output per step

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, 9, 5),)


def step_encoder() -> nn.Module:
    torch.manual_seed(0)
    return StepEncoder().eval()


def motion():
    from models.motion_lstm import build

    return build()


@pytest.fixture(scope="module")
def motion_stream(extras):
    return extras("motion_lstm", motion, streaming=True)


def test_card_names_every_state(motion_stream):
    path, _ = motion_stream
    card = read_card(path)
    # a stacked layer's state enters and leaves the graph one layer at a time (no Slice/Concat per step)
    assert card["state_inputs"] == ["lstm.h_in.0", "lstm.h_in.1", "lstm.c_in.0", "lstm.c_in.1"]
    assert card["state_outputs"] == ["lstm.h_out.0", "lstm.h_out.1", "lstm.c_out.0", "lstm.c_out.1"]
    (layer,) = card["streaming"]["layers"]
    assert (layer["name"], layer["kind"], layer["num_layers"], layer["hidden_size"]) == ("lstm", "lstm", 2, 64)
    assert [(s["name"], s["shape"]) for s in layer["states"]] == [("h", [2, "batch", 64]), ("c", [2, "batch", 64])]
    assert layer["states"][0]["parts"] == [{"input": "lstm.h_in.0", "output": "lstm.h_out.0"},
                                           {"input": "lstm.h_in.1", "output": "lstm.h_out.1"}]
    assert card["output_axes"] == {"y": {"batch_axis": 0, "seq_axis": None}}
    assert "per-layer state" in card["graph_cleanup"]["by"]
    before, after = card["graph_cleanup"]["nodes"]
    assert after < before
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "LSTM" in ops and not ops & {"Slice", "Concat", "Split"}
    s = StreamingSession(path, device="cpu")
    assert [i.name for i in s.session.inputs] == ["x", *card["state_inputs"]]
    assert s.output_names == ["y"] and s.state_names == ["lstm.h", "lstm.c"]
    s.step(np.zeros((3, 2, 6), np.float32))
    assert s.state["lstm.h"].shape == (2, 3, 64)


def test_files_with_one_state_tensor_per_layer_stack_still_stream(tmp_path, motion_stream, monkeypatch):
    """Files written before the per-layer split carry [layers, batch, hidden] through Slice/Concat."""
    from edgeseq.export import stateful

    path, model = motion_stream
    monkeypatch.setattr(stateful, "split_layer_states", lambda proto, states: {})
    packed = tmp_path / "packed.onnx"
    export_with_extras(model, packed, streaming=True)
    assert read_card(packed)["state_inputs"] == ["lstm.h_in", "lstm.c_in"]
    x = np.random.default_rng(3).standard_normal((2, 7, 6)).astype(np.float32)
    a, b = StreamingSession(path, device="cpu"), StreamingSession(packed, device="cpu")
    for t in range(0, 7, 3):
        np.testing.assert_allclose(a.step(x[:, t : t + 3]), b.step(x[:, t : t + 3]), **TOL)
    for key in a.state_names:
        np.testing.assert_allclose(a.state[key], b.state[key], **TOL)
    outs_a, state_a = a.run_with_state(x, a.state)
    outs_b, state_b = b.run_with_state(x, b.state)
    np.testing.assert_allclose(outs_a["y"], outs_b["y"], **TOL)
    np.testing.assert_allclose(state_a["lstm.c"], state_b["lstm.c"], **TOL)


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_motion_lstm_stepping_matches_pytorch_on_real_data(motion_stream, chunk):
    """After every chunk, the output equals PyTorch on the whole sequence up to that step (real recordings)."""
    path, model = motion_stream
    data = np.load("models/data/motion_lstm-test.npz")
    x = data["x"][::10]  # 4 recordings x 100 steps x 6 channels
    s = StreamingSession(path, device="cpu")
    for start in range(0, x.shape[1], chunk):
        end = min(start + chunk, x.shape[1])
        y = s.step(x[:, start:end])
        if end % 9 == 0 or end == x.shape[1]:
            np.testing.assert_allclose(y, first_output(model, x[:, :end]), **TOL)
    assert s.step(np.zeros_like(x[:, :1])).shape == (4, 4)


@pytest.mark.parametrize("chunk", [1, 3, 23])
def test_per_step_outputs_of_a_model_outside_the_repo(extras, chunk):
    """LSTM -> stacked GRU with per-step outputs: concatenated chunk outputs == PyTorch on the whole sequence."""
    path, model = extras("step_encoder", step_encoder, streaming=True)
    assert read_card(path)["output_axes"]["y"] == {"batch_axis": 0, "seq_axis": 1}
    x = np.random.default_rng(5).standard_normal((3, 23, 5)).astype(np.float32)
    s = StreamingSession(path, device="cpu")
    got = np.concatenate([s.step(x[:, i : i + chunk]) for i in range(0, 23, chunk)], axis=1)
    np.testing.assert_allclose(got, first_output(model, x), **TOL)
    assert [layer["kind"] for layer in read_card(path)["streaming"]["layers"]] == ["lstm", "gru"]


def test_state_can_be_read_restored_and_reset(extras):
    path, model = extras("gru", FAMILIES["gru"], streaming=True)
    x = np.random.default_rng(1).standard_normal((2, 12, 12)).astype(np.float32)
    s = StreamingSession(path, device="cpu")
    assert s.state == {} and s.batch_size is None
    s.step(x[:, :5])
    saved = s.state
    assert saved["gru.h"].shape == (1, 2, 48)
    after = s.step(x[:, 5:])
    s.reset()
    s.state = saved
    np.testing.assert_array_equal(s.step(x[:, 5:]), after)
    np.testing.assert_allclose(after, first_output(model, x), **TOL)
    with pytest.raises(InputError, match="batch 3 but the carried state has batch 2; call reset"):
        s.step(np.zeros((3, 1, 12), np.float32))
    s.reset()  # a new batch size after reset
    np.testing.assert_allclose(s.step(x[:1]), first_output(model, x[:1]), **TOL)
    with pytest.raises(InputError, match="state needs exactly the keys gru.h"):
        s.state = {"nope": saved["gru.h"]}
    with pytest.raises(InputError, match="NaN/Inf"):
        s.step(np.full((1, 1, 12), np.nan, np.float32))
    fresh = StreamingSession(path, device="cpu").state  # {} before the first step: assigning it starts over
    s.step(x[:1, :3])
    s.state = fresh
    assert s.batch_size is None
    np.testing.assert_allclose(s.step(x[:1]), first_output(model, x[:1]), **TOL)
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(s)


def test_time_first_model_streams(tmp_path):
    class TimeFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 8)  # (seq, batch, features)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lstm(x)[0]

    torch.manual_seed(0)
    model = TimeFirst().eval()
    path = tmp_path / "tf.onnx"
    export_with_extras(model, path, input_shape=[6, 2, 4], time_first=True, streaming=True)
    x = np.random.default_rng(2).standard_normal((10, 3, 4)).astype(np.float32)
    s = StreamingSession(path, device="cpu")
    got = np.concatenate([s.step(x[i : i + 3]) for i in range(0, 10, 3)], axis=0)
    np.testing.assert_allclose(got, first_output(model, x), **TOL)


def test_bidirectional_layers_are_refused_by_name(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"layer 'rnn' is a bidirectional nn.LSTM.*cannot run step by step"):
        export_with_extras(FAMILIES["bilstm"](), tmp_path / "x.onnx", streaming=True)
    assert not (tmp_path / "x.onnx").exists()


def test_conv_front_end_that_reads_neighbouring_steps_is_refused(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"chunks of \d+ changes output 'y'.*'conv' \(Conv1d\)"):
        export_with_extras(FAMILIES["conv1d_lstm"](), tmp_path / "x.onnx", streaming=True)
    assert not (tmp_path / "x.onnx").exists()


def test_cnn_lstm_over_subsequences_streams(extras):
    """A CNN applied inside each time step (TimeDistributed) does not mix steps, so it streams exactly."""
    path, model = extras("cnn_lstm", FAMILIES["cnn_lstm"], streaming=True)
    x = np.random.default_rng(3).standard_normal((2, 7, 4, 1)).astype(np.float32)
    s = StreamingSession(path, device="cpu")
    for t in range(7):
        y = s.step(x[:, t : t + 1])
    np.testing.assert_allclose(y, first_output(model, x), **TOL)


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(self.lstm(torch.cat([x, x, x], -1)[..., :3])[0][..., :3])[0]


class _StartFromInput(nn.Module):
    """An initial state computed from the first step: no single state a stream could start from."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)
        self.init = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x, torch.tanh(self.init(x[:, 0])).unsqueeze(0))[0]


@pytest.mark.parametrize("model, match", [
    (_Twice(), r"layer 'lstm' runs 2 times in one forward"),
    (_StartFromInput(), r"passes layer 'gru' an initial state that depends on the input"),
    (nn.Sequential(nn.Linear(3, 3)), r"no nn.LSTM/nn.GRU/nn.RNN layer"),
])
def test_unstreamable_patterns_are_refused(tmp_path, model, match):
    with pytest.raises(UnsupportedModelError, match=match):
        export_with_extras(model.eval(), tmp_path / "x.onnx", input_shape=[2, 5, 3], streaming=True)


def test_not_a_streaming_file_is_a_clear_error(extras):
    from edgeseq.errors import ModelFileError

    path, _ = extras("gru", FAMILIES["gru"], lengths=True)
    with pytest.raises(ModelFileError, match="not a streaming export.*--streaming"):
        StreamingSession(path, device="cpu")


class LatestWindow(nn.Module):
    """Reads only the latest 16 steps (x[:, -16:]): a stream, which carries every step, cannot match it."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 32, batch_first=True)
        self.fc = nn.Linear(32, 1)

    def forward(self, x):
        return self.fc(self.lstm(x[:, -16:])[0][:, -1])


def test_a_model_over_a_window_of_latest_steps_is_refused_even_when_untrained(tmp_path):
    # untrained weights forget step 0 within 16 steps to ~1e-5, under the chunked check's tolerance
    torch.manual_seed(0)
    out = tmp_path / "w.onnx"
    with pytest.raises(UnsupportedModelError, match="refused --streaming: changing step 0 .* a window of the latest"):
        export_with_extras(LatestWindow().eval(), out, streaming=True)
    assert not out.exists()


class CharModel(nn.Module):
    """A character language model: Embedding(20) + LSTM, a logit per step."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 20)

    def forward(self, x):
        return self.fc(self.lstm(self.emb(x))[0])


def test_streams_refuse_token_ids_outside_the_embedding(extras):
    from edgeseq.runtime.pool import StreamPool

    torch.manual_seed(0)
    path = extras("char", CharModel, streaming=True)[0]
    s = StreamingSession(path, device="cpu")
    s.step(np.array([[3]]))  # the plan for (1, 1) is cached: the fast path must check ids too
    for bad in (-1, 20):  # -1 would silently read the embedding's last row
        with pytest.raises(InputError, match=f"token id {bad}"):
            s.step(np.array([[bad]]))
    pool = StreamPool(path, device="cpu")
    k = pool.join("k")
    with pytest.raises(InputError, match="^stream 'k': .*token id -1"):
        pool.step({k: np.array([-1])})


def test_state_is_guarded_like_a_step(extras):
    path, _ = extras("gru", FAMILIES["gru"], streaming=True)
    s = StreamingSession(path, device="cpu")
    s.step(np.zeros((1, 2, 12), np.float32))
    saved = s.state
    s._busy.acquire()  # as if another thread were inside step(): reading now could copy half-written buffers
    try:
        with pytest.raises(InputError, match="already in use by another thread"):
            _ = s.state
    finally:
        s._busy.release()
    with pytest.raises(InputError, match="state 'gru.h' holds NaN/Inf"):
        s.state = {"gru.h": np.full_like(saved["gru.h"], np.nan)}
    with pytest.raises(InputError, match="state 'gru.h' must be numbers"):
        s.state = {"gru.h": "abc"}
    with pytest.raises(InputError, match="state needs exactly the keys gru.h; got none"):
        s.run_with_state(np.zeros((1, 2, 12), np.float32), {})


class _PooledFrames(torch.nn.Module):
    """Causal conv, then MaxPool1d(2) over time: a per-frame output at half the input's steps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(8, 16, 3)
        self.pool = torch.nn.MaxPool1d(2)
        self.gru = torch.nn.GRU(16, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        z = self.pool(torch.relu(self.conv(torch.nn.functional.pad(x.transpose(1, 2), (2, 0)))))
        return self.fc(self.gru(z.transpose(1, 2))[0])


class _Causal2d(torch.nn.Module):
    """A Conv2d over (time, bins), padded on the left in time only: causal, but 2-D."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.gru = torch.nn.GRU(4 * 6, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):  # (batch, time, 8 bins)
        z = torch.relu(self.conv(torch.nn.functional.pad(x.unsqueeze(1), (0, 0, 2, 0))))  # (b, 4, time, 6)
        b, c, t, f = z.shape
        return self.fc(self.gru(z.permute(0, 2, 1, 3).reshape(b, t, c * f))[0])


@pytest.mark.parametrize("model, words", [
    (_PooledFrames, "has 8 steps for 17 input steps"),
    (_Causal2d, "'conv' (Conv2d, 2-D over time: only a causal nn.Conv1d streams)"),
])
def test_time_resolution_changes_and_2d_convolutions_are_refused_by_name(tmp_path, model, words):
    torch.manual_seed(0)
    out = tmp_path / "s.onnx"
    with pytest.raises(UnsupportedModelError, match="refused --streaming") as info:
        export_with_extras(model().eval(), out, input_shape=(2, 16, 8), streaming=True)
    assert words in str(info.value) and not out.exists()
