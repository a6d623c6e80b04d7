"""Max aggregation of per-edge messages whose backward reuses what its forward found."""

from __future__ import annotations

import torch
from torch import Tensor


class _ScatterMax(torch.autograd.Function):
    """``out[v, c] = max of src[e, c] over the edges e with index[e] == v`` (0 for a
    vertex without edges). The forward keeps which messages reached their vertex's
    maximum, so the backward is one gather and one mask: each vertex's gradient goes to
    its maximal messages. Autograd's own backward of ``scatter_reduce`` recomputes that
    comparison and counts ties to split the gradient among them; a tie between messages
    of float values is rare, and ties at the zero a ReLU gives carry no gradient."""

    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, size: int) -> Tensor:
        out = src.new_zeros((size, src.shape[1])).scatter_reduce_(
            0, index.unsqueeze(1).expand_as(src), src, "amax", include_self=False)
        # 1.0 where a message is its vertex's maximum, as floats: written by the
        # comparison directly and multiplied in the backward, both cheaper than with bools
        is_max = torch.eq(src, out.index_select(0, index), out=torch.empty_like(src))
        ctx.save_for_backward(index, is_max)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        index, is_max = ctx.saved_tensors
        return grad.index_select(0, index).mul_(is_max), None, None


def scatter_max(src: Tensor, index: Tensor, size: int) -> Tensor:
    """[size, C]: per target vertex, the channel-wise maximum of the messages ``src``
    [E, C] sent to it along ``index`` [E]; 0 where none arrives (as PyG's ``max``)."""
    return _ScatterMax.apply(src, index, size)
