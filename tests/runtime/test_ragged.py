"""Sequences of different lengths: a list to predict(), padded batches with lengths, per-step outputs."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseq import Session
from edgeseq.cli import main
from edgeseq.errors import InputError

LENGTHS = (5, 12, 1, 5)


@pytest.fixture(scope="module")
def per_step_path(tmp_path_factory):
    """A model with an output per time step (batch, seq, 2): the case whose groups differ in shape."""
    import torch
    from torch import nn

    from edgeseq.export import export

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(6, 16, num_layers=2, batch_first=True)
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ragged") / "tagger.onnx"
    export(Tagger().eval(), path, input_shape=(2, 10, 6))
    return path


def _seqs(features: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, features)).astype(np.float32) for n in LENGTHS]


def test_a_list_of_sequences_equals_each_run_alone(exported):
    s = Session(exported("stacked_lstm"), device="cpu")
    seqs = _seqs(28)
    y = s.predict(seqs)
    assert y.shape == (len(LENGTHS), 10)
    for i, seq in enumerate(seqs):
        np.testing.assert_allclose(y[i], s.predict(seq[None])[0], atol=1e-6)


def test_per_step_outputs_come_back_padded_with_the_last_valid_step(per_step_path):
    s = Session(per_step_path, device="cpu")
    seqs = _seqs(6)
    for y in (s.predict(seqs), np.concatenate(list(s.iter_predict(seqs, batch_size=2)))):
        assert y.shape == (len(LENGTHS), max(LENGTHS), 2)
        for i, (seq, n) in enumerate(zip(seqs, LENGTHS)):
            alone = s.predict(seq[None])[0]
            np.testing.assert_allclose(y[i, :n], alone, atol=1e-6)
            np.testing.assert_array_equal(y[i, n:], np.broadcast_to(alone[-1], (max(LENGTHS) - n, 2)))


def test_padded_batch_with_lengths_for_per_step_outputs(per_step_path):
    s = Session(per_step_path, device="cpu")
    seqs = _seqs(6, seed=1)
    x = np.full((len(seqs), max(LENGTHS), 6), 7.0, np.float32)  # padding that would change results if read
    for i, seq in enumerate(seqs):
        x[i, : len(seq)] = seq
    np.testing.assert_array_equal(s.predict(x, lengths=np.array(LENGTHS)), s.predict(seqs))


def test_infer_jsonl_of_different_lengths_with_per_step_outputs(per_step_path, tmp_path):
    seqs = _seqs(6, seed=2)
    src = tmp_path / "seqs.jsonl"
    src.write_text("".join(__import__("json").dumps(s.tolist()) + "\n" for s in seqs))
    out = tmp_path / "y.npy"
    result = CliRunner().invoke(main, ["infer", str(per_step_path), "-i", str(src), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out), Session(per_step_path, device="cpu").predict(seqs), atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    ([np.zeros((5, 28)), np.zeros((4, 7))], r"sequence 1 has shape \(4, 7\); each sequence in a list must be \(steps, 28\)"),
    ([np.zeros((5, 28)), np.zeros((0, 28))], "sequence 1 is empty"),
    ([np.zeros((5, 28)), np.zeros((2, 3, 28))], r"sequence 1 has shape \(2, 3, 28\)"),
])
def test_bad_lists_name_the_sequence(exported, bad, message):
    with pytest.raises(InputError, match=message):
        Session(exported("stacked_lstm"), device="cpu").predict(bad)


def test_time_first_per_step_outputs_with_lengths_and_lists(tmp_path):
    """(seq, batch, ...) in and out: groups are put back along the output's batch axis, not its time axis."""
    import torch
    from torch import nn

    from edgeseq.export import export

    class TimeFirstTagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(6, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    torch.manual_seed(0)
    path = tmp_path / "tf.onnx"
    export(TimeFirstTagger().eval(), path, input_shape=(10, 2, 6), time_first=True)
    s = Session(path, device="cpu")
    seqs = _seqs(6, seed=4)
    x = np.zeros((max(LENGTHS), len(seqs), 6), np.float32)
    for i, seq in enumerate(seqs):
        x[: len(seq), i] = seq
    y = s.predict(x, lengths=np.array(LENGTHS))
    assert y.shape == (max(LENGTHS), len(LENGTHS), 2)
    np.testing.assert_array_equal(s.predict(seqs), y)
    for i, (seq, n) in enumerate(zip(seqs, LENGTHS)):
        alone = s.predict(seq[:, None])[:, 0]
        np.testing.assert_allclose(y[:n, i], alone, atol=1e-6)
        np.testing.assert_array_equal(y[n:, i], np.broadcast_to(alone[-1], (max(LENGTHS) - n, 2)))


@pytest.fixture(scope="module")
def per_step_lengths_path(tmp_path_factory):
    """The per-step tagger exported with a lengths input (runs are then trimmed, not split by length)."""
    import torch
    from torch import nn

    from edgeseq.export.stateful import export_with_extras

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(6, 16, batch_first=True)
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    torch.manual_seed(1)
    model = Tagger().eval()
    path = tmp_path_factory.mktemp("ragged-lengths") / "tagger-lengths.onnx"
    export_with_extras(model, path, input_shape=(2, 10, 6), lengths=True)
    return path


@pytest.mark.parametrize("fixture", ["per_step_path", "per_step_lengths_path"])
def test_many_lengths_across_windows_equal_each_sample_alone(fixture, request):
    """Samples sorted into length buckets over several windows come back in order, each as if alone."""
    s = Session(request.getfixturevalue(fixture), device="cpu")
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 41, size=300)
    x = rng.standard_normal((300, 40, 6)).astype(np.float32)  # padding holds noise: it must not be read
    y = s.predict(x, lengths=lengths, batch_size=4)  # 4 per run x 32 runs per window: 3 windows
    assert y.shape == (300, 40, 2)
    for i in range(0, 300, 7):
        n = int(lengths[i])
        alone = s.predict(x[i : i + 1, :n])[0]
        np.testing.assert_allclose(y[i, :n], alone, atol=1e-5)
        np.testing.assert_array_equal(y[i, n:], np.broadcast_to(y[i, n - 1], (40 - n, 2)))


