"""Fixtures for the robustness suite: a tiny float model, helpers to run the CLI and to build bad files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import robust_helpers`


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A GRU over (batch, seq, 4) features with 2 outputs: small enough for million-sample jobs."""
    import torch
    from torch import nn

    from edgeseq.export import export

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(4, 8, batch_first=True)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, h = self.gru(x)
            return self.head(h[-1])

        def example_inputs(self) -> tuple[torch.Tensor, ...]:
            return (torch.randn(2, 8, 4),)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Tiny()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export(model, path, exporter="torchscript")
    return path
