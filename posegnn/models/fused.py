"""Fused and factorized forms of the network's two hot modules, equal to their plain
definitions in :mod:`posegnn.models.network` (tests/test_fused.py checks values and
gradients) but faster on a CPU. ``model.fused`` chooses them (the default).

- :func:`edgeconv_attr`: the message's linear map on ``[x_i, x_j - x_i, e_ij]`` equals
  ``A x_i + B x_j + C e_ij``, so ``A x`` and ``B x`` are computed once per vertex. In
  training, BatchNorm + max + ReLU are one autograd function whose backward is one pass
  over the edges (:func:`norm_max_relu`). In eval mode BatchNorm folds into the map and,
  ReLU being monotone, ``max_j relu(A x_i + B x_j + C e_ij)`` is
  ``relu(A x_i + max_j (B x_j + C e_ij))``.
- :func:`symmetric_classifier`: the first linear map taken block by block on the pair's
  features (no concatenation), its ``h_i + h_j`` block once per vertex; in eval mode with
  BatchNorms folded.

Eval-mode derived weights (folded, split, transposed) are kept per module until one of
its parameters or buffers changes (:func:`eval_weights`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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


def fold_batchnorm(linear: nn.Linear, norm: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """Weight and bias of one linear map equal to ``norm(linear(x))`` in eval mode."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return (linear.weight * scale.unsqueeze(1),
            (linear.bias - norm.running_mean) * scale + norm.bias)


def eval_weights(module: nn.Module, compute) -> tuple[Tensor, ...]:
    """``compute(module)``: the eval-mode weights a module derives from its own. Without
    autograd they are kept until a parameter or buffer of the module changes (an
    optimizer step, ``load_state_dict``, ``reset_parameters``), read from the tensors'
    versions and storage; with autograd they are derived on each call."""
    if torch.is_grad_enabled():
        return compute(module)
    cached = module.__dict__.get("_fused_weights")
    parts = cached[0] if cached is not None else tuple(module.modules())
    key = tuple((t._version, t.data_ptr()) for m in parts
                for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)
    if cached is None or cached[1] != key:
        with torch.inference_mode(False):  # plain tensors, usable outside inference mode
            cached = (parts, key, tuple(w.contiguous() for w in compute(module)))
        module.__dict__["_fused_weights"] = cached
    return cached[2]


def _split_message_weight(conv, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(A, B, C) of a weight over ``[x_i, x_j - x_i, e_ij]``: ``A x_i + B x_j + C e_ij``."""
    d = conv.in_dim
    w_i, w_j, w_e = weight[:, :d], weight[:, d:2 * d], weight[:, 2 * d:]
    return w_i - w_j, w_j, w_e


def _conv_eval_weights(conv) -> tuple[Tensor, ...]:
    weight, bias = fold_batchnorm(conv.nn[0], conv.nn[1])
    return (*(w.T for w in _split_message_weight(conv, weight)), bias)


def edgeconv_attr(conv, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
    """``EdgeConvAttr`` with max aggregation (its ``nn`` a Linear, BatchNorm1d, ReLU)."""
    src, dst = edge_index
    if conv.training:
        lin = conv.nn[0]
        a, b, c = _split_message_weight(conv, lin.weight)
        z = torch.addmm(lin.bias, x, a.T).index_select(0, dst)
        z = z.add_((x @ b.T).index_select(0, src)).addmm_(edge_attr, c.T)
        return norm_max_relu(z, conv.nn[1], dst, len(x))
    a, b, c, bias = eval_weights(conv, _conv_eval_weights)  # transposed: [in, out]
    per_edge = (x @ b).index_select(0, src).addmm_(edge_attr, c)
    # the running maximum starts at -inf: a vertex without incoming edges gives
    # relu(-inf) = 0, as the plain form's empty aggregation does
    best = x.new_full((len(x), len(bias)), float("-inf")).scatter_reduce_(
        0, dst.unsqueeze(1).expand_as(per_edge), per_edge, "amax")
    return torch.addmm(bias, x, a).add_(best).relu_()


def _block_widths(clf) -> list[int]:
    """Widths of the symmetric pair features' blocks: h_i + h_j, |h_i - h_j|, h_i * h_j,
    the two attribute blocks (when used), the extra input."""
    d = clf.emb_dim
    return [d, d, d] + [clf.edge_dim] * (2 * clf.use_attr) + [clf.extra_dim]


def _other_blocks(clf, attr_fwd: Tensor, attr_bwd: Tensor, extra: Tensor | None) -> list:
    blocks = [attr_fwd + attr_bwd, (attr_fwd - attr_bwd).abs()] if clf.use_attr else []
    return blocks + ([extra] if extra is not None else [])


def _classifier_eval_weights(clf) -> tuple[Tensor, ...]:
    """[first map split by input block, bias 1, second map, bias 2, output map, output
    bias], BatchNorms folded, transposed."""
    (lin1, norm1, _), _, (lin2, norm2, _), out = clf.net
    w1, b1 = fold_batchnorm(lin1, norm1)
    w2, b2 = fold_batchnorm(lin2, norm2)
    return (*torch.split(w1.T, _block_widths(clf)), b1, w2.T, b2, out.weight.T, out.bias)


def symmetric_classifier(clf, h: Tensor, pair_index: Tensor, attr_fwd: Tensor,
                         attr_bwd: Tensor, extra: Tensor | None = None) -> Tensor:
    """``EdgeClassifier`` with symmetric pair features."""
    i, j = pair_index
    if clf.training:
        lin = clf.net[0][0]
        w_sum, w_diff, w_prod, *w_rest = torch.split(lin.weight, _block_widths(clf), dim=1)
        per_vertex = h @ w_sum.T
        z = (per_vertex + lin.bias).index_select(0, i).add_(per_vertex.index_select(0, j))
        hi, hj = h.index_select(0, i), h.index_select(0, j)
        z = z.addmm_((hi - hj).abs(), w_diff.T).addmm_(hi * hj, w_prod.T)
        for x, w in zip(_other_blocks(clf, attr_fwd, attr_bwd, extra), w_rest, strict=False):
            z = z.addmm_(x, w.T)
        return clf.net[1:](clf.net[0][1:](z)).squeeze(1)
    *blocks, b1, w2, b2, w_out, b_out = eval_weights(clf, _classifier_eval_weights)
    m, both = pair_index.shape[1], pair_index.reshape(-1)  # both: all i, then all j
    per_vertex = (h @ blocks[0]).index_select(0, both)
    hij = h.index_select(0, both)
    hi, hj = hij[:m], hij[m:]
    inputs = [(hi - hj).abs_(), hi.mul_(hj), *_other_blocks(clf, attr_fwd, attr_bwd, extra)]
    z = torch.add(per_vertex[:m], per_vertex[m:]).add_(b1)
    for x, w in zip(inputs, blocks[1:], strict=False):
        z.addmm_(x, w)
    z = torch.addmm(b2, z.relu_(), w2).relu_()
    return torch.addmm(b_out, z, w_out).squeeze(1)
