"""Fixtures for the quantization tests: small exported models and eval sets labelled by the float model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def labelled_eval_set(model_path: Path, out: Path, n: int = 256, length: int = 20, seed: int = 1) -> Path:
    """Random inputs labelled with the float ONNX model's own predictions (its accuracy is 1.0).

    A random-weight model puts many random inputs near a decision boundary, where any rounding flips the
    class (measured: ~1% of them under per-channel INT8), unlike a trained model's confident predictions.
    So draw 4n inputs and keep the n with the clearest top-1 margin: the gate then measures whether the
    quantized model still computes the same function, which per-tensor INT8 of the outlier model does not.
    """
    from edgeseq.export.parity import spec_of_session
    from edgeseq.runtime.session import Session

    session = Session(model_path, device="cpu")
    x = spec_of_session(session).random(4 * n, length, seed=seed)[0]
    logits = session.predict(x)
    top2 = np.sort(logits, axis=-1)[:, -2:]
    keep = np.sort(np.argsort(top2[:, 1] - top2[:, 0])[-n:])
    np.savez(out, x=x[keep], y=logits[keep].argmax(-1))
    return out


@pytest.fixture(scope="session")
def make_eval_set():
    """make_eval_set(model_path, out_path) -> out_path: an eval set labelled by the float model."""
    return labelled_eval_set


@pytest.fixture(scope="session")
def outlier_lstm(tmp_path_factory):
    """A stacked LSTM with one huge input weight: per-tensor INT8 rounds every other weight of that
    matrix to zero (accuracy collapses), per-channel INT8 keeps them.  Returns (onnx path, eval set, model)."""
    import torch

    from edgeseq.export import export
    from models.families import FAMILIES

    model = FAMILIES["stacked_lstm"]()
    with torch.no_grad():
        model.head.weight.mul_(30)  # spread the float model's predictions over several classes
        model.head.bias.zero_()
        w = model.lstm.weight_ih_l0
        w[0, 0] = 1000 * w.abs().max()
    folder = tmp_path_factory.mktemp("outlier")
    path = folder / "outlier.onnx"
    export(model, path)
    return path, labelled_eval_set(path, folder / "eval.npz"), model
