"""forward(x, lengths) that packs x (pack_padded_sequence): exported with a lengths input, checked
against the model's own packing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from edgeseq import Session
from edgeseq.card import read_card
from edgeseq.cli import main
from edgeseq.errors import ExportError, InputError
from edgeseq.export import export


class Sentiment(nn.Module):
    """bentrevett/pytorch-sentiment-analysis's upgraded model: time-first token ids, 2-layer bidirectional
    LSTM over packed sentences (enforce_sorted=True), the last layer's two final states to a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 8, padding_idx=0)
        self.rnn = nn.LSTM(8, 12, num_layers=2, bidirectional=True, dropout=0.5)
        self.fc = nn.Linear(24, 1)

    def forward(self, text: torch.Tensor, text_lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(text), text_lengths.to("cpu"))
        _, (hidden, _) = self.rnn(packed)
        return self.fc(torch.cat((hidden[-2], hidden[-1]), dim=1))


class PacksItsOwn(nn.Module):
    """Batch-first floats, a GRU, the function imported by name, unsorted lengths."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 10, batch_first=True)
        self.fc = nn.Linear(10, 2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return self.fc(h[-1])


def _seeded(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def test_a_time_first_packed_sentiment_model_exports_with_a_lengths_input(tmp_path):
    model, out, log = _seeded(Sentiment), tmp_path / "s.onnx", []
    export(model, out, log=log.append)  # time-first detected: read batch-first, its packing fails
    assert any("forward packs its input with 'text_lengths'" in m for m in log)
    assert any(m.startswith("note: read batch-first, forward's lengths") for m in log)
    card = read_card(out)
    assert card["layout"] == "time_first"
    assert card["packed_by"] == "text_lengths" and card["lengths_input"] == "lengths"
    assert card["parity"]["check"].endswith("packed")
    rng = np.random.default_rng(4)
    sentences = [rng.integers(1, 50, n) for n in (7, 2, 15)]
    got = Session(out, device="cpu").predict(sentences)  # padded and given their lengths
    with torch.inference_mode():
        want = np.concatenate([model(torch.from_numpy(s)[:, None], torch.tensor([len(s)])).numpy() for s in sentences])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_a_batch_first_model_importing_the_function_by_name(tmp_path):
    model, out = _seeded(PacksItsOwn), tmp_path / "g.onnx"
    export(model, out)
    x = np.random.default_rng(1).standard_normal((3, 9, 3)).astype(np.float32)
    lengths = np.array([4, 9, 1])
    got = Session(out, device="cpu").predict(x, lengths=lengths)
    with torch.inference_mode():
        want = model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert pack_padded_sequence is nn.utils.rnn.pack_padded_sequence  # the export put everything back


def test_cli_export_check_and_infer_sentences_of_different_lengths(tmp_path):
    src = tmp_path / "net.py"
    src.write_text("import torch\nfrom tests.export.test_packed import Sentiment\n\n"
                   "def build():\n    torch.manual_seed(0)\n    return Sentiment()\n")
    out, lines = tmp_path / "s.onnx", tmp_path / "s.jsonl"
    runner = CliRunner()
    result = runner.invoke(main, ["export", f"{src}:build", "-o", str(out), "--time-first"])
    assert result.exit_code == 0, result.output
    checked = runner.invoke(main, ["check", str(out), "--against", f"{src}:build", "--lengths", "1,30"])
    assert checked.exit_code == 0, checked.output
    shown = runner.invoke(main, ["inspect", str(out)])
    assert "packing: forward packed its input with 'text_lengths'" in shown.output
    lines.write_text("[3, 4, 5]\n[9, 8, 7, 6, 5, 4, 3, 2]\n")
    inferred = runner.invoke(main, ["infer", str(out), "--input", str(lines)])
    assert inferred.exit_code == 0, inferred.output
    got = np.array([json.loads(line) for line in inferred.stdout.splitlines()])
    want = Session(out, device="cpu").predict([np.array([3, 4, 5]), np.array([9, 8, 7, 6, 5, 4, 3, 2])])
    np.testing.assert_allclose(got, want, atol=1e-6)


class LengthsFromPadding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 4, padding_idx=0)
        self.lstm = nn.LSTM(4, 6, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = (x != 0).sum(1).clamp(min=1)
        _, (h, _) = self.lstm(pack_padded_sequence(self.emb(x), lengths, batch_first=True, enforce_sorted=False))
        return h[-1]


def test_lengths_computed_inside_forward_get_the_way_out(tmp_path):
    out = tmp_path / "p.onnx"
    with pytest.raises(ExportError, match=r"lengths it computes itself.*forward\(x, lengths\)"):
        export(_seeded(LengthsFromPadding), out)
    assert not out.exists()


class MaskedMean(nn.Module):
    """Uses its lengths twice: to pack, and for a mean over each sample's own steps."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 6, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.size(1))
        return out.sum(1) / lengths[:, None].to(out.dtype)


