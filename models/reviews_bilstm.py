"""Rotten Tomatoes review snippets, fresh vs rotten: Embedding + bidirectional LSTM.

Input: int64 token ids (batch, seq), right-padded with 0 (id 0 = padding, 1 = unknown word),
from :func:`encode`. Output: logits (batch, 2) for ("rotten", "fresh").

Tokenisation cannot live in the graph, so :func:`encode` (pure Python + numpy) maps texts to ids
with the committed vocabulary ``models/checkpoints/reviews_vocab.json``.

``forward(x, lengths=None)``: with ``lengths`` the padding is skipped with
``pack_padded_sequence`` (PyTorch path); without it the whole input is read, which is exact for
unpadded input. The head reads the LSTM's final states ``h_n`` (forward: last valid token,
backward: first token), ready for ONNX ``sequence_lens``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.common import CHECKPOINT_DIR, finish

NAME = "reviews_bilstm"
CLASSES = ("rotten", "fresh")
VOCAB_PATH = CHECKPOINT_DIR / "reviews_vocab.json"
PAD, UNK = 0, 1
MAX_LEN = 64
TOKEN_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[!?]")


def tokenize(text: str) -> list[str]:
    """Lower-case words (keeping inner apostrophes: "isn't") plus ! and ?."""
    return TOKEN_RE.findall(text.lower())


@lru_cache(maxsize=1)
def load_vocab() -> dict[str, int]:
    """token -> id from ``reviews_vocab.json`` (ids 2.. in the order of its ``tokens`` list)."""
    with open(VOCAB_PATH, encoding="utf-8") as f:
        data = json.load(f)
    return {tok: i + 2 for i, tok in enumerate(data["tokens"])}


def encode(texts: list[str], max_len: int = MAX_LEN,
           vocab: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (ids int64 (n, longest), lengths int64 (n,)). Right-padded with 0; words not in the
    vocabulary map to 1; at most ``max_len`` tokens are kept; an empty text becomes ``[1]``."""
    vocab = load_vocab() if vocab is None else vocab
    seqs = [[vocab.get(t, UNK) for t in tokenize(s)][:max_len] or [UNK] for s in texts]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ids = np.zeros((len(seqs), int(lengths.max()) if len(seqs) else 0), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    return ids, lengths


class ReviewsBiLSTM(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_size: int = 64,
                 num_classes: int = 2, dropout: float = 0.5):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(embed_dim, hidden_size, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden_size, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        e = self.dropout(self.embed(x))
        if lengths is not None:
            e = pack_padded_sequence(e, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(e)  # h: (2, batch, hidden) = [forward final, backward final]
        return self.head(self.dropout(torch.cat([h[-2], h[-1]], dim=-1)))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        return (torch.randint(2, self.embed.num_embeddings, (2, 20), generator=g),)


def vocab_size() -> int:
    return len(load_vocab()) + 2


def build(pretrained: bool = True) -> ReviewsBiLSTM:
    return finish(ReviewsBiLSTM(vocab_size()), NAME, pretrained)
