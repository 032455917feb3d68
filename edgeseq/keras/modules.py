"""PyTorch modules that reproduce Keras layers exactly, in Keras's layout (batch-first, channels-last).

Every module here exports to ONNX with both torch exporters and keeps the batch and
sequence axes dynamic; recurrent layers become native ONNX ``LSTM``/``GRU``/``RNN``
nodes (see :mod:`.onnx_rnn` for the settings only the TorchScript exporter handles).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Lambda(nn.Module):
    """A parameter-free function as a module (activations, merges, reshapes)."""

    def __init__(self, fn: Callable[..., torch.Tensor], label: str) -> None:
        super().__init__()
        self.fn = fn
        self.label = label

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)

    def extra_repr(self) -> str:
        return self.label


class HardSigmoid(nn.Module):
    """``clip(alpha * x + beta, 0, 1)`` (Keras 3: alpha=1/6; Keras 2: alpha=0.2)."""

    def __init__(self, alpha: float, beta: float = 0.5) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * self.alpha + self.beta, 0.0, 1.0)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}"


class Recurrent(nn.Module):
    """A Keras LSTM/GRU/SimpleRNN (optionally Bidirectional) on a batch-first torch RNN.

    ``rnn`` is an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (or :class:`OnnxRNN`) with
    ``batch_first=True`` and one layer; ``merge_mode`` is set for Bidirectional.
    """

    def __init__(
        self,
        rnn: nn.Module,
        *,
        return_sequences: bool,
        go_backwards: bool = False,
        merge_mode: str | None = None,
    ) -> None:
        super().__init__()
        self.rnn = rnn
        self.return_sequences = return_sequences
        self.go_backwards = go_backwards
        self.merge_mode = merge_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.go_backwards:
            x = torch.flip(x, [1])
        y, _ = self.rnn(x)
        if self.merge_mode is None:
            return y if self.return_sequences else y[:, -1]
        h = self.rnn.hidden_size
        if self.return_sequences:
            if self.merge_mode == "concat":
                return y
            fwd, bwd = y[..., :h], y[..., h:]
        else:
            fwd, bwd = y[:, -1, :h], y[:, 0, h:]
            if self.merge_mode == "concat":
                return torch.cat([fwd, bwd], dim=-1)
        if self.merge_mode == "sum":
            return fwd + bwd
        if self.merge_mode == "mul":
            return fwd * bwd
        return (fwd + bwd) * 0.5  # "ave"

    def extra_repr(self) -> str:
        parts = [f"return_sequences={self.return_sequences}"]
        if self.go_backwards:
            parts.append("go_backwards=True")
        if self.merge_mode:
            parts.append(f"merge_mode={self.merge_mode!r}")
        return ", ".join(parts)


class ChannelsLast(nn.Module):
    """Run a channels-first ``nn.Conv1d``/pooling on a (B, T, C) tensor, with explicit padding."""

    def __init__(
        self,
        op: nn.Module,
        pad: tuple[int, int] = (0, 0),
        pad_value: float = 0.0,
        channels_first: bool = False,
    ) -> None:
        super().__init__()
        self.op = op
        self.pad = pad
        self.pad_value = pad_value
        self.channels_first = channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_first:
            x = x.transpose(1, 2)
        if self.pad != (0, 0):
            x = F.pad(x, self.pad, value=self.pad_value)
        y = self.op(x)
        return y if self.channels_first else y.transpose(1, 2)

    def extra_repr(self) -> str:
        return f"pad={self.pad}" + (", channels_first=True" if self.channels_first else "")


class TimeDistributed(nn.Module):
    """Apply ``inner`` to every time step: (B, T, ...) -> (B*T, ...) -> (B, T, ...)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[1]
        y = self.inner(x.flatten(0, 1))
        return y.reshape((b, t) + tuple(y.shape[1:]))


class Embedding(nn.Module):
    """Keras Embedding: token ids (any int or float dtype, cast like Keras) -> vectors."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(weight, freeze=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.int64:
            x = x.to(torch.int64)
        return self.embed(x)


class Affine(nn.Module):
    """``x * scale + shift`` on the last axis (inference-time BatchNormalization)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class Graph(nn.Module):
    """A Keras Sequential/functional model: ``layers`` run in ``plan`` order on one input.

    ``plan[k] = (layer_index, input_slots, as_list)``; slot 0 is the model input and
    slot ``k + 1`` the output of step ``k``; ``as_list`` passes the inputs as one list
    (merge layers).  ``output`` is the slot returned.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        plan: Sequence[tuple[int, tuple[int, ...], bool]],
        output: int,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.plan = [tuple(p) for p in plan]
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slots = [x]
        for idx, ins, as_list in self.plan:
            layer = self.layers[idx]
            args = [slots[i] for i in ins]
            slots.append(layer(args) if as_list else layer(*args))
        return slots[self.output]
