"""Causal convolutions over time stream exactly: their left context is carried as state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeseq import StreamingSession
from edgeseq.card import read_card
from edgeseq.errors import UnsupportedModelError
from edgeseq.export.stateful import export_with_extras
from edgeseq.runtime.pool import StreamPool
from models.families import FAMILIES

TOL = dict(atol=1e-5, rtol=1e-5)
CHUNKS = (1, 2, 7, 1, 1, 13, 5)  # 30 steps in uneven chunks, several shorter than a context


class TemporalBlocks(nn.Module):
    """TCN style: Conv1d(padding=(k-1)*d) with the last (k-1)*d outputs dropped, residual, per-step output."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(6, 8, 3, padding=2)
        self.c2 = nn.Conv1d(8, 8, 3, padding=4, dilation=2)
        self.out = nn.Conv1d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.c1(x.transpose(1, 2))[..., :-2])
        z = torch.relu(self.c2(z)[..., :-4]) + z
        return self.out(z).transpose(1, 2)  # (batch, seq, 2)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, 10, 6),)


class Strided(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(6, 8, 3, stride=2)
        self.gru = nn.GRU(8, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(self.conv(F.pad(x.transpose(1, 2), (2, 0))).transpose(1, 2))[0][:, -1]

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, 10, 6),)


def _stream(path, x):
    s = StreamingSession(path, device="cpu")
    outs, t = [], 0
    for c in CHUNKS:
        outs.append(s.step(x[:, t : t + c]))
        t += c
    return s, outs


def _torch(model, x):
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_left_padded_dilated_conv_then_lstm_streams(exporter, tmp_path):
    model = FAMILIES["causal_conv_lstm"]()
    path = tmp_path / "causal.onnx"
    export_with_extras(model, path, streaming=True, exporter=exporter)
    x = np.random.default_rng(0).standard_normal((3, 30, 6)).astype(np.float32)
    s, outs = _stream(path, x)
    t = 0
    for c, y in zip(CHUNKS, outs):  # the head reads out[:, -1]: each chunk's answer is PyTorch on the prefix
        t += c
        np.testing.assert_allclose(y, _torch(model, x[:, :t]), **TOL)
    assert s.state["conv.x"].shape == (1, 3, 6 * 4)  # 6 channels x (3-1)*2 steps, in the states' layout
    layer = next(e for e in read_card(path)["streaming"]["layers"] if e["kind"] == "conv1d")
    assert (layer["name"], layer["context"], layer["mode"]) == ("conv", 4, "left-pad")


def test_tcn_with_dropped_outputs_streams_per_step(tmp_path):
    torch.manual_seed(0)
    model = TemporalBlocks().eval()
    path = tmp_path / "tcn.onnx"
    export_with_extras(model, path, streaming=True)
    x = np.random.default_rng(1).standard_normal((2, 30, 6)).astype(np.float32)
    _, outs = _stream(path, x)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), _torch(model, x), **TOL)
    modes = {e["name"]: e["mode"] for e in read_card(path)["streaming"]["layers"]}
    assert modes == {"c1": "chomp", "c2": "chomp"}  # the pointwise 'out' needs no context


