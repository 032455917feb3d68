"""Convolutional front ends exported with no flags: channels-first Conv1d, clips of frames and audio spectrograms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from edgeseq import Session, StreamingSession
from edgeseq.cli import main
from edgeseq.errors import InputError
from edgeseq.export import export
from edgeseq.export.stateful import export_with_extras


class ClipClassifier(nn.Module):
    """A CNN run on every frame of a clip (batch, time, 3, H, W), then an LSTM over the frames."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * 16 * 16, 24))  # 32x32 frames only
        self.lstm = nn.LSTM(24, 16, batch_first=True)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        b, t, c, h, w = x.shape
        f = self.cnn(x.view(b * t, c, h, w)).view(b, t, -1)
        out, _ = self.lstm(f)
        return self.fc(out[:, -1])


class KeywordCRNN(nn.Module):
    """An audio CRNN: conv over a (batch, 1, 40 mel bands, frames) spectrogram, then a GRU over the frames."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1)))
        self.gru = nn.GRU(8 * 20, 32, batch_first=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        f = self.conv(x)
        b, c, h, t = f.shape
        out, _ = self.gru(f.permute(0, 3, 1, 2).reshape(b, t, c * h))
        return self.fc(out[:, -1])


class OddFrames(ClipClassifier):
    """50x50 frames: a size edgeseq does not guess."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn[3] = nn.Linear(4 * 25 * 25, 24)


def _export(model: nn.Module, path, log: list[str]) -> None:
    torch.manual_seed(0)  # the random parity inputs
    export(model.eval(), path, log=log.append)


def test_clips_of_frames_export_with_the_first_frame_size_that_runs(tmp_path):
    torch.manual_seed(0)
    model, log = ClipClassifier().eval(), []
    _export(model, tmp_path / "clip.onnx", log)
    assert any("clips of frames (batch, length, 3, H, W)" in m and "32x32" in m for m in log)
    s = Session(tmp_path / "clip.onnx", device="cpu")
    assert list(s.inputs[0].shape) == ["batch", "seq", 3, 32, 32]
    x = np.random.default_rng(0).standard_normal((2, 13, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(s.predict(x), want, atol=1e-5, rtol=1e-4)


def test_spectrograms_get_a_dynamic_time_axis_last(tmp_path):
    torch.manual_seed(0)
    model, log = KeywordCRNN().eval(), []
    _export(model, tmp_path / "kws.onnx", log)
    assert any("spectrograms (batch, 1, 40, length)" in m for m in log)
    s = Session(tmp_path / "kws.onnx", device="cpu")
    assert list(s.inputs[0].shape) == ["batch", 1, 40, "seq"]
    assert s.card["inputs"][0]["features"] is None  # not the example's length, as the card said before
    clips = [np.random.default_rng(n).standard_normal((1, 40, n)).astype(np.float32) for n in (30, 101, 7)]
    with torch.inference_mode():
        want = np.concatenate([model(torch.from_numpy(c[None])).numpy() for c in clips])
    # a list of spectrograms of different lengths: padded along their time axis, each run at its own length
    np.testing.assert_allclose(s.predict(clips), want, atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match=r"each sequence in a list must be \(1, 40, steps\)"):
        s.predict([np.zeros((1, 41, 5), np.float32), np.zeros((1, 40, 6), np.float32)])


def test_a_frame_size_it_cannot_guess_names_both_layouts(tmp_path):
    with pytest.raises(Exception, match=r"--input-shape BATCH,LENGTH,3,H,W for clips of frames, or BATCH,3,BINS,"
                                        r"LENGTH with --dynamic-axes 0,3 for spectrograms"):
        export(OddFrames().eval(), tmp_path / "odd.onnx")
    assert not (tmp_path / "odd.onnx").exists()


def test_a_failed_torchscript_pass_does_not_dump_its_graph(tmp_path, capfd):
    """AdaptiveAvgPool2d over frames fails TorchScript's ONNX pass, which prints its whole IR to C++ stderr."""

    class Pooled(ClipClassifier):
        def __init__(self) -> None:
            super().__init__()
            self.cnn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                     nn.Linear(16, 24))

    torch.manual_seed(0)
    log: list[str] = []
    export(Pooled().eval(), tmp_path / "pooled.onnx", log=log.append)
    err = capfd.readouterr().err
    assert "Torch IR graph" not in err and "%" not in err
    failed = [m for m in log if "torchscript exporter failed" in m]
    assert failed and "adaptive_avg_pool2d" in failed[0]
    assert "Caused by" not in failed[0] and "feel free to request" not in failed[0]


def test_cli_infer_runs_a_spectrogram_file(tmp_path):
    torch.manual_seed(0)
    model = KeywordCRNN().eval()
    _export(model, tmp_path / "kws.onnx", [])
    clip = np.random.default_rng(1).standard_normal((3, 1, 40, 64)).astype(np.float32)
    np.save(tmp_path / "clip.npy", clip)
    result = CliRunner().invoke(main, ["infer", str(tmp_path / "kws.onnx"), "-i", str(tmp_path / "clip.npy"),
                                       "-o", str(tmp_path / "out.npy")])
    assert result.exit_code == 0, result.output
    with torch.inference_mode():
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model(torch.from_numpy(clip)).numpy(),
                                   atol=1e-5, rtol=1e-4)


