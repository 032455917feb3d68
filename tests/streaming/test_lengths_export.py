"""`export --lengths`: a padded batch with lengths == each sample alone, unpadded (LSTM, GRU, bi, stacked)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeseq import Session
from edgeseq.card import read_card
from edgeseq.errors import UnsupportedModelError
from edgeseq.export.stateful import export_with_extras
from edgeseq.runtime.infer import infer_file
from models.families import FAMILIES

TOL = dict(atol=1e-5, rtol=1e-5)


def alone(model, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """PyTorch on each sample by itself, cut to its length (no padding at all)."""
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i : i + 1, :n])).numpy() for i, n in enumerate(lengths)])


def padded_batch(features: int, lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random sequences padded with large random values (not zeros), so a leak cannot hide."""
    rng = np.random.default_rng(seed)
    lengths_ = np.array(lengths, np.int64)
    x = rng.standard_normal((len(lengths), max(lengths), features)).astype(np.float32)
    for i, n in enumerate(lengths_):
        x[i, n:] = rng.uniform(-50, 50, x[i, n:].shape)
    return x, lengths_


@pytest.mark.parametrize("family", ["stacked_lstm", "gru", "bilstm", "bigru"])
def test_padded_batch_equals_each_sample_alone(extras, family):
    path, model = extras(family, FAMILIES[family], lengths=True)
    features = model.features
    x, lengths = padded_batch(features, [19, 1, 7, 19, 12])
    s = Session(path, device="cpu")
    assert s.lengths_input == "lengths"
    got = s.predict(x, lengths=lengths, batch_size=2)
    np.testing.assert_allclose(got, alone(model, x, lengths), **TOL)
    np.testing.assert_allclose(s.predict(x, lengths=lengths), got, **TOL)  # one run instead of three chunks
    # without lengths the padding is read: the same batch gives different answers (the test can fail)
    assert np.abs(s.predict(x) - got).max() > 1e-3


def test_lstm_gru_nodes_get_sequence_lens_and_held_outputs(extras):
    path, _ = extras("bilstm", FAMILIES["bilstm"], lengths=True)
    proto = onnx.load(str(path))
    rnn = [n for n in proto.graph.node if n.op_type == "LSTM"]
    assert len(rnn) == 2 and all(n.input[4] == "edgeseq_lengths/lens_int32" for n in rnn)
    assert sum(n.op_type == "GatherElements" for n in proto.graph.node) == 2
    (lengths,) = [i for i in proto.graph.input if i.name == "lengths"]
    assert lengths.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert read_card(path)["lengths_input"] == "lengths"


def test_vowels_bigru_on_its_real_variable_length_data(extras):
    from models.vowels_bigru import build

    path, model = extras("vowels_bigru", build, lengths=True)
    data = np.load("models/data/vowels_bigru-test.npz")
    x, lengths = data["x"], data["lengths"]
    assert lengths.min() < lengths.max() == x.shape[1]
    got = Session(path, device="cpu").predict(x, lengths=lengths)
    np.testing.assert_allclose(got, alone(model, x, lengths), **TOL)
    with torch.inference_mode():  # and the model's own pack_padded_sequence path agrees
        packed = model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    np.testing.assert_allclose(got, packed, **TOL)
    assert (got.argmax(1) == data["y"]).mean() > 0.9


