"""Models that take one sequence per call, no batch axis: PyTorch's LSTMTagger tutorial."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from edgeseq import Session
from edgeseq.cli import main
from edgeseq.errors import InputError
from edgeseq.export import export


class LSTMTagger(nn.Module):
    """'Sequence Models and Long Short-Term Memory Networks' (pytorch.org tutorials), as written."""

    def __init__(self, embedding_dim: int = 6, hidden_dim: int = 6, vocab_size: int = 9, tagset_size: int = 3) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.word_embeddings = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim)
        self.hidden2tag = nn.Linear(hidden_dim, tagset_size)

    def forward(self, sentence: torch.Tensor) -> torch.Tensor:
        embeds = self.word_embeddings(sentence)
        lstm_out, _ = self.lstm(embeds.view(len(sentence), 1, -1))
        tag_space = self.hidden2tag(lstm_out.view(len(sentence), -1))
        return F.log_softmax(tag_space, dim=1)


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    torch.manual_seed(0)
    model = LSTMTagger().eval()
    out = tmp_path_factory.mktemp("tagger") / "tagger.onnx"
    log: list[str] = []
    export(model, out, log=log.append)
    assert any("one sequence of token ids per call" in m for m in log)
    return model, out


def _tags(model, sentence):
    with torch.inference_mode():
        return model(torch.from_numpy(np.asarray(sentence))).numpy()


def test_the_tutorial_model_exports_without_flags_and_takes_any_length(tagger):
    model, path = tagger
    s = Session(path, device="cpu")
    assert list(s.inputs[0].shape) == ["seq"]
    for n in (1, 4, 33):
        sentence = np.arange(n) % 9
        np.testing.assert_allclose(s.predict(sentence)[0], _tags(model, sentence), atol=1e-5, rtol=1e-5)


def test_predict_runs_each_sentence_of_a_list_alone(tagger):
    model, path = tagger
    sentences = [np.array([1, 2, 3, 4]), np.array([5, 6])]
    got = Session(path, device="cpu").predict(sentences)
    assert got.shape == (2, 4, 3)
    np.testing.assert_allclose(got[1, :2], _tags(model, sentences[1]), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got[1, 2:], np.repeat(got[1, 1:2], 2, axis=0))  # padded with its last row


def test_a_padded_array_with_lengths_runs_each_sentence_cut_to_its_length(tagger):
    model, path = tagger
    s = Session(path, device="cpu")
    padded = np.array([[1, 2, 3, 4], [5, 6, 0, 0]])
    got = s.predict(padded, lengths=[4, 2])  # an eval set's layout: the padding is never tagged
    np.testing.assert_allclose(got[1, :2], _tags(model, padded[1, :2]), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="lengths must be 2 integers between 1 and the padded length 4"):
        s.predict(padded, lengths=[5, 2])


def test_lengths_and_wrong_ranks_get_clear_errors(tagger):
    _, path = tagger
    s = Session(path, device="cpu")
    with pytest.raises(InputError, match="one sequence per call"):
        s.predict([np.zeros(4, np.int64)], lengths=[4])
    with pytest.raises(InputError, match=r"takes one sequence per call, shape \[seq\]; got shape \(1, 2, 3\)"):
        s.predict(np.zeros((1, 2, 3), np.int64))
    with pytest.raises(InputError, match="no sequences given"):
        s.predict([])


def test_eval_sets_with_lengths_gate_and_check_a_one_sentence_model(tagger, tmp_path):
    model, path = tagger
    x = np.array([[1, 2, 3, 4], [5, 6, 0, 0], [7, 0, 0, 0]])
    lengths = np.array([4, 2, 1])
    y = np.full(x.shape, -100)
    for i, n in enumerate(lengths):
        y[i, :n] = _tags(model, x[i, :n]).argmax(-1)
    np.savez(tmp_path / "eval.npz", x=x, y=y, lengths=lengths)
    q = CliRunner().invoke(main, ["quantize", str(path), "-o", str(tmp_path / "q.onnx"), "--mode", "fp16",
                                  "--eval", str(tmp_path / "eval.npz")])
    assert q.exit_code == 0 and "accuracy float 1.0000" in q.output, q.output
    c = CliRunner().invoke(main, ["check", str(path), "--against", f"{__file__}:_tagger", "--lengths", "3",
                                  "--eval", str(tmp_path / "eval.npz")])
    assert c.exit_code == 0 and "accuracy PyTorch 1.0000 vs ONNX 1.0000" in c.output, c.output


def _tagger() -> nn.Module:
    torch.manual_seed(0)
    return LSTMTagger().eval()


def test_infer_jsonl_tags_each_line(tagger, tmp_path):
    model, path = tagger
    src = tmp_path / "s.jsonl"
    src.write_text("[1, 2, 3]\n[4, 5, 6, 7, 8]\n")
    result = CliRunner().invoke(main, ["infer", str(path), "--input", str(src)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2
    np.testing.assert_allclose(np.array(rows[1]), _tags(model, [4, 5, 6, 7, 8]), atol=1e-5, rtol=1e-5)
