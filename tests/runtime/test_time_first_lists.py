"""A time-first model given a list of sequences (Session.predict, infer .jsonl): one output per sequence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgeseq import Session
from edgeseq.cli import main
from edgeseq.export import export


class TimeFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(5, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (seq, batch, features)
        return self.fc(self.rnn(x)[0][-1])


@pytest.fixture(scope="module")
def time_first(tmp_path_factory):
    torch.manual_seed(0)
    model = TimeFirst().eval()
    out = tmp_path_factory.mktemp("tf") / "tf.onnx"
    export(model, out, time_first=True)
    return model, out


def _alone(model, seqs):
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(s)[:, None]).numpy() for s in seqs])


def test_equal_length_sequences_are_samples_not_steps(time_first):
    # np.asarray of 3 sequences of 6 steps is (3, 6, 5): read as time-first it would be 3 steps of 6 samples
    model, path = time_first
    seqs = [np.random.default_rng(i).standard_normal((6, 5)).astype(np.float32) for i in range(3)]
    got = Session(path, device="cpu").predict(seqs)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, _alone(model, seqs), atol=1e-5, rtol=1e-5)


def test_infer_jsonl_gives_one_row_per_line(time_first, tmp_path):
    model, path = time_first
    seqs = [np.random.default_rng(i).standard_normal((6, 5)).astype(np.float32) for i in range(3)]
    src = tmp_path / "x.jsonl"
    src.write_text("".join(json.dumps(s.tolist()) + "\n" for s in seqs))
    result = CliRunner().invoke(main, ["infer", str(path), "--input", str(src)])
    assert result.exit_code == 0, result.output
    got = np.array([json.loads(line) for line in result.stdout.splitlines()])
    np.testing.assert_allclose(got, _alone(model, seqs), atol=1e-5, rtol=1e-5)
