"""A model built for one sequence length (every step flattened into one Linear) exports with that length fixed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgeseq import Session
from edgeseq.card import read_card
from edgeseq.cli import main
from edgeseq.errors import InputError
from edgeseq.export import check, export
from edgeseq.export.signature import infer_signature, runs_at_one_length_only

REF = "tests/export/test_fixed_length.py:build"


class FlattenedSteps(torch.nn.Module):
    """fc(lstm_out.reshape(batch, -1)): the Linear's width is 20 steps x 16, so 20 steps is the only length."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 16, batch_first=True)
        self.fc = torch.nn.Linear(20 * 16, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out.reshape(out.size(0), -1))


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    return FlattenedSteps().eval()


def test_the_length_is_fixed_in_the_file_and_said(tmp_path):
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", REF, "--input-shape", "1,20,4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "runs at 20 steps only" in result.stderr and "fixed sequence length of 20" in result.stderr
    assert read_card(out)["inputs"][0]["symbolic_shape"] == ["batch", 20, 4]
    session = Session(out, device="cpu")
    x = np.random.default_rng(0).standard_normal((3, 20, 4)).astype(np.float32)
    with torch.inference_mode():
        want = build()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.predict(x), want, atol=1e-5)
    with pytest.raises(InputError, match="axis 1 must be 20, got 25"):  # not an error from inside ONNX Runtime
        session.predict(np.zeros((3, 25, 4), np.float32))
    with pytest.raises(InputError, match="runs at 20 steps only .*sample 1 has 13 steps"):  # ragged input too
        session.predict([x[0], x[1, :13]])
    report = check(out, build())
    assert report.passed and {c.length for c in report.cases} == {20}
    assert report.extra["metric_lines"] == ["note: the file runs at 20 steps only (its model does), so it was checked "
                                            "there, not at 1,2,17,100,1000"]
    shown = CliRunner().invoke(main, ["inspect", str(out)])
    assert "sequence length: fixed at 20" in shown.output


def test_without_a_shape_the_error_asks_for_the_length(tmp_path):
    result = CliRunner().invoke(main, ["export", REF, "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "--input-shape BATCH,LENGTH,4" in result.stderr


def test_streaming_and_lengths_are_refused(tmp_path):
    for flag in ("--streaming", "--lengths"):
        result = CliRunner().invoke(main, ["export", REF, "--input-shape", "1,20,4", flag, "-o", str(tmp_path / "m.onnx")])
        assert result.exit_code == 1 and f"refused {flag}: the model runs at 20 steps only" in result.stderr


class _UnpaddedConv(torch.nn.Module):
    """A Conv1d without padding over (batch, seq, 4): needs at least 5 steps, runs at any length above."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 8, kernel_size=5)

    def forward(self, x):
        return self.conv(x.transpose(1, 2)).mean(-1)


def test_a_model_that_only_rejects_short_inputs_keeps_its_dynamic_length():
    model = _UnpaddedConv().eval()
    spec, _ = infer_signature(model, input_shape=(1, 8, 4))
    with pytest.raises(RuntimeError):
        model(torch.zeros(2, 4, 4))  # half the example's length is too short for it
    assert runs_at_one_length_only(model, spec) is None
    fixed, _ = infer_signature(build(), input_shape=(1, 20, 4))
    assert "at 10 steps" in runs_at_one_length_only(build(), fixed)


class _FixedBatchState(torch.nn.Module):
    """An initial state of batch 32 built in forward: runs at batch 32 only, in PyTorch too."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 16, batch_first=True)

    def forward(self, x):
        state = (torch.zeros(1, 32, 16), torch.zeros(1, 32, 16))
        return self.lstm(x, state)[0][:, -1]


def test_a_batch_fixed_in_forward_is_refused_with_the_fix(tmp_path):
    from edgeseq.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match=r"runs at batch 32 only .*build it from the input \(x.size\(0\)\)"):
        export(_FixedBatchState().eval(), tmp_path / "m.onnx", input_shape=(32, 10, 4))
    assert not (tmp_path / "m.onnx").exists()


class LearnedPositions(nn.Module):
    """Token + learned position embeddings (a table of 32 rows over arange(length)), then a GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(50, 8)
        self.pos = nn.Embedding(32, 8)
        self.rnn = nn.GRU(8, 8, batch_first=True)

    def forward(self, x):
        return self.rnn(self.tok(x) + self.pos(torch.arange(x.size(1))))[1][-1]


def test_a_models_own_longest_length_is_found_recorded_and_stated(tmp_path):
    torch.manual_seed(0)
    out, log = tmp_path / "p.onnx", []
    result = export(LearnedPositions().eval(), out, log=log.append)
    assert result.card["max_steps"] == 32
    assert any(line.startswith("note: the model runs on at most 32 steps") for line in log)
    s = Session(out, device="cpu")
    assert s.predict(np.ones((2, 32), np.int64)).shape == (2, 8)
    with pytest.raises(InputError, match="has sequences of 33 steps; this model takes at most 32"):
        s.predict(np.ones((1, 33), np.int64))  # was ONNX Runtime's Gather error
    with pytest.raises(InputError, match="takes at most 32"):
        s.run({"x": np.ones((1, 40), np.int64)})
    checked = CliRunner().invoke(main, ["check", str(out), "--against", f"{__file__}:_positions"])
    assert checked.exit_code == 0 and "skipped" not in checked.output, checked.output


def _positions() -> nn.Module:
    torch.manual_seed(0)
    return LearnedPositions().eval()