def test_weight_normed_convolutions_stream_like_plain_ones(tmp_path):
    """The reference TCN wraps every Conv1d in weight_norm, which makes it a ParametrizedConv1d."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    model = TemporalBlocks()
    model.c1, model.c2 = weight_norm(model.c1), weight_norm(model.c2)
    model.eval()
    path = tmp_path / "tcn.onnx"
    export_with_extras(model, path, streaming=True)
    x = np.random.default_rng(1).standard_normal((2, 30, 6)).astype(np.float32)
    _, outs = _stream(path, x)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), _torch(model, x), **TOL)
    assert {e["name"] for e in read_card(path)["streaming"]["layers"]} == {"c1", "c2"}


def test_streams_do_not_share_conv_context(tmp_path):
    model = FAMILIES["causal_conv_lstm"]()
    path = tmp_path / "causal.onnx"
    export_with_extras(model, path, streaming=True)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 9, 6)).astype(np.float32)
    pool = StreamPool(path, device="cpu")
    for i in range(4):
        pool.join(i)
    for t in range(9):  # stream 3 joins late and skips ticks: its context must be its own
        ys = pool.step({i: x[i, t : t + 1] for i in range(3)})
    for t in range(9):
        last = pool.step({3: x[3, t : t + 1]})
    for i in range(3):
        np.testing.assert_allclose(ys[i], _torch(model, x[i : i + 1])[0], **TOL)
    np.testing.assert_allclose(last[3], _torch(model, x[3:4])[0], **TOL)


@pytest.mark.parametrize("model, match", [
    (FAMILIES["conv1d_lstm"](), r"streams only when it is causal"),  # centred: reads the next step
    (Strided().eval(), r"streams only when it is causal"),
])
def test_non_causal_convolutions_are_refused(tmp_path, model, match):
    with pytest.raises(UnsupportedModelError, match=match):
        export_with_extras(model, tmp_path / "x.onnx", streaming=True)
    assert not (tmp_path / "x.onnx").exists()


def test_conv_context_follows_per_sample_lengths(tmp_path):
    """--streaming --lengths: a sample that advances fewer steps than the chunk keeps its own context."""
    model = FAMILIES["causal_conv_lstm"]()
    path = tmp_path / "x.onnx"
    result = export_with_extras(model, path, streaming=True, lengths=True)
    assert result.report.extra["check"] == "streaming+lengths+streaming-lengths"  # all three checks ran
    x = np.random.default_rng(6).standard_normal((2, 12, 6)).astype(np.float32)
    s = StreamingSession(path, device="cpu")
    first = x[:, :4].copy()
    first[1, 2:] = 99.0  # sample 1 has 2 real steps in this chunk; the rest is padding
    s.step(first, lengths=np.array([4, 2]))
    y = s.step(x[:, 4:7], lengths=np.array([3, 3]))
    own_1 = np.concatenate([x[1, :2], x[1, 4:7]])[None]
    np.testing.assert_allclose(y[0], _torch(model, x[:1, :7])[0], **TOL)
    np.testing.assert_allclose(y[1], _torch(model, own_1)[0], **TOL)


def test_refusal_blames_the_window_not_convolutions_inside_a_step(tmp_path):
    """msft_cnnlstm scales the window by its last price: unstreamable, though its CNN works inside each step."""
    from models.msft_cnnlstm import build

    with pytest.raises(UnsupportedModelError) as info:
        export_with_extras(build(), tmp_path / "x.onnx", streaming=True)
    text = str(info.value)
    assert "depends on later steps or on the whole window" in text and "Conv1d" not in text


def test_per_sample_lengths_check_catches_a_context_that_ignores_them(tmp_path, monkeypatch):
    """The export-time check fails when the carried context does not follow lengths (the bug it guards)."""
    from edgeseq.export import conv_state

    original = conv_state.ConvLayer.step
    monkeypatch.setattr(conv_state.ConvLayer, "step", lambda self, x, state, lengths=None: original(self, x, state))
    with pytest.raises(UnsupportedModelError, match=r"--streaming --lengths: with per-sample lengths inside a chunk"):
        export_with_extras(FAMILIES["causal_conv_lstm"](), tmp_path / "x.onnx", streaming=True, lengths=True)
    assert not (tmp_path / "x.onnx").exists()


class _SelfChompingConv(nn.Conv1d):
    """The WaveNet-style CausalConv1d: a Conv1d subclass that crops its own outputs (``centred`` crops both
    ends instead, which reads a future step and cannot stream)."""

    def __init__(self, centred: bool = False) -> None:
        super().__init__(6, 8, 3, padding=2)
        self.centred = centred

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y[..., 1:-1] if self.centred else y[..., :-2]


class _SelfChompingModel(nn.Module):
    def __init__(self, centred: bool = False) -> None:
        super().__init__()
        self.conv = _SelfChompingConv(centred)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, 10, 6),)


def test_a_conv_subclass_that_is_causal_in_its_own_forward_streams(tmp_path):
    torch.manual_seed(0)
    model = _SelfChompingModel().eval()
    path = tmp_path / "m.onnx"
    export_with_extras(model, path, streaming=True)
    assert read_card(path)["streaming"]["layers"][0]["mode"] == "self-causal"
    x = np.random.default_rng(2).standard_normal((2, 30, 6)).astype(np.float32)
    _, outs = _stream(path, x)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), _torch(model, x), **TOL)


def test_a_conv_subclass_that_reads_ahead_is_refused_by_name(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"'conv' \(_SelfChompingConv\)\) are not plain causal nn.Conv1d"):
        export_with_extras(_SelfChompingModel(centred=True).eval(), tmp_path / "m.onnx", streaming=True)
