"""Batch-first or time-first: a model read in the wrong layout is refused, and detected when no flag says."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeseq.errors import ExportError
from edgeseq.export import export


def test_a_time_first_model_is_detected_and_refused_only_when_said_to_be_batch_first(tmp_path):
    class TimeFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(5, 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):  # (seq, batch, features)
            return self.fc(self.rnn(x)[0][-1])

    out = tmp_path / "tf.onnx"
    with pytest.raises(ExportError, match="pass --time-first"):
        export(TimeFirst(), out, time_first=False)
    assert not out.exists()
    model, log = TimeFirst().eval(), []
    result = export(model, out, log=log.append)  # no flag: detected
    assert result.card["layout"] == "time_first"
    assert any(m.startswith("note: read batch-first, the model's outputs follow the sequence axis") for m in log)
    import numpy as np

    from edgeseq import Session

    x = torch.randn(6, 4, 5)  # 6 steps, 4 samples
    expected = model(x).detach().numpy()
    got = Session(out, device="cpu").predict(x.numpy(), batch_size=3)  # chunks along the batch axis (1)
    np.testing.assert_allclose(got, expected, atol=1e-5)


class TimeFirstTagger(nn.Module):
    """Time-first per-step outputs (seq, batch, classes): the shape alone fits either layout."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.rnn = nn.LSTM(5, 8)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


class BatchFirstTagger(TimeFirstTagger):
    def __init__(self, classes: int = 2) -> None:
        super().__init__(classes)
        self.rnn = nn.LSTM(5, 8, batch_first=True)


def test_per_step_outputs_read_in_the_wrong_layout_are_refused_both_ways_and_detected(tmp_path):
    from edgeseq.export.stateful import export_with_extras

    out = tmp_path / "t.onnx"
    with pytest.raises(ExportError, match="looks like a time-first .*pass --time-first"):
        export(TimeFirstTagger().eval(), out, time_first=False)
    with pytest.raises(ExportError, match="looks like a batch-first model; drop --time-first"):
        export(BatchFirstTagger().eval(), out, time_first=True)
    with pytest.raises(ExportError, match="pass --time-first"):  # chunks would cut the batch, and agree
        export_with_extras(TimeFirstTagger().eval(), out, streaming=True, time_first=False)
    assert not out.exists()
    # (seq, batch, classes) has both sizes in it: only the samples' independence tells the layouts apart
    assert export(TimeFirstTagger().eval(), out).card["layout"] == "time_first"
    assert export(BatchFirstTagger().eval(), out).card["layout"] == "batch_first"
    streamed = export_with_extras(TimeFirstTagger().eval(), tmp_path / "s.onnx", streaming=True)
    assert streamed.card["layout"] == "time_first"


@pytest.mark.parametrize("classes", [3, 5, 7])
def test_layout_is_told_apart_whatever_the_class_count(tmp_path, classes):
    # 3 and 5 are the first probe's batch and length: an output (seq, batch, 3) has two axes of size 3
    torch.manual_seed(0)
    assert export(TimeFirstTagger(classes).eval(), tmp_path / "t.onnx").card["layout"] == "time_first"
    assert export(BatchFirstTagger(classes).eval(), tmp_path / "b.onnx").card["layout"] == "batch_first"
    log: list[str] = []
    export(MixesSamples(classes).eval(), tmp_path / "m.onnx", log=log.append)
    assert any("mixes samples" in line for line in log)


class MixesSamples(BatchFirstTagger):
    """Subtracts the batch mean: every sample's output depends on the others."""

    def forward(self, x):
        y = super().forward(x)
        return y - y.mean(0, keepdim=True)


def test_a_model_that_mixes_samples_is_exported_with_a_warning(tmp_path):
    log: list[str] = []
    result = export(MixesSamples().eval(), tmp_path / "m.onnx", log=log.append)
    assert result.report.passed
    assert any("mixes samples" in line for line in log)
    log.clear()
    export(BatchFirstTagger().eval(), tmp_path / "b.onnx", log=log.append)
    assert not any("mixes samples" in line for line in log)


def test_cli_detects_the_layout_and_batch_first_insists(tmp_path):
    from click.testing import CliRunner

    from edgeseq.cli import main

    ref, out = "tests/export/test_layout.py:TimeFirstTagger", tmp_path / "t.onnx"
    refused = CliRunner().invoke(main, ["export", ref, "-o", str(out), "--batch-first"])
    assert refused.exit_code == 1 and "pass --time-first" in refused.output and not out.exists()
    done = CliRunner().invoke(main, ["export", ref, "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert "exported time-first" in done.output and out.exists()
