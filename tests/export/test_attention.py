"""nn.MultiheadAttention after (or before) a recurrent layer exports with its lengths dynamic.

Both torch.onnx exporters write PyTorch's own attention at the example's length (pytorch#120075): the
file failed at every other length, and edgeseq refused it as "frozen".
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgeseq import Session
from edgeseq.export import export
from edgeseq.export.attention import exportable_attention


class LSTMAttention(nn.Module):
    """LSTM, self-attention over its outputs, mean over time: the 'LSTM + attention' classifier."""

    def __init__(self, batch_first: bool = True, weights: bool = False, per_head: bool = False) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 32, batch_first=True)
        self.mha = nn.MultiheadAttention(32, 4, batch_first=batch_first)
        self.fc = nn.Linear(32, 3)
        self.batch_first, self.weights, self.per_head = batch_first, weights, per_head

    def forward(self, x):
        h, _ = self.lstm(x)
        h = h if self.batch_first else h.transpose(0, 1)
        a, w = self.mha(h, h, h, need_weights=self.weights, average_attn_weights=not self.per_head)
        a = a if self.batch_first else a.transpose(0, 1)
        y = self.fc(a.mean(1))
        return (y, w) if self.weights else y


class CausalAttention(nn.Module):
    """Attention that looks back only (a causal mask built from the length), then a GRU."""

    def __init__(self, float_mask: bool = False) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.float_mask = float_mask

    def forward(self, x):
        t = x.size(1)
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        if self.float_mask:
            mask = torch.zeros(t, t).masked_fill(mask, float("-inf"))
        a, _ = self.mha(x, x, x, attn_mask=mask, need_weights=False)
        return self.gru(a)[0]


class CrossAttention(nn.Module):
    """Key/value of another size (kdim/vdim: separate projections) from a static memory input."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.mha = nn.MultiheadAttention(16, 2, kdim=5, vdim=6, batch_first=True)

    def forward(self, x, memory):
        h, _ = self.lstm(x)
        return self.mha(h, memory[..., :5], memory, need_weights=False)[0]

    def example_inputs(self):
        return torch.randn(2, 9, 8), torch.randn(2, 4, 6)


class Encoder(nn.Module):
    """A transformer encoder layer before a GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2)
        self.gru = nn.GRU(16, 16, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.gru(self.enc(self.inp(x)))[0][:, -1])


def _check(model: nn.Module, path, lengths=(1, 5, 23), exporter: str = "torchscript") -> None:
    export(model, path, exporter=exporter)
    s = Session(path, device="cpu")
    rng = np.random.default_rng(0)
    for n in lengths:
        feed = {"x": rng.standard_normal((3, n, 8)).astype(np.float32)}
        if len(s.data_inputs()) > 1:
            feed["memory"] = rng.standard_normal((3, 4, 6)).astype(np.float32)
        got = s.run(feed)
        with torch.inference_mode():
            want = model(*[torch.from_numpy(a) for a in feed.values()])
        want = want if isinstance(want, tuple) else (want,)
        for g, w in zip(got.values(), want):
            np.testing.assert_allclose(g, w.numpy(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs", [{}, {"batch_first": False}, {"weights": True}, {"weights": True, "per_head": True}],
                         ids=["batch-first", "time-first", "with-weights", "per-head-weights"])
def test_lstm_attention_runs_at_every_length(tmp_path, kwargs):
    torch.manual_seed(0)
    _check(LSTMAttention(**kwargs).eval(), tmp_path / "m.onnx")


@pytest.mark.parametrize("float_mask", [False, True], ids=["bool-mask", "float-mask"])
def test_causal_masks_built_from_the_length_stay_dynamic(tmp_path, float_mask):
    torch.manual_seed(0)
    _check(CausalAttention(float_mask).eval(), tmp_path / "m.onnx")


def test_cross_attention_with_its_own_key_and_value_sizes(tmp_path):
    torch.manual_seed(0)
    _check(CrossAttention().eval(), tmp_path / "m.onnx")


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_transformer_encoder_layers_before_a_gru(tmp_path, exporter):
    torch.manual_seed(0)
    _check(Encoder().eval(), tmp_path / "m.onnx", exporter=exporter)


def test_the_swap_computes_what_pytorch_does_and_is_undone():
    """Padding masks too (not reachable from a one-input export), and PyTorch's function comes back after."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(3, 7, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    original = F.multi_head_attention_forward
    with torch.inference_mode():
        want = mha(x, x, x, key_padding_mask=pad)
        with exportable_attention():
            assert F.multi_head_attention_forward is not original
            assert not torch.backends.mha.get_fastpath_enabled()
            got = mha(x, x, x, key_padding_mask=pad)
    assert F.multi_head_attention_forward is original and torch.backends.mha.get_fastpath_enabled()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)


