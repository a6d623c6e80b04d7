"""Graph convolutions for the vertex encoder, all with the same call signature."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import EdgeConv, GATv2Conv, GINEConv, MessagePassing, TransformerConv

CONVS = ("edgeconv", "edgeconv_attr", "gatv2", "gine", "transformer")


def mlp_block(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear + BatchNorm1d + ReLU, the report's building block."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU())


class EdgeConvAttr(MessagePassing):
    """EdgeConv whose message also sees the edge attributes:
    ``x_i' = max_j h([x_i, x_j - x_i, e_ij])`` (the report's to-do)."""

    def __init__(self, in_dim: int, out_dim: int, edge_dim: int, aggr: str = "max") -> None:
        super().__init__(aggr=aggr)
        self.nn = mlp_block(2 * in_dim + edge_dim, out_dim)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        return self.propagate(edge_index, x=x, edge_attr=edge_attr)

    def message(self, x_i: Tensor, x_j: Tensor, edge_attr: Tensor) -> Tensor:
        return self.nn(torch.cat([x_i, x_j - x_i, edge_attr], dim=-1))


class ConvLayer(nn.Module):
    """One encoder layer of the chosen kind, mapping [N, in_dim] to [N, out_dim]."""

    def __init__(self, kind: str, in_dim: int, out_dim: int, edge_dim: int,
                 aggr: str = "max", heads: int = 2) -> None:
        super().__init__()
        self.uses_edge_attr = kind != "edgeconv"
        if kind == "edgeconv":
            self.conv = EdgeConv(mlp_block(2 * in_dim, out_dim), aggr=aggr)
        elif kind == "edgeconv_attr":
            self.conv = EdgeConvAttr(in_dim, out_dim, edge_dim, aggr=aggr)
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
        if self.uses_edge_attr:
            return self.post(self.conv(x, edge_index, edge_attr))
        return self.post(self.conv(x, edge_index))
