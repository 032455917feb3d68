"""A model with several outputs (logits and attention weights): none is dropped without a word."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgeseq import Session
from edgeseq.cli import main
from edgeseq.export import export


class AttentionClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 16, batch_first=True)
        self.score = nn.Linear(16, 1)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        o, _ = self.lstm(x)
        w = torch.softmax(self.score(o).squeeze(-1), dim=1)
        return self.head((o * w.unsqueeze(-1)).sum(1)), w


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    net = AttentionClassifier().eval()
    path = tmp_path_factory.mktemp("multi-out") / "att.onnx"
    export(net, path, input_shape=(2, 10, 6))
    return net, path


def _torch(net, x):
    with torch.inference_mode():
        return [t.numpy() for t in net(torch.from_numpy(x))]


def test_npz_output_holds_every_output(model, tmp_path):
    net, path = model
    x = np.random.default_rng(0).standard_normal((5, 9, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "all.npz"
    result = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "x.npy"), "-o", str(out),
                                       "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "note:" not in result.stderr
    with np.load(out) as got:
        assert got.files == ["y0", "y1"]
        for name, want in zip(got.files, _torch(net, x)):
            np.testing.assert_allclose(got[name], want, atol=1e-5)


def test_single_file_output_says_which_output_it_wrote(model, tmp_path):
    _, path = model
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 6), np.float32))
    result = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")])
    assert result.exit_code == 0, result.output
    assert "the model has 2 outputs (y0, y1); this writes the first, 'y0'; give -o FILE.npz" in result.stderr


def test_iter_outputs_with_ragged_sequences(model):
    net, path = model
    rng = np.random.default_rng(1)
    seqs = [rng.standard_normal((n, 6)).astype(np.float32) for n in (3, 8, 5)]
    (logits, weights), = list(Session(path, device="cpu").iter_outputs(seqs))
    assert weights.shape == (3, 8)
    for i, seq in enumerate(seqs):
        want_logits, want_weights = _torch(net, seq[None])
        np.testing.assert_allclose(logits[i], want_logits[0], atol=1e-5)
        np.testing.assert_allclose(weights[i, : len(seq)], want_weights[0], atol=1e-5)


class StateOut(nn.Module):
    """Returns (per-step logits, h_n, c_n): h_n and c_n hold samples on axis 1."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 10, batch_first=True)
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.fc(out), h, c


class TimeFirstTagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 10)
        self.fc = nn.Linear(10, 2)

    def forward(self, x):  # (steps, batch, 6) -> (steps, batch, 2)
        return self.fc(self.lstm(x)[0])


def test_infer_joins_each_output_along_its_own_batch_axis_past_one_chunk(tmp_path):
    """300 samples in chunks of 256: h_n (1, batch, 10) was joined on axis 0 and infer crashed."""
    torch.manual_seed(0)
    net = StateOut().eval()
    path = tmp_path / "s.onnx"
    export(net, path, input_shape=(2, 8, 6))
    x = np.random.default_rng(0).standard_normal((300, 8, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npz")])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "y.npz") as got:
        for (name, y), want in zip(got.items(), _torch(net, x)):
            np.testing.assert_allclose(y, want, atol=1e-5, err_msg=name)


def test_infer_writes_a_time_first_models_per_step_output_past_one_chunk(tmp_path):
    torch.manual_seed(0)
    net = TimeFirstTagger().eval()
    path = tmp_path / "tf.onnx"
    export(net, path, input_shape=(8, 2, 6), time_first=True)
    x = np.random.default_rng(1).standard_normal((8, 300, 6)).astype(np.float32)  # 300 samples side by side
    np.save(tmp_path / "x.npy", x)
    with torch.inference_mode():
        want = net(torch.from_numpy(x)).numpy()
    for out in ("y.npy", "y.npz"):
        result = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        got = np.load(tmp_path / out)
        np.testing.assert_allclose(got if out.endswith(".npy") else got["y"], want, atol=1e-5)
    printed = CliRunner().invoke(main, ["infer", str(path), "-i", str(tmp_path / "x.npy")])
    lines = printed.stdout.splitlines()
    assert len(lines) == 300  # a line per sample, each its (steps, 2)
    np.testing.assert_allclose(np.array(__import__("json").loads(lines[299])), want[:, 299], atol=1e-5)