def test_lengths_used_beyond_packing_read_the_lengths_input(tmp_path):
    model, out = _seeded(MaskedMean), tmp_path / "m.onnx"
    export(model, out)
    x = np.random.default_rng(0).standard_normal((4, 20, 3)).astype(np.float32)
    lengths = np.array([20, 3, 11, 1])
    with torch.inference_mode():
        want = model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    np.testing.assert_allclose(Session(out, device="cpu").predict(x, lengths=lengths), want, atol=1e-5, rtol=1e-5)


class MeanOverLongest(MaskedMean):
    """pad_packed_sequence without total_length cuts at the longest sample: the mean divides by it."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True)[0].mean(1)


def test_a_result_that_depends_on_the_cut_at_the_longest_sample_is_refused(tmp_path):
    from edgeseq.errors import UnsupportedModelError

    out = tmp_path / "m.onnx"
    with pytest.raises(UnsupportedModelError, match=r"in place of forward.s own packing.*depends on the padded length itself"):
        export(_seeded(MeanOverLongest), out)
    assert not out.exists()


def test_a_unidirectional_packed_model_streams(tmp_path):
    from edgeseq import StreamingSession
    from edgeseq.export.stateful import export_with_extras

    model, out = _seeded(PacksItsOwn), tmp_path / "s.onnx"
    export_with_extras(model, out, streaming=True)
    stream = StreamingSession(out, device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 9, 3)).astype(np.float32)
    for t in range(9):
        y = stream.step(x[:, t : t + 1])
    with torch.inference_mode():
        want = model(torch.from_numpy(x), torch.tensor([9, 9])).numpy()
    np.testing.assert_allclose(y, want, atol=1e-5, rtol=1e-5)


class LastValidStep(nn.Module):
    """No packing: reads each sample's last valid step, out[range(b), lengths - 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 16, batch_first=True)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[torch.arange(x.size(0)), lengths - 1])


def test_lengths_read_without_packing_become_an_input_read_the_same_way(tmp_path):
    model, out, log = _seeded(LastValidStep), tmp_path / "l.onnx", []
    export(model, out, log=log.append)
    assert any("forward takes per-sample lengths ('lengths')" in m for m in log)
    card = read_card(out)
    assert card["lengths_input"] == "lengths" and card["lengths_parameter"] == "lengths" and "packed_by" not in card
    rng = np.random.default_rng(2)
    seqs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (3, 11, 7)]
    with torch.inference_mode():
        want = np.concatenate([model(torch.from_numpy(s)[None], torch.tensor([len(s)])).numpy() for s in seqs])
    np.testing.assert_allclose(Session(out, device="cpu").predict(seqs), want, atol=1e-5, rtol=1e-5)
    checked = CliRunner().invoke(main, ["check", str(out), "--against", f"{__file__}:_last_valid"])
    assert checked.exit_code == 0, checked.output
    # run() refuses lengths the file would read past (the next sample's row) or before its first step
    x = np.zeros((3, 6, 4), np.float32)
    for bad in ([6, 7, 2], [0, 3, 3]):
        with pytest.raises(InputError, match="holds each sample's length of 'x', 1 to its 6 steps"):
            Session(out, device="cpu").run({"x": x, "lengths": np.array(bad)})


def _last_valid() -> nn.Module:
    return _seeded(LastValidStep)


def test_lengths_flag_on_a_model_that_reads_its_own_lengths_says_to_drop_it(tmp_path):
    from edgeseq.errors import UnsupportedModelError
    from edgeseq.export.stateful import export_with_extras

    with pytest.raises(UnsupportedModelError, match=r"reads them itself; export it without the flag"):
        export_with_extras(_seeded(LastValidStep), tmp_path / "l.onnx", lengths=True)


