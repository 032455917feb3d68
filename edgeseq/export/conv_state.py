"""Causal ``nn.Conv1d`` layers over time, streamed by carrying their left context as state.

A convolution over time with kernel ``k`` and dilation ``d`` reads the ``(k-1)*d`` steps before each
output step.  When those steps come from zero padding on the left only, the convolution is causal and
a stream can carry them: each chunk is convolved together with the previous chunk's last
``(k-1)*d`` input steps (zeros at the start, which is exactly the padding).  Two ways of writing a
causal convolution are recognised (the streaming check, chunk by chunk against PyTorch on the
whole sequence, has the last word in both cases):

* ``"left-pad"``: ``nn.Conv1d(padding=0)`` fed by ``F.pad(x, ((k-1)*d, 0))``: in a stream, the
  padded steps are replaced by the carried ones;
* ``"chomp"``: ``nn.Conv1d(padding=(k-1)*d)`` whose last ``(k-1)*d`` outputs the model drops
  (``y[..., :-(k-1)*d]``, as temporal convolutional networks do): in a stream, the convolution runs
  unpadded after the carried steps and hands back ``(k-1)*d`` placeholder steps for the model to drop;
* ``"self-causal"``: an ``nn.Conv1d`` subclass that pads or crops in its own ``forward`` (the WaveNet
  ``CausalConv1d``), recognised by its output: the same as the convolution of its input padded with
  ``(k-1)*d`` zeros on the left.  In a stream it runs unpadded after the carried steps.

A centred ("same") convolution reads future steps and cannot stream; neither can a strided one.
The carried input ``(batch, channels, context)`` travels in the recurrent states' layout
``(1, batch, channels * context)``, so the runtime carries it like any other state.

>>> conv_layers(model, examples, longer, batch=2)          # doctest: +SKIP
[ConvLayer(name='conv', kind='conv1d', channels=6, context=2, mode='left-pad', ...)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ConvLayer:
    """One time convolution whose left context the streaming graph carries (duck-types RecurrentLayer)."""

    name: str
    module: Any
    channels: int  # input channels
    context: int  # (kernel - 1) * dilation: input steps each output step looks back
    mode: str  # "left-pad" | "chomp" | "self-causal"
    kind: str = "conv1d"
    num_layers: int = 1
    calls: int = 0

    @property
    def hidden_size(self) -> int:
        return self.channels * self.context

    @property
    def state_names(self) -> list[str]:
        return ["x"]

    def state_size(self, which: str) -> int:
        return self.hidden_size

    def io_name(self, which: str, direction: str) -> str:
        return f"{self.name}.{which}_{direction}"

    def example_state(self, batch: int) -> list[Any]:
        import torch

        g = torch.Generator().manual_seed(2)
        return [0.1 * torch.randn((1, batch, self.hidden_size), generator=g)]

    def to_card(self, parts: dict[str, list[tuple[str, str]]] | None = None) -> dict[str, Any]:
        state = {"name": "x", "input": self.io_name("x", "in"), "output": self.io_name("x", "out"),
                 "shape": [1, "batch", self.hidden_size], "batch_axis": 1}
        return {"name": self.name, "kind": self.kind, "num_layers": 1, "hidden_size": self.hidden_size,
                "channels": self.channels, "context": self.context, "mode": self.mode, "states": [state]}

    def step(self, input: Any, state: Any, lengths: Any = None) -> tuple[Any, Any]:
        """(output for this chunk, new state) from the conv's input and the carried ``(1, batch, C*context)``.

        With ``lengths`` (steps of the chunk each sample really has), a sample's new context is the
        ``context`` steps before its own end, not before the chunk's.
        """
        import torch
        import torch.nn.functional as F

        conv, ctx = self.module, self.context
        carried = state.reshape(-1, self.channels, ctx)
        fresh = input[..., ctx:] if self.mode == "left-pad" else input  # left-pad: drop the zero padding
        x = torch.cat([carried, fresh], dim=-1)
        out = F.conv1d(x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
        if self.mode == "chomp":  # placeholders for the steps the model drops after the convolution
            out = torch.cat([out, out.new_zeros(out.shape[0], out.shape[1], ctx)], dim=-1)
        if lengths is None:
            tail = x[..., -ctx:]
        else:  # x holds ctx carried steps, then the chunk: sample b's last ctx valid steps start at lengths[b]
            index = lengths.reshape(-1, 1, 1) + torch.arange(ctx, dtype=lengths.dtype).reshape(1, 1, -1)
            tail = torch.gather(x, 2, index.expand(x.shape[0], x.shape[1], ctx))
        return out, tail.reshape(1, -1, self.hidden_size)


def conv_layers(model: Any, examples: list[Any], longer: list[Any], batch: int) -> tuple[list[ConvLayer], list[str]]:
    """(the ``nn.Conv1d`` layers over time with a causal-looking padding, the other layers that mix time steps).

    A layer works over time when its input's last axis follows the sequence length (``examples`` vs
    ``longer``, the same inputs a few steps longer) and its first is the batch; a convolution's
    padding says which causal form it may be (see the module docstring).  Pointwise convolutions
    (kernel 1) need no context; the rest (centred or strided convolutions, pooling over time) are
    returned by name for the streaming check's refusal to point at.
    """
    import torch

    from .lengths import TIME_MIXING, layer_kind

    watched = {name: m for name, m in model.named_modules() if layer_kind(m) in TIME_MIXING}
    if not watched:
        return [], []
    seen: dict[str, list[tuple[int, ...]]] = {name: [] for name in watched}
    hooks = [m.register_forward_pre_hook(lambda _m, args, name=name: seen[name].append(tuple(args[0].shape)))
             for name, m in watched.items()]
    try:
        with torch.inference_mode():
            model(*examples)
            model(*longer)
    finally:
        for h in hooks:
            h.remove()
    layers, others = [], []
    for name, m in watched.items():
        shapes = seen[name]
        if len(shapes) != 2 or shapes[0][0] != batch:
            continue  # not once per forward: e.g. inside each time step
        if shapes[0][-1] == shapes[1][-1]:
            if _two_d_over_time(m, shapes):  # a Conv2d/pooling over (batch, channels, time, bins): no carried context
                others.append(f"'{name}' ({type(m).__name__}, 2-D over time: only a causal nn.Conv1d streams)")
            continue  # time is not its last axis
        mode, context = _causal_form(m)
        if mode:
            layers.append(ConvLayer(name, m, m.in_channels, context, mode))
        elif context:
            own = type(m).__name__  # a user's subclass by its own name; weight_norm's wrapper by what it wraps
            others.append(f"'{name}' ({layer_kind(m) if own.startswith('Parametrized') else own})")
    return layers, others


def _two_d_over_time(m: Any, shapes: list[tuple[int, ...]]) -> bool:
    """A 2-D convolution or pooling whose kernel or stride spans more than one step of the axis that follows
    the sequence length (its input's other axes stay)."""
    kind = type(m).__name__
    if not (kind.endswith("2d") and ("Conv" in kind or "Pool" in kind)) or len(shapes[0]) != 4:
        return False
    changed = [a for a in (2, 3) if shapes[0][a] != shapes[1][a]]
    if len(changed) != 1:
        return False
    i = changed[0] - 2

    def along(value: Any) -> int:
        return int(value[i] if isinstance(value, (tuple, list)) else value)

    return along(getattr(m, "kernel_size", 1)) > 1 or along(getattr(m, "stride", 1) or 1) > 1


def _causal_form(m: Any) -> tuple[str | None, int]:
    """("left-pad" | "chomp" | None, context steps) of a layer over time; (None, 0) when it needs no context."""
    import torch.nn as nn

    if not isinstance(m, nn.Conv1d):
        return None, 1  # pooling (or a 2-D or transposed convolution) over time: mixes steps, no causal form
    context = (m.kernel_size[0] - 1) * m.dilation[0]
    if context == 0 and m.stride[0] == 1:
        return None, 0
    if type(m).forward is not nn.Conv1d.forward:  # a subclass that pads or crops in its own forward
        return ("self-causal", context) if m.stride[0] == 1 and _is_left_padded(m, context) else (None, max(context, 1))
    if m.stride[0] != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return None, max(context, 1)
    pad = m.padding[0]
    return ("left-pad" if pad == 0 else "chomp" if pad == context else None), context


def _is_left_padded(m: Any, context: int) -> bool:
    """Whether ``m``'s own forward computes the convolution of its input padded with ``context`` zeros on the
    left (and nothing else), on a random input."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, m.in_channels, 2 * context + 5, generator=g)
    try:
        with torch.inference_mode():
            got = m(x)
            want = F.conv1d(F.pad(x, (context, 0)), m.weight, m.bias, 1, 0, m.dilation, m.groups)
    except Exception:  # noqa: BLE001 - a forward that wants other inputs is not this form
        return False
    return isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(got, want, atol=1e-5, rtol=1e-4)