class PerStep(nn.Module):
    """Outside the repo: a bidirectional GRU whose per-step outputs are all returned."""

    def __init__(self) -> None:
        super().__init__()
        self.features = 4
        self.gru = nn.GRU(4, 6, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


def test_per_step_outputs_match_on_the_valid_steps(tmp_path):
    torch.manual_seed(0)
    model = PerStep().eval()
    path = tmp_path / "perstep.onnx"
    export_with_extras(model, path, input_shape=[2, 8, 4], lengths=True)
    x, lengths = padded_batch(4, [9, 3, 6], seed=1)
    got = Session(path, device="cpu").run({"x": x, "lengths": lengths})["y"]
    with torch.inference_mode():
        for i, n in enumerate(lengths):
            ref = model(torch.from_numpy(x[i : i + 1, :n])).numpy()[0]
            np.testing.assert_allclose(got[i, :n], ref, **TOL)
            np.testing.assert_allclose(got[i, n:], np.broadcast_to(ref[-1], got[i, n:].shape), **TOL)  # held


def test_infer_jsonl_of_different_lengths_uses_the_lengths_input(extras, tmp_path):
    path, model = extras("gru", FAMILIES["gru"], lengths=True)
    rng = np.random.default_rng(3)
    seqs = [rng.standard_normal((n, 12)).astype(np.float32) for n in (5, 11, 2)]
    src = tmp_path / "x.jsonl"
    src.write_text("\n".join(json.dumps(s.tolist()) for s in seqs) + "\n")
    result = infer_file(path, src, device="cpu")
    with torch.inference_mode():
        want = np.concatenate([model(torch.from_numpy(s[None])).numpy() for s in seqs])
    np.testing.assert_allclose(result.outputs, want, **TOL)


class ShiftsThenConvolves(nn.Module):
    """A Linear with a bias before a centred Conv1d: zero padding becomes the bias, which the conv reads."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.conv = nn.Conv1d(4, 8, 3, padding=1)
        self.lstm = nn.LSTM(8, 8, batch_first=True)

    def forward(self, x):
        h = self.conv(self.proj(x).transpose(1, 2)).transpose(1, 2)
        return self.lstm(h)[0][:, -1]


def test_model_that_reads_the_padding_elsewhere_is_refused(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(UnsupportedModelError, match=r"refused --lengths: padded steps still change output 'y'.*'conv' \(Conv1d\)"):
        export_with_extras(ShiftsThenConvolves().eval(), tmp_path / "x.onnx", input_shape=[2, 8, 4], lengths=True)
    assert not (tmp_path / "x.onnx").exists()


def test_a_centred_conv_over_zero_padding_sees_what_it_sees_alone(extras):
    """Its own zero padding at the end of a sample equals the batch's: --lengths is exact (it was refused when
    the check filled the padding with random values, which no caller feeds: lengths mark zero-padded steps)."""
    path, model = extras("conv1d_lstm", FAMILIES["conv1d_lstm"], lengths=True)
    rng = np.random.default_rng(5)
    seqs = [rng.standard_normal((n, 6)).astype(np.float32) for n in (9, 3, 6)]
    got = Session(path, device="cpu").predict(seqs)
    with torch.inference_mode():
        want = np.concatenate([model(torch.from_numpy(s[None])).numpy() for s in seqs])
    np.testing.assert_allclose(got, want, **TOL)


def test_streaming_and_lengths_together(extras):
    """Both extras: state carried, and per-sample step counts inside a chunk."""
    from edgeseq import StreamingSession

    path, model = extras("stacked_lstm", FAMILIES["stacked_lstm"], streaming=True, lengths=True)
    x, lengths = padded_batch(28, [6, 3], seed=4)
    s = StreamingSession(path, device="cpu")
    first = s.step(x[:, :6], lengths=lengths)  # sample 1 advances 3 steps only
    np.testing.assert_allclose(first, alone(model, x, lengths), **TOL)
    nxt = np.random.default_rng(5).standard_normal((2, 2, 28)).astype(np.float32)
    cont = s.step(nxt)
    for i, n in enumerate(lengths):
        whole = np.concatenate([x[i : i + 1, :n], nxt[i : i + 1]], axis=1)
        with torch.inference_mode():
            np.testing.assert_allclose(cont[i : i + 1], model(torch.from_numpy(whole)).numpy(), **TOL)


@pytest.mark.slow
def test_dynamo_exports_take_lengths_too(tmp_path):
    from models.vowels_bigru import build

    path = tmp_path / "v.onnx"
    export_with_extras(build(), path, lengths=True, exporter="dynamo")
    data = np.load("models/data/vowels_bigru-test.npz")
    x, lengths = data["x"][:40], data["lengths"][:40]
    np.testing.assert_allclose(Session(path, device="cpu").predict(x, lengths=lengths), alone(build(), x, lengths), **TOL)


class _PooledBeforeGru(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = torch.nn.MaxPool1d(2)
        self.gru = torch.nn.GRU(8, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.gru(self.pool(x.transpose(1, 2)).transpose(1, 2))[0][:, -1])


def test_lengths_on_a_model_that_pools_time_before_its_rnn_is_refused_by_name(tmp_path):
    out = tmp_path / "l.onnx"
    with pytest.raises(UnsupportedModelError, match=r"refused --lengths: the recurrent layer gets fewer steps than the "
                                                     r"input has \('pool' \(MaxPool1d\) change the time resolution\)"):
        export_with_extras(_PooledBeforeGru().eval(), out, input_shape=(2, 16, 8), lengths=True)
    assert not out.exists()


class _PooledAfterGru(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.GRU(4, 16, batch_first=True)
        self.pool = torch.nn.MaxPool1d(2)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.pool(self.rnn(x)[0].transpose(1, 2)).transpose(1, 2))


def test_lengths_on_an_output_pooled_over_time_is_refused_by_name(tmp_path):
    out = tmp_path / "l.onnx"
    with pytest.raises(UnsupportedModelError, match=r"refused --lengths: output 'y' has \d+ steps for \d+ input steps"):
        export_with_extras(_PooledAfterGru().eval(), out, input_shape=(2, 16, 4), lengths=True)
    assert not out.exists()