class ChannelsFirst(nn.Module):
    """x: (batch, channels, time) straight into a causal Conv1d, as Conv1d reads it; then an LSTM per step."""

    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 16, 3)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        f = torch.relu(self.conv(F.pad(x, (2, 0)))).permute(0, 2, 1)
        return self.fc(self.lstm(f)[0])


def _torch(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("channels", [6, 8])  # 8: the default example length, which must not be mistaken for it
def test_channels_first_conv1d_gets_its_time_axis_last(tmp_path, channels):
    torch.manual_seed(0)
    model, log = ChannelsFirst(channels).eval(), []
    _export(model, tmp_path / "cf.onnx", log)
    assert any(f"(batch, {channels} channels, length), channels first" in m for m in log)
    s = Session(tmp_path / "cf.onnx", device="cpu")
    assert list(s.inputs[0].shape) == ["batch", channels, "seq"]
    seqs = [np.random.default_rng(n).standard_normal((channels, n)).astype(np.float32) for n in (5, 17, 3)]
    got = s.predict(seqs)  # padded along their time axis (the last), each as if alone
    assert got.shape == (3, 17, 4)
    for i, seq in enumerate(seqs):
        np.testing.assert_allclose(got[i, : seq.shape[1]], _torch(model, seq[None])[0], atol=1e-5, rtol=1e-4)


def test_channels_first_conv1d_streams_one_step_at_a_time(tmp_path):
    torch.manual_seed(0)
    model = ChannelsFirst().eval()
    export_with_extras(model, tmp_path / "s.onnx", streaming=True)
    x = np.random.default_rng(0).standard_normal((1, 6, 12)).astype(np.float32)
    stream = StreamingSession(tmp_path / "s.onnx", device="cpu")
    steps = np.concatenate([stream.step(x[:, :, t : t + 1]) for t in range(12)], axis=1)
    np.testing.assert_allclose(steps, _torch(model, x), atol=1e-5, rtol=1e-4)


def test_cli_infer_reads_csv_steps_as_rows_for_a_channels_first_file(tmp_path):
    import json

    torch.manual_seed(0)
    model = ChannelsFirst().eval()
    _export(model, tmp_path / "cf.onnx", [])
    steps = np.random.default_rng(2).standard_normal((11, 6)).astype(np.float32)  # a row per step, as CSVs are
    np.savetxt(tmp_path / "s.csv", steps, delimiter=",")
    result = CliRunner().invoke(main, ["infer", str(tmp_path / "cf.onnx"), "-i", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    got = np.array(json.loads(result.stdout))
    np.testing.assert_allclose(got, _torch(model, np.ascontiguousarray(steps.T[None]))[0], atol=1e-5, rtol=1e-4)


def test_layers_registered_out_of_call_order_are_still_found(tmp_path):
    """The LSTM registered before the CNN it follows, as __init__ often lists them."""

    class LateCNN(ClipClassifier):
        def __init__(self) -> None:
            super().__init__()
            cnn = self.cnn
            del self.cnn
            self.cnn = cnn  # now after lstm and fc in model.modules()

    torch.manual_seed(0)
    log: list[str] = []
    _export(LateCNN().eval(), tmp_path / "late.onnx", log)
    assert list(Session(tmp_path / "late.onnx", device="cpu").inputs[0].shape) == ["batch", "seq", 3, 32, 32]


def test_a_model_that_transposes_features_first_itself_gets_them_first(tmp_path):
    class Transposes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(12, 16, batch_first=True)

        def forward(self, x):  # x: (batch, features, time)
            return self.gru(x.permute(0, 2, 1))[0][:, -1]

    torch.manual_seed(0)
    model, log = Transposes().eval(), []
    _export(model, tmp_path / "t.onnx", log)
    assert any("(batch, 12 features, length), features first" in m for m in log)
    s = Session(tmp_path / "t.onnx", device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 12, 30)).astype(np.float32)
    np.testing.assert_allclose(s.predict(x), _torch(model, x), atol=1e-5, rtol=1e-4)


def test_a_spectrogram_without_its_channel_axis_is_found_too(tmp_path):
    """(batch, 40 bands, frames), the channel axis added in forward (x.unsqueeze(1)) before the Conv2d."""

    class Unsqueezes(KeywordCRNN):
        def forward(self, x):
            return super().forward(x.unsqueeze(1))

    torch.manual_seed(0)
    model, log = Unsqueezes().eval(), []
    _export(model, tmp_path / "kws.onnx", log)
    assert any("spectrograms (batch, 40, length)" in m for m in log)
    s = Session(tmp_path / "kws.onnx", device="cpu")
    assert list(s.inputs[0].shape) == ["batch", 40, "seq"]
    x = np.random.default_rng(0).standard_normal((2, 40, 75)).astype(np.float32)
    np.testing.assert_allclose(s.predict(x), _torch(model, x), atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")  # torch.jit's own
@pytest.mark.parametrize("traced", [False, True])
def test_an_input_shape_of_channels_then_steps_keeps_time_dynamic(tmp_path, traced):
    """--input-shape 2,6,50: the 6 is the Conv1d's channels; read as time it was exported at a fixed length of 6."""
    from edgeseq.export import export

    torch.manual_seed(0)
    model = ChannelsFirst(6).eval()
    subject = torch.jit.trace(model, torch.randn(2, 6, 50)) if traced else model
    log: list[str] = []
    export(subject, tmp_path / "cf.onnx", input_shape=(2, 6, 50), log=log.append)
    assert any("reads as (batch, 6 channels, 50 steps)" in m for m in log)
    s = Session(tmp_path / "cf.onnx", device="cpu")
    assert list(s.inputs[0].shape) == ["batch", 6, "seq"]
    x = np.random.default_rng(1).standard_normal((1, 6, 23)).astype(np.float32)
    np.testing.assert_allclose(s.predict(x), _torch(model, x), atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel lengths")
@pytest.mark.parametrize("kernel, dilation", [(3, 2), (4, 3), (5, 2)])
def test_a_dilated_same_convolution_exports_with_explicit_pads(tmp_path, kernel, dilation):
    """ONNX Runtime refuses auto_pad=SAME_UPPER with a dilation; the file spells the same zeros as pads."""
    import onnx

    class Dilated(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(6, 8, kernel, dilation=dilation, padding="same")
            self.pool = torch.nn.MaxPool1d(2)
            self.rnn = torch.nn.LSTM(8, 16, batch_first=True)
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, x):
            z = self.pool(self.conv(x.transpose(1, 2))).transpose(1, 2)
            return self.fc(self.rnn(z)[0][:, -1])

    torch.manual_seed(0)
    out = tmp_path / "d.onnx"
    result = export(Dilated().eval(), out, input_shape=(2, 16, 6), exporter="torchscript")
    assert result.report.passed
    conv = next(n for n in onnx.load(str(out)).graph.node if n.op_type == "Conv")
    assert "auto_pad" not in {a.name for a in conv.attribute}


class _MelAgnostic(nn.Module):
    """(batch, time, mels) through a Conv2d whose output is averaged over the bins: any mel count runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        z = torch.relu(self.conv(x.unsqueeze(1))).mean(3)  # (batch, 8, time)
        return self.fc(self.gru(z.transpose(1, 2))[0][:, -1])


def test_a_guessed_feature_count_no_layer_fixes_is_said(tmp_path):
    said: list[str] = []
    export(_MelAgnostic().eval(), tmp_path / "m.onnx", log=said.append)
    assert any("the model also runs with 9 features on the last axis, so no layer fixes that count" in s for s in said)
    said.clear()
    export(_MelAgnostic().eval(), tmp_path / "m.onnx", input_shape=(2, 50, 40), log=said.append)
    assert not any("no layer fixes" in s for s in said)  # the user said what the data is


class _Spectrogram2d(nn.Module):
    """(batch, 1, time, 40 bins) through a Conv2d that wants one channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gru = nn.GRU(4 * 40, 16, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        z = torch.relu(self.conv(x))
        b, c, t, f = z.shape
        return self.fc(self.gru(z.permute(0, 2, 1, 3).reshape(b, t, c * f))[0][:, -1])


def test_a_rank_4_shape_whose_axis_1_is_a_channel_asks_for_the_time_axis(tmp_path):
    from edgeseq.errors import ExportError

    out = tmp_path / "s.onnx"
    with pytest.raises(ExportError, match=r"axis 1 \(1\) is read as the sequence.*--dynamic-axes 0,2"):
        export(_Spectrogram2d().eval(), out, input_shape=(1, 1, 98, 40))
    assert not out.exists()
    result = export(_Spectrogram2d().eval(), out, input_shape=(1, 1, 98, 40), dynamic_axes=(0, 2))
    assert result.card["inputs"][0]["symbolic_shape"] == ["batch", 1, "seq", 40]


def test_jsonl_clips_feed_a_spectrogram_model_with_a_channel_axis(tmp_path):
    import json

    torch.manual_seed(0)
    net = _Spectrogram2d().eval()
    path = tmp_path / "s.onnx"
    export(net, path, input_shape=(1, 1, 98, 40), dynamic_axes=(0, 2))
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal((n, 40)).astype(np.float32) for n in (49, 98, 7)]
    (tmp_path / "clips.jsonl").write_text("".join(json.dumps(c.tolist()) + "\n" for c in clips))
    result = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "clips.jsonl"), "-o",
                                       str(tmp_path / "y.npy")])
    assert result.exit_code == 0, result.output
    got = np.load(tmp_path / "y.npy")
    with torch.inference_mode():
        want = np.concatenate([net(torch.from_numpy(c[None, None])).numpy() for c in clips])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_an_npy_without_the_channel_axis_says_to_add_it(tmp_path):
    path = tmp_path / "s.onnx"
    export(_Spectrogram2d().eval(), path, input_shape=(1, 1, 98, 40), dynamic_axes=(0, 2))
    np.save(tmp_path / "x.npy", np.zeros((4, 98, 40), np.float32))
    result = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "x.npy")])
    assert result.exit_code == 1 and "add the channel axis, np.expand_dims(x, 1)" in result.stderr
