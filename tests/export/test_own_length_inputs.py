"""Two sequences of their own lengths (an encoder-decoder with teacher forcing): both time axes stay dynamic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeseq import Session
from edgeseq.export import export
from edgeseq.export.signature import infer_signature
from edgeseq.export.stateful import export_with_extras


class Translator(nn.Module):
    """Token encoder (vocabulary 30) and a teacher-forced decoder over its own tokens (vocabulary 20)."""

    def __init__(self) -> None:
        super().__init__()
        self.src_emb = nn.Embedding(30, 16)
        self.tgt_emb = nn.Embedding(20, 16)
        self.enc = nn.GRU(16, 32, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(64, 32)
        self.dec = nn.GRU(16, 32, batch_first=True)
        self.out = nn.Linear(32, 20)

    def forward(self, src, tgt):
        _, h = self.enc(self.src_emb(src))
        h0 = torch.tanh(self.bridge(torch.cat([h[0], h[1]], -1))).unsqueeze(0)
        y, _ = self.dec(self.tgt_emb(tgt), h0)
        return self.out(y)

    def example_inputs(self):
        return torch.randint(0, 30, (2, 11)), torch.randint(0, 20, (2, 6))


class CellDecoder(nn.Module):
    """An nn.LSTM encoder, then an nn.LSTMCell stepped in Python once per row of ``steps``."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.LSTM(4, 16, batch_first=True)
        self.cell = nn.LSTMCell(3, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x, steps):
        _, (h, c) = self.enc(x)
        h, c = h[0], c[0]
        y = torch.zeros(x.size(0), 3)
        outs = []
        for t in range(steps.size(1)):
            h, c = self.cell(y + steps[:, t], (h, c))
            y = self.out(h)
            outs.append(y)
        return torch.stack(outs, 1)

    def example_inputs(self):
        return torch.randn(2, 10, 4), torch.randn(2, 5, 3)


def _built(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def _shapes(path) -> dict[str, list]:
    s = Session(path, device="cpu")
    return {t.name: list(t.shape) for t in [*s.inputs, *s.outputs]}


def test_each_token_input_gets_its_own_vocabulary_and_length():
    spec, _ = infer_signature(_built(Translator))
    x, tgt = spec.inputs
    assert (x.vocab_size, tgt.vocab_size) == (30, 20)  # ids of 20..29 would fail the decoder's embedding
    assert x.dynamic == {0: "batch", 1: "seq"} and tgt.dynamic == {0: "batch", 1: "tgt_seq"}
    assert [a.shape[1] for a in spec.random(3, 22)] == [22, 12]  # sweeps vary both lengths


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_decoder_output_follows_the_target_length(exporter, tmp_path):
    path = tmp_path / "t.onnx"
    result = export(_built(Translator), path, exporter=exporter)
    assert result.report.passed and len(result.report.cases) == 8  # no case skipped for out-of-range ids
    assert _shapes(path) == {"x": ["batch", "seq"], "tgt": ["batch", "tgt_seq"], "y": ["batch", "tgt_seq", 20]}
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(0, 30, (3, 17)), rng.integers(0, 20, (3, 4))  # lengths the example never had
    got = Session(path, device="cpu").run({"x": src, "tgt": tgt})["y"]
    with torch.inference_mode():
        want = _built(Translator)(torch.from_numpy(src), torch.from_numpy(tgt)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_python_loop_over_the_second_input_exports_as_a_loop_over_its_length(tmp_path):
    path = tmp_path / "c.onnx"
    result = export(_built(CellDecoder), path)
    assert result.report.passed and result.card.get("loops")
    assert _shapes(path)["y"] == ["batch", "steps_seq", 3]
    rng = np.random.default_rng(1)
    x, steps = rng.standard_normal((2, 3, 4), np.float32), rng.standard_normal((2, 9, 3), np.float32)
    got = Session(path, device="cpu").run({"x": x, "steps": steps})["y"]
    with torch.inference_mode():
        want = _built(CellDecoder)(torch.from_numpy(x), torch.from_numpy(steps)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_streaming_says_why_it_needs_one_sequence(tmp_path):
    with pytest.raises(Exception, match=r"refused --streaming: .*tgt has a length of its own"):
        export_with_extras(_built(Translator), tmp_path / "s.onnx", streaming=True)
    assert not (tmp_path / "s.onnx").exists()


def test_inputs_that_disagree_on_the_batch_get_a_clear_error(tmp_path):
    from edgeseq.errors import InputError

    path = tmp_path / "t.onnx"
    export(_built(Translator), path)
    with pytest.raises(InputError, match=r"inputs disagree on 'batch': 'x' has 2 \(axis 0\), 'tgt' has 3"):
        Session(path, device="cpu").run({"x": np.zeros((2, 5), np.int64), "tgt": np.zeros((3, 4), np.int64)})