class PacksBesideATarget(nn.Module):
    """bentrevett's packed seq2seq shape: forward(src, src_len, trg), the source packed, a teacher-forced decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(30, 8, padding_idx=0), nn.Embedding(20, 8)
        self.enc, self.dec = nn.GRU(8, 16), nn.GRU(8, 16)
        self.out = nn.Linear(16, 20)

    def forward(self, src, src_len, trg):
        _, h = self.enc(pack_padded_sequence(self.src_emb(src), src_len, enforce_sorted=False))
        return self.out(self.dec(self.tgt_emb(trg), h)[0])

    def example_inputs(self):
        return torch.randint(1, 30, (11, 2)), torch.tensor([11, 7]), torch.randint(0, 20, (6, 2))


def test_packing_beside_other_inputs_is_refused_with_the_split_that_exports(tmp_path):
    from edgeseq.errors import UnsupportedModelError

    out = tmp_path / "p.onnx"
    with pytest.raises(UnsupportedModelError, match=r"takes 3 inputs \(src, src_len, trg\).*forward\(x, lengths\)"):
        export(_seeded(PacksBesideATarget), out)
    assert not out.exists()


class PackedTagger(nn.Module):
    """A per-step output through pad_packed_sequence without total_length: PyTorch returns it cut at the longest
    sample, zeros after each sample's own length."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 6, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False))
        return self.fc(nn.utils.rnn.pad_packed_sequence(out, batch_first=True)[0])


def test_a_packed_per_step_output_is_cut_at_the_longest_sample_as_pytorch_cuts_it(tmp_path):
    model, out = _seeded(PackedTagger), tmp_path / "m.onnx"
    export(model, out)
    x = np.random.default_rng(0).standard_normal((3, 12, 3)).astype(np.float32)
    lengths = np.array([7, 4, 2])  # padded well past the longest
    with torch.inference_mode():
        want = model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    s = Session(out, device="cpu")
    got = s.run({"x": x, "lengths": lengths})["y"]
    assert got.shape == want.shape == (3, 7, 4)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)  # zeros after each length included
    # predict: the padded length, each sample's last valid step held; one run and length-sorted runs agree
    one = s.predict(x, lengths=lengths)
    assert one.shape == (3, 12, 4)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(one[i, :n], want[i, :n], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(one[i, n:], np.repeat(want[i, n - 1 : n], 12 - n, axis=0), atol=1e-5, rtol=1e-5)
    many = s.predict(np.repeat(x, 100, axis=0), lengths=np.repeat(lengths, 100))
    np.testing.assert_allclose(many[::100], one, atol=1e-6, rtol=1e-6)


def test_eval_sets_of_a_time_first_model_are_read_in_its_layout(tmp_path):
    """x saved as the model takes it, (steps, samples), with a label and a length per sample."""
    model, out = _seeded(Sentiment), tmp_path / "s.onnx"
    export(model, out)
    rng = np.random.default_rng(0)
    steps, n = 9, 40
    lengths = rng.integers(1, steps + 1, n)
    x = np.zeros((steps, n), np.int64)
    for i, k in enumerate(lengths):
        x[:k, i] = rng.integers(1, 50, k)
    with torch.inference_mode():
        logits = [model(torch.from_numpy(x[:k, i : i + 1]), torch.tensor([k])).item() for i, k in enumerate(lengths)]
    np.savez(tmp_path / "eval.npz", x=x, y=(np.array(logits) > 0).astype(np.int64), lengths=lengths)
    q = CliRunner().invoke(main, ["quantize", str(out), "-o", str(tmp_path / "q.onnx"), "--mode", "fp16",
                                  "--eval", str(tmp_path / "eval.npz")])
    assert q.exit_code == 0, q.output
    assert "accuracy float 1.0000" in q.output and f"on {n} samples" in q.output
    checked = CliRunner().invoke(main, ["check", str(out), "--against", f"{__file__}:_sentiment", "--batch-sizes", "1",
                                        "--lengths", "3", "--eval", str(tmp_path / "eval.npz")])
    assert checked.exit_code == 0, checked.output
    assert "accuracy PyTorch 1.0000 vs ONNX 1.0000" in checked.output


def _sentiment() -> nn.Module:
    return _seeded(Sentiment)
