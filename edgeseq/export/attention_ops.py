"""Multi-head attention in ops whose shapes name only the heads, written so TorchScript can compile it.

Imported by :mod:`edgeseq.export.attention` during exports only (it imports torch at load, and TorchScript
needs real annotations, hence no ``from __future__ import annotations`` here).  :func:`attention` is the
computation; :func:`module_forward` stands in for ``nn.MultiheadAttention.forward`` while a model that loops
over time in Python is scripted, since PyTorch's own forward compiles into branches the ONNX exporter
cannot translate.

>>> out, weights = attention(q, k, v, 4, w_q, w_k, w_v, b_q, b_k, b_v, w_o, b_o)   # doctest: +SKIP
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def attention(query: Tensor, key: Tensor, value: Tensor, num_heads: int, w_q: Tensor, w_k: Tensor, w_v: Tensor,
              b_q: Tensor | None, b_k: Tensor | None, b_v: Tensor | None, out_weight: Tensor,
              out_bias: Tensor | None, key_padding_mask: Tensor | None = None, need_weights: bool = True,
              attn_mask: Tensor | None = None,
              average_attn_weights: bool = True) -> tuple[Tensor, Tensor | None]:
    """What ``F.multi_head_attention_forward`` computes in eval mode, on time-first ``(length, batch, embed)``
    inputs: boolean masks mark what may not be attended to, float masks are added."""
    head_dim = out_weight.shape[0] // num_heads
    # (length, batch, embed) -> (batch, heads, length, head_dim)
    q = F.linear(query, w_q, b_q).unflatten(-1, (num_heads, head_dim)).permute(1, 2, 0, 3) * (float(head_dim) ** -0.5)
    k = F.linear(key, w_k, b_k).unflatten(-1, (num_heads, head_dim)).permute(1, 2, 0, 3)
    v = F.linear(value, w_v, b_v).unflatten(-1, (num_heads, head_dim)).permute(1, 2, 0, 3)
    scores = torch.matmul(q, k.transpose(-2, -1))  # (batch, heads, target, source)
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dim() == 2 else attn_mask.unflatten(0, (-1, num_heads))
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(mask, float("-inf"))
        else:
            scores = scores + mask.to(scores.dtype)
    if key_padding_mask is not None:  # (batch, source)
        pad = key_padding_mask.unsqueeze(1).unsqueeze(2)
        if pad.dtype == torch.bool:
            scores = scores.masked_fill(pad, float("-inf"))
        else:
            scores = scores + pad.to(scores.dtype)
    weights = torch.softmax(scores, dim=-1)
    out = F.linear(torch.matmul(weights, v).permute(2, 0, 1, 3).flatten(2), out_weight, out_bias)
    if not need_weights:
        return out, None
    if average_attn_weights:
        return out, weights.mean(dim=1)
    return out, weights


def module_forward(self: torch.nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor,
                   key_padding_mask: Tensor | None = None, need_weights: bool = True,
                   attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                   is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
    """``nn.MultiheadAttention.forward`` through :func:`attention` (``is_causal`` is a hint PyTorch ignores
    when ``attn_mask`` is given, as it must be for this module)."""
    if self.batch_first:
        query, key, value = query.transpose(1, 0), key.transpose(1, 0), value.transpose(1, 0)
    in_weight = self.in_proj_weight
    if in_weight is not None:
        w = in_weight.chunk(3)
        w_q, w_k, w_v = w[0], w[1], w[2]
    else:
        w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        assert w_q is not None and w_k is not None and w_v is not None
    b_q: Tensor | None = None
    b_k: Tensor | None = None
    b_v: Tensor | None = None
    in_bias = self.in_proj_bias
    if in_bias is not None:
        b = in_bias.chunk(3)
        b_q, b_k, b_v = b[0], b[1], b[2]
    out, weights = attention(query, key, value, self.num_heads, w_q, w_k, w_v, b_q, b_k, b_v, self.out_proj.weight,
                             self.out_proj.bias, key_padding_mask, need_weights, attn_mask, average_attn_weights)
    if self.batch_first:
        out = out.transpose(1, 0)
    return out, weights