def test_errors_in_sorted_windows_name_the_original_sample(per_step_path):
    s = Session(per_step_path, device="cpu")
    lengths = np.array([3, 9] * 100)
    x = np.zeros((200, 9, 6), np.float32)
    x[151, 2, 4] = np.nan
    with pytest.raises(InputError, match=r"sample 151, step 2"):
        s.predict(x, lengths=lengths, batch_size=8)


def test_cpu_runs_stay_cache_sized_and_cuda_runs_do_not(per_step_path):
    from edgeseq.runtime.providers import DeviceChoice
    from edgeseq.runtime.session import CPU_MIN_ROWS, CPU_RUN_SAMPLE_STEPS

    s = Session(per_step_path, device="cpu", batch_size=256)
    assert s._rows(None, 100) == max(CPU_MIN_ROWS, CPU_RUN_SAMPLE_STEPS // 100)
    assert s._rows(None, 4) == 256 and s._rows(16, 4) == 16
    s.device_choice = DeviceChoice("cuda:0", [])  # what a CUDA session decides: the batch size as given
    assert s._rows(None, 100) == 256


def test_torch_tensors_from_a_notebook_are_taken_as_they_are(exported):
    """Tensors that require grad (straight from a training loop) and lists of them, without a traceback."""
    import torch

    s = Session(exported("stacked_lstm"), device="cpu")
    x = torch.randn(3, 7, 28, requires_grad=True)
    np.testing.assert_array_equal(s.predict(x), s.predict(x.detach().numpy()))
    seqs = [torch.randn(n, 28, requires_grad=True) for n in (4, 9)]
    np.testing.assert_array_equal(s.predict(seqs), s.predict([t.detach().numpy() for t in seqs]))
