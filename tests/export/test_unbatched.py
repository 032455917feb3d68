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


def test_lengths_and_wrong_ranks_get_clear_errors(tagger):
    _, path = tagger
    s = Session(path, device="cpu")
    with pytest.raises(InputError, match="one sequence per call"):
        s.predict(np.zeros((2, 4), np.int64), lengths=[4, 2])
    with pytest.raises(InputError, match=r"takes one sequence per call, shape \[seq\]; got shape \(1, 2, 3\)"):
        s.predict(np.zeros((1, 2, 3), np.int64))


def test_infer_jsonl_tags_each_line(tagger, tmp_path):
    model, path = tagger
    src = tmp_path / "s.jsonl"
    src.write_text("[1, 2, 3]\n[4, 5, 6, 7, 8]\n")
    result = CliRunner().invoke(main, ["infer", str(path), "--input", str(src)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2
    np.testing.assert_allclose(np.array(rows[1]), _tags(model, [4, 5, 6, 7, 8]), atol=1e-5, rtol=1e-5)
