"""Graph convolutions for the vertex encoder, all with the same call signature."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import EdgeConv, GATv2Conv, GINEConv, MessagePassing, TransformerConv
from torch_geometric.nn.inits import reset

from posegnn.models.aggregate import norm_max_relu

CONVS = ("edgeconv", "edgeconv_attr", "gatv2", "gine", "transformer")


def mlp_block(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear + BatchNorm1d + ReLU, the report's building block."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU())


def fold_batchnorm(linear: nn.Linear, norm: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """Weight and bias of one linear map equal to ``norm(linear(x))`` in eval mode."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return (linear.weight * scale.unsqueeze(1),
            (linear.bias - norm.running_mean) * scale + norm.bias)


def eval_weights(module: nn.Module, compute) -> tuple[Tensor, ...]:
    """``compute()``: the eval-mode weights a module derives from its own (folded,
    split, transposed). Without autograd they are kept until a parameter or buffer of
    the module changes (an optimizer step, ``load_state_dict``, a new tensor), so
    inference derives them once; with autograd they are derived on each call, gradients
    flowing. The submodules are listed once; the check per call reads their tensors'
    versions and storage."""
    if torch.is_grad_enabled():
        return compute()
    cached = module.__dict__.get("_eval_weight_cache")
    parts = cached[0] if cached is not None else tuple(module.modules())
    key = tuple((t._version, t.data_ptr()) for m in parts
                for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)
    if cached is None or cached[1] != key:
        with torch.inference_mode(False):  # plain tensors, usable outside inference mode
            cached = (parts, key, tuple(w.contiguous() for w in compute()))
        module.__dict__["_eval_weight_cache"] = cached
    return cached[2]


class EdgeConvAttr(MessagePassing):
    """EdgeConv whose message also sees the edge attributes:
    ``x_i' = aggr_j h([x_i, x_j - x_i, e_ij])`` (the report's to-do).

    ``h``'s linear map runs factorized: on ``[x_i, x_j - x_i, e_ij]`` it equals
    ``A x_i + B x_j + C e_ij``, so ``A x`` and ``B x`` are computed once per vertex and
    gathered per edge. In eval mode with max aggregation (BatchNorm folded into the map),
    ReLU being monotone, ``max_j relu(A x_i + B x_j + C e_ij)`` is
    ``relu(A x_i + max_j (B x_j + C e_ij))``: nothing but ``B x_j + C e_ij`` per edge.
    """

    def __init__(self, nn: nn.Sequential, in_dim: int, aggr: str = "max") -> None:
        """``nn``: Linear over ``[x_i, x_j - x_i, e_ij]`` then BatchNorm1d and ReLU
        (:func:`mlp_block`); ``in_dim``: the width of ``x``."""
        super().__init__(aggr=aggr)
        self.in_dim = in_dim
        self.nn = nn

    def reset_parameters(self) -> None:
        super().reset_parameters()
        reset(self.nn)
        self.__dict__.pop("_eval_weight_cache", None)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(nn={self.nn}, in_dim={self.in_dim})"

    def _split(self, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(A, B, C) of a weight over ``[x_i, x_j - x_i, e_ij]``."""
        d = self.in_dim
        w_i, w_j, w_e = weight[:, :d], weight[:, d:2 * d], weight[:, 2 * d:]
        return w_i - w_j, w_j, w_e

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        src, dst = edge_index
        if not self.training and self.aggr == "max":
            return self.max_eval(x, src, dst, edge_attr)
        lin = self.nn[0]
        a, b, c = self._split(lin.weight)
        z = torch.addmm(lin.bias, x, a.T).index_select(0, dst)
        z = z.add_((x @ b.T).index_select(0, src)).addmm_(edge_attr, c.T)
        if self.aggr == "max":  # relu commutes with max: one relu per vertex, not per edge
            return norm_max_relu(z, self.nn[1], dst, len(x))
        return self.aggregate(self.nn[1:](z), dst, dim_size=len(x))

    def _eval_weights(self) -> tuple[Tensor, ...]:
        weight, bias = fold_batchnorm(self.nn[0], self.nn[1])
        return (*(w.T for w in self._split(weight)), bias)

    def max_eval(self, x: Tensor, src: Tensor, dst: Tensor, edge_attr: Tensor) -> Tensor:
        """The eval-mode forward with max aggregation (see the class doc). The running
        maximum starts at -inf, so a vertex without incoming edges comes out as
        relu(-inf) = 0, as the training form's empty aggregation gives."""
        a, b, c, bias = eval_weights(self, self._eval_weights)  # transposed: [in, out]
        per_edge = (x @ b).index_select(0, src).addmm_(edge_attr, c)
        best = x.new_full((len(x), len(bias)), float("-inf")).scatter_reduce_(
            0, dst.unsqueeze(1).expand_as(per_edge), per_edge, "amax")
        return torch.addmm(bias, x, a).add_(best).relu_()


class ConvLayer(nn.Module):
    """One encoder layer of the chosen kind, mapping [N, in_dim] to [N, out_dim]."""

    def __init__(self, kind: str, in_dim: int, out_dim: int, edge_dim: int,
                 aggr: str = "max", heads: int = 2) -> None:
        super().__init__()
        self.uses_edge_attr = kind != "edgeconv"
        if kind == "edgeconv":
            self.conv = EdgeConv(mlp_block(2 * in_dim, out_dim), aggr=aggr)
        elif kind == "edgeconv_attr":
            self.conv = EdgeConvAttr(mlp_block(2 * in_dim + edge_dim, out_dim), in_dim, aggr=aggr)
        elif kind == "gine":
            self.conv = GINEConv(mlp_block(in_dim, out_dim), edge_dim=edge_dim, train_eps=True)
        elif kind in ("gatv2", "transformer"):
            if out_dim % heads:
                raise ValueError(f"model.hidden={out_dim} must be divisible by heads={heads}")
            cls = GATv2Conv if kind == "gatv2" else TransformerConv
            self.conv = cls(in_dim, out_dim // heads, heads=heads, edge_dim=edge_dim)
        else:
            raise ValueError(f"model.conv must be one of {CONVS}, got {kind!r}")
        # attention layers get the report's BatchNorm + ReLU after the convolution
        self.post = (nn.Sequential(nn.BatchNorm1d(out_dim), nn.ReLU())
                     if kind in ("gatv2", "transformer") else nn.Identity())

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        out = self.conv(x, edge_index, edge_attr) if self.uses_edge_attr else self.conv(
            x, edge_index)
        return out if isinstance(self.post, nn.Identity) else self.post(out)
