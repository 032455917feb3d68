"""``nn.LSTM(proj_size=...)`` exported as an ONNX ``Loop``: ONNX's ``LSTM`` operator has no projection.

The TorchScript exporter refuses a projected LSTM and the dynamo exporter writes an ``LSTM`` node
without its projection, which ONNX Runtime then rejects.  Before exporting, edgeseq swaps each
projected LSTM for :func:`projected_lstm`'s module: the same weights, the input projection of every step in
one MatMul, and the recurrence in a scripted loop over time that the TorchScript exporter writes as
an ONNX ``Loop`` whose trip count is the input's length (no frozen length).  The parity gate then
compares the file with the original ``nn.LSTM``.  A loop runs slower than a native node (each step
is a small subgraph), and it is used only where no native node can express the layer.

>>> export_model = with_projected_lstms(model)                  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import UnsupportedModelError


@functools.lru_cache(maxsize=1)
def _direction() -> Callable[..., Any]:
    """One direction of one layer, scripted so the exporter keeps its loop over time (compiled on first use)."""
    import torch

    # gx is time-major (T, batch, 4*hidden): gx[t] exports as a Gather of one step; indexing the time axis of a
    # batch-first tensor exported as a Slice that copied the whole tensor at every step (179 vs 27 ms at batch 64 x 100, one-off)
    def run(gx: torch.Tensor, w_hh: torch.Tensor, w_hr: torch.Tensor, h: torch.Tensor, c: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steps: list[torch.Tensor] = []
        for t in range(gx.size(0)):
            z = gx[t] + torch.matmul(h, w_hh)
            i, f, g, o = z.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.matmul(torch.sigmoid(o) * torch.tanh(c), w_hr)
            steps.append(h)
        return torch.stack(steps, 0), h, c

    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.13, and still the exporter's way to a Loop
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(run)


def projected_lstm(lstm: Any) -> Any:
    """A module computing what ``lstm`` (an ``nn.LSTM`` with ``proj_size > 0``, in eval mode) computes."""
    import torch
    import torch.nn as nn

    class ProjectedLSTM(nn.Module):
        """forward(x, hx=None) -> (output, (h_n, c_n)), as nn.LSTM; the weights are buffers (no training)."""

        def __init__(self) -> None:
            super().__init__()
            self.num_layers, self.hidden, self.proj = lstm.num_layers, lstm.hidden_size, lstm.proj_size
            self.dirs = 2 if lstm.bidirectional else 1
            self.batch_first = lstm.batch_first
            # what the streaming export reads off a recurrent layer
            self.hidden_size, self.proj_size, self.bidirectional = lstm.hidden_size, lstm.proj_size, lstm.bidirectional
            self.is_projected_lstm = True
            with torch.no_grad():
                for layer in range(self.num_layers):
                    for d in range(self.dirs):
                        sfx = f"_l{layer}" + ("_reverse" if d else "")
                        bias = (getattr(lstm, "bias_ih" + sfx) + getattr(lstm, "bias_hh" + sfx) if lstm.bias
                                else torch.zeros(4 * self.hidden))
                        key = f"l{layer}d{d}"
                        self.register_buffer(key + "_ih", getattr(lstm, "weight_ih" + sfx).t().contiguous())
                        self.register_buffer(key + "_hh", getattr(lstm, "weight_hh" + sfx).t().contiguous())
                        self.register_buffer(key + "_b", bias.clone())
                        self.register_buffer(key + "_hr", getattr(lstm, "weight_hr" + sfx).t().contiguous())

        def forward(self, x: Any, hx: Any = None) -> Any:
            if self.batch_first:
                x = x.transpose(0, 1)  # time-major inside: (T, batch, features)
            batch = x.size(1)
            hs, cs, inp = [], [], x
            for layer in range(self.num_layers):
                outs = []
                for d in range(self.dirs):
                    key, k = f"l{layer}d{d}", layer * self.dirs + d
                    gx = torch.matmul(inp, getattr(self, key + "_ih")) + getattr(self, key + "_b")
                    h0 = hx[0][k] if hx is not None else x.new_zeros(batch, self.proj)
                    c0 = hx[1][k] if hx is not None else x.new_zeros(batch, self.hidden)
                    if d == 1:  # the backward direction: the same loop over the reversed sequence
                        gx = gx.flip(0)
                    out, h, c = _direction()(gx, getattr(self, key + "_hh"), getattr(self, key + "_hr"), h0, c0)
                    outs.append(out.flip(0) if d == 1 else out)
                    hs.append(h)
                    cs.append(c)
                inp = torch.cat(outs, 2) if self.dirs == 2 else outs[0]
            out = inp.transpose(0, 1) if self.batch_first else inp
            return out, (torch.stack(hs, 0), torch.stack(cs, 0))

    return ProjectedLSTM().eval()


def projected_lstm_names(model: Any) -> list[str]:
    """Names of the model's ``nn.LSTM`` layers with ``proj_size > 0``."""
    import torch.nn as nn

    return [n for n, m in model.named_modules() if isinstance(m, nn.LSTM) and getattr(m, "proj_size", 0)]


def with_projected_lstms(model: Any, log: Callable[[str], None] | None = None) -> Any:
    """``model`` itself when it has no projected LSTM, else a copy with each one swapped for :func:`projected_lstm`."""
    names = projected_lstm_names(model)
    if not names:
        return model
    try:
        clone = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - a model holding something that cannot be copied
        raise UnsupportedModelError(f"layer '{names[0]}' is nn.LSTM(proj_size=...), which edgeseq exports by "
                                    f"rewriting a copy of the model, and the model cannot be copied ({exc})") from None
    if names == [""]:  # the model is the projected LSTM itself
        clone = projected_lstm(clone)
    for name in [n for n in names if n]:
        parent_name, _, attr = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        setattr(parent, attr, projected_lstm(getattr(parent, attr)))
    if log:
        log(f"projected LSTM(s) {', '.join(repr(n or type(model).__name__) for n in names)}: exported as an ONNX Loop over time (ONNX's LSTM "
            "operator has no projection); slower than a native LSTM node")
    return clone