class PaddedAttention(nn.Module):
    """forward(x, lengths): padded keys masked out of the attention (key_padding_mask) and of the mean."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 32, batch_first=True)
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
        self.fc = nn.Linear(32, 3)

    def forward(self, x, lengths):
        h, _ = self.lstm(x)
        pad = torch.arange(x.size(1))[None, :] >= lengths[:, None]
        a, _ = self.mha(h, h, h, key_padding_mask=pad)
        return self.fc(a.masked_fill(pad[..., None], 0.0).sum(1) / lengths[:, None].float())


def test_a_padding_mask_from_lengths_gives_each_sample_its_own_answer(tmp_path):
    torch.manual_seed(0)
    model = PaddedAttention().eval()
    export(model, tmp_path / "m.onnx")
    s = Session(tmp_path / "m.onnx", device="cpu")
    assert [i.name for i in s.inputs] == ["x", "lengths"]
    seqs = [np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32) for n in (3, 11, 6)]
    got = s.predict(seqs)  # padded to 11, with their lengths
    for i, seq in enumerate(seqs):
        with torch.inference_mode():
            alone = model(torch.from_numpy(seq[None]), torch.tensor([len(seq)])).numpy()
        np.testing.assert_allclose(got[i], alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit deprecating itself
def test_a_scripted_file_with_attention_points_to_the_python_model(tmp_path):
    from click.testing import CliRunner

    from edgeseq.cli import main

    class Scriptable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(8, 32, batch_first=True)
            self.mha = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, _ = self.lstm(x)
            return self.mha(h, h, h)[0]

    torch.manual_seed(0)
    torch.jit.script(Scriptable().eval()).save(str(tmp_path / "m.pt"))
    result = CliRunner().invoke(main, ["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "nn.MultiheadAttention is compiled code" in result.stderr and "--weights" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_a_transformer_decoder_over_gru_memory_keeps_both_lengths(tmp_path):
    """Cross-attention from target tokens to an encoder's memory, each sequence with a length of its own."""

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.GRU(8, 32, batch_first=True)
            self.emb = nn.Embedding(20, 32)
            self.dec = nn.TransformerDecoderLayer(32, 4, 64, batch_first=True)
            self.out = nn.Linear(32, 20)

        def forward(self, src, tgt):
            memory, _ = self.enc(src)
            causal = torch.ones(tgt.size(1), tgt.size(1), dtype=torch.bool).triu(1)
            return self.out(self.dec(self.emb(tgt), memory, tgt_mask=causal))

        def example_inputs(self):
            return torch.randn(2, 11, 8), torch.randint(0, 20, (2, 6))

    torch.manual_seed(0)
    model = Decoder().eval()
    export(model, tmp_path / "m.onnx")
    s = Session(tmp_path / "m.onnx", device="cpu")
    assert [list(i.shape) for i in s.inputs] == [["batch", "seq", 8], ["batch", "tgt_seq"]]
    rng = np.random.default_rng(0)
    for src_len, tgt_len in ((3, 9), (17, 2)):
        src, tgt = rng.standard_normal((2, src_len, 8)).astype(np.float32), rng.integers(0, 20, (2, tgt_len))
        with torch.inference_mode():
            want = model(torch.from_numpy(src), torch.from_numpy(tgt)).numpy()
        np.testing.assert_allclose(s.run({"x": src, "tgt": tgt})["y"], want, atol=1e-5, rtol=1e-4)


def test_a_python_loop_then_attention_exports_scripted(tmp_path):
    """A cell stepped in Python (scripted into an ONNX Loop) feeding attention: PyTorch's own attention compiles
    into branches the ONNX exporter rejects ('is_autocast_enabled'); edgeseq's compiles into plain ops."""

    class LoopThenAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.LSTMCell(8, 32)
            self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
            self.fc = nn.Linear(32, 3)

        def forward(self, x):
            h, c = x.new_zeros(x.size(0), 32), x.new_zeros(x.size(0), 32)
            steps = []
            for t in range(x.size(1)):
                h, c = self.cell(x[:, t], (h, c))
                steps.append(h)
            hs = torch.stack(steps, 1)
            return self.fc(self.mha(hs, hs, hs)[0].mean(1))

    torch.manual_seed(0)
    _check(LoopThenAttention().eval(), tmp_path / "m.onnx")
    assert "loops" in Session(tmp_path / "m.onnx", device="cpu").card  # exported scripted, as an ONNX Loop
    assert nn.MultiheadAttention.forward.__module__ == "torch.nn.modules.activation"  # PyTorch's forward is back
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecating itself
        later = torch.jit.script(nn.MultiheadAttention(8, 2))  # the user's own scripting, later in the process
    assert "_native_multi_head_attention" in later.code  # compiled from PyTorch's forward, not edgeseq's
