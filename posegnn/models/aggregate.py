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


class _NormMaxRelu(torch.autograd.Function):
    """``relu(max over incoming edges of BatchNorm(z))`` in training mode, the
    normalization being torch's own (batch statistics, running statistics updated in
    place). The forward keeps, for each vertex and channel, one edge reaching the maximum;
    the backward then needs a single pass over the edges. With ``g`` the gradient at the
    normalized messages, nonzero only at those edges, BatchNorm's input gradient is
    ``k (g - mean(g) - x_hat mean(g x_hat))`` with ``k = weight / std``: both means are
    sums over the vertices, and what is left is an affine map of ``z`` per channel plus
    ``k g`` added at the maximal edges."""

    @staticmethod
    def forward(ctx, z: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
                running_var: Tensor, momentum: float, eps: float, index: Tensor,
                size: int) -> Tensor:
        y, mean, invstd = torch.native_batch_norm(z, weight, bias, running_mean, running_var,
                                                  True, momentum, eps)
        expanded = index.unsqueeze(1).expand_as(y)
        best = y.new_zeros((size, y.shape[1])).scatter_reduce_(
            0, expanded, y, "amax", include_self=False)
        # edge number + 1 where a message is its vertex's maximum, 0 elsewhere; the largest
        # per vertex and channel is one maximal edge (numbers below 2**24 are exact floats)
        number = torch.eq(y, best.index_select(0, index), out=torch.empty_like(y))
        number.mul_(torch.arange(1, len(y) + 1, dtype=y.dtype).unsqueeze(1))
        argmax = y.new_zeros(best.shape).scatter_reduce_(
            0, expanded, number, "amax", include_self=False)
        out = best.relu_()
        ctx.save_for_backward(z, weight, mean, invstd, argmax.sub_(1).clamp_(min=0).long(),
                              out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, weight, mean, invstd, argmax, out = ctx.saved_tensors
        # the gradient reaching the maximal messages (zero where relu cut it, and for a
        # vertex without edges, whose output is 0)
        g = grad * (out > 0)
        grad_bias = g.sum(0)  # sum of g over the edges
        grad_weight = ((g * z.gather(0, argmax)).sum(0) - mean * grad_bias) * invstd
        k = weight * invstd
        n = len(z)
        slope = -k * invstd * grad_weight / n
        grad_z = torch.addcmul(-k * grad_bias / n - slope * mean, z, slope)
        grad_z.scatter_add_(0, argmax, k * g)
        return grad_z, grad_weight, grad_bias, None, None, None, None, None, None


def norm_max_relu(z: Tensor, norm: torch.nn.BatchNorm1d, index: Tensor, size: int) -> Tensor:
    """``relu(scatter_max(norm(z), index, size))`` for a BatchNorm1d in training mode with
    running statistics, its input gradient in one pass over the edges (see
    :class:`_NormMaxRelu`); other cases (another normalization such as SyncBatchNorm,
    eval mode, fewer than 2 or 2**24 or more edges) take the plain route."""
    usual = (type(norm) is torch.nn.BatchNorm1d and norm.affine and norm.track_running_stats
             and norm.training and 1 < len(z) < 2 ** 24 and z.dtype == torch.float32)
    if not usual:
        return torch.relu(scatter_max(norm(z), index, size))
    norm.num_batches_tracked.add_(1)
    momentum = (1.0 / float(norm.num_batches_tracked) if norm.momentum is None
                else norm.momentum)
    return _NormMaxRelu.apply(z, norm.weight, norm.bias, norm.running_mean,
                              norm.running_var, momentum, norm.eps, index, size)
