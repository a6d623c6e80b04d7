"""The network: a graph-convolution vertex encoder and an edge classifier.

As the report draws it: three EdgeConv layers (Linear + BatchNorm1d + ReLU on each
message, max over a vertex's incoming edges) embed the candidates; a classifier
((Linear, BatchNorm1d, ReLU) x 2, Linear) turns the features of a candidate pair into one
same-person logit. Every module here is its plain definition. With ``model.fused`` (the
default) the two hot ones, :class:`EdgeConvAttr` and the symmetric :class:`EdgeClassifier`,
run the equal but faster forms of :mod:`posegnn.models.fused` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import EdgeConv, GATv2Conv, GINEConv, MessagePassing, TransformerConv
from torch_geometric.nn.inits import reset

from posegnn.choices import one_of
from posegnn.models import fused

CONVS = ("edgeconv", "edgeconv_attr", "gatv2", "gine", "transformer")
PAIR_MODES = ("concat", "symmetric")


@dataclass
class ModelConfig:
    """Architecture settings; the defaults are the model ``posegnn-train`` trains
    (``model=edgeconv`` is the report's own: no edge attributes, width 64)."""

    conv: str = "edgeconv_attr"  # edgeconv | edgeconv_attr | gatv2 | gine | transformer
    hidden: int = 32  # vertex embedding width
    layers: int = 3
    aggr: str = "max"
    heads: int = 2  # attention heads for gatv2 / transformer
    skip: bool = False  # classify on the concatenation of every layer's output
    pair: str = "symmetric"  # concat | symmetric (order-invariant)
    classifier_hidden: int = 32
    classifier_edge_attr: bool = True  # also feed the pair's edge attributes
    dropout: float = 0.0
    # further classifier rounds: each re-classifies every pair after pooling, for each
    # vertex, the embeddings of the candidates the previous round put in its person
    rounds: int = 0
    # a vertex output: the probability that a candidate belongs to some person (0 marks a
    # false peak); the gnn grouping can leave such candidates out (grouping.gnn.drop_below)
    vertex_head: bool = False
    # a person scorer, fitted after training on the training split's people: each
    # person's expected OKS becomes its score (grouping.gnn.score)
    person_scorer: bool = True
    # run the fused / factorized forms of posegnn.models.fused (equal outputs, faster);
    # false runs the plain definitions below
    fused: bool = True

    def __post_init__(self) -> None:
        one_of("model.conv", self.conv, CONVS)
        one_of("model.pair", self.pair, PAIR_MODES)


def model_settings(values):
    """Stored model settings (a checkpoint's) with names from before a rename
    (``refine`` -> ``rounds``); anything else as it is."""
    if not isinstance(values, Mapping) or "refine" not in values:
        return values
    values = dict(values)
    values["rounds"] = values.pop("refine")
    return values


def mlp_block(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear + BatchNorm1d + ReLU, the report's building block."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU())


class EdgeConvAttr(MessagePassing):
    """EdgeConv whose message also sees the edge attributes (the report's to-do):
    ``x_i' = max_j nn([x_i, x_j - x_i, e_ij])``."""

    def __init__(self, nn: nn.Sequential, in_dim: int, aggr: str = "max",
                 fused: bool = False) -> None:
        """``nn``: a :func:`mlp_block` over ``[x_i, x_j - x_i, e_ij]``; ``in_dim``: the
        width of ``x``; ``fused``: run :func:`posegnn.models.fused.edgeconv_attr`."""
        super().__init__(aggr=aggr)
        self.nn, self.in_dim, self.fused = nn, in_dim, fused

    def reset_parameters(self) -> None:
        super().reset_parameters()
        reset(self.nn)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        if self.fused and self.aggr == "max":
            return fused.edgeconv_attr(self, x, edge_index, edge_attr)
        return self.propagate(edge_index, x=x, edge_attr=edge_attr)

    def message(self, x_i: Tensor, x_j: Tensor, edge_attr: Tensor) -> Tensor:
        return self.nn(torch.cat([x_i, x_j - x_i, edge_attr], dim=1))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(nn={self.nn}, in_dim={self.in_dim})"


class ConvLayer(nn.Module):
    """One encoder layer of the chosen kind, mapping [N, in_dim] to [N, out_dim]."""

    def __init__(self, cfg: ModelConfig, in_dim: int, out_dim: int, edge_dim: int) -> None:
        super().__init__()
        kind = cfg.conv
        self.uses_edge_attr = kind != "edgeconv"
        if kind == "edgeconv":
            self.conv = EdgeConv(mlp_block(2 * in_dim, out_dim), aggr=cfg.aggr)
        elif kind == "edgeconv_attr":
            self.conv = EdgeConvAttr(mlp_block(2 * in_dim + edge_dim, out_dim), in_dim,
                                     aggr=cfg.aggr, fused=cfg.fused)
        elif kind == "gine":
            self.conv = GINEConv(mlp_block(in_dim, out_dim), edge_dim=edge_dim, train_eps=True)
        else:  # gatv2, transformer
            if out_dim % cfg.heads:
                raise ValueError(f"model.hidden={out_dim} must be divisible by "
                                 f"model.heads={cfg.heads}")
            cls = GATv2Conv if kind == "gatv2" else TransformerConv
            self.conv = cls(in_dim, out_dim // cfg.heads, heads=cfg.heads, edge_dim=edge_dim)
        # attention layers get the report's BatchNorm + ReLU after the convolution
        self.post = (nn.Sequential(nn.BatchNorm1d(out_dim), nn.ReLU())
                     if kind in ("gatv2", "transformer") else nn.Identity())

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        if self.uses_edge_attr:
            return self.post(self.conv(x, edge_index, edge_attr))
        return self.post(self.conv(x, edge_index))


class VertexEncoder(nn.Module):
    """Stacked graph convolutions giving the vertex embedding."""

    def __init__(self, cfg: ModelConfig, in_dim: int, edge_dim: int) -> None:
        super().__init__()
        dims = [in_dim] + [cfg.hidden] * cfg.layers
        self.layers = nn.ModuleList(ConvLayer(cfg, a, b, edge_dim)
                                    for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.skip = cfg.skip
        self.out_dim = cfg.hidden * (cfg.layers if cfg.skip else 1)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        outputs = []
        for layer in self.layers:
            x = layer(x, edge_index, edge_attr)
            outputs.append(x)
        return torch.cat(outputs, dim=1) if self.skip else x


class EdgeClassifier(nn.Module):
    """(Linear, BatchNorm1d, ReLU) x 2, then Linear: one logit per candidate pair, from
    the pair's features (:meth:`pair_features`)."""

    def __init__(self, cfg: ModelConfig, emb_dim: int, edge_dim: int,
                 extra_dim: int = 0) -> None:
        super().__init__()
        self.pair, self.use_attr, self.fused = cfg.pair, cfg.classifier_edge_attr, cfg.fused
        self.emb_dim, self.edge_dim, self.extra_dim = emb_dim, edge_dim, extra_dim
        in_dim = emb_dim * (3 if cfg.pair == "symmetric" else 2) + extra_dim
        if self.use_attr:
            in_dim += edge_dim * (2 if cfg.pair == "symmetric" else 1)
        h = cfg.classifier_hidden
        self.net = nn.Sequential(mlp_block(in_dim, h), nn.Dropout(cfg.dropout),
                                 mlp_block(h, h), nn.Linear(h, 1))

    def pair_features(self, h: Tensor, pair_index: Tensor, attr_fwd: Tensor,
                      attr_bwd: Tensor, extra: Tensor | None = None) -> Tensor:
        """[M, in_dim]: ``[h_i + h_j, |h_i - h_j|, h_i * h_j, e_ij + e_ji, |e_ij - e_ji|]``
        (symmetric: the same for both orders) or ``[h_i, h_j, e_ij]`` (concat), the
        attribute blocks with ``classifier_edge_attr``, then ``extra``."""
        hi, hj = h[pair_index[0]], h[pair_index[1]]
        if self.pair == "symmetric":
            parts = [hi + hj, (hi - hj).abs(), hi * hj]
            if self.use_attr:
                parts += [attr_fwd + attr_bwd, (attr_fwd - attr_bwd).abs()]
        else:
            parts = [hi, hj] + ([attr_fwd] if self.use_attr else [])
        if extra is not None:
            parts.append(extra)
        return torch.cat(parts, dim=1)

    def forward(self, h: Tensor, pair_index: Tensor, attr_fwd: Tensor, attr_bwd: Tensor,
                extra: Tensor | None = None) -> Tensor:
        if self.fused and self.pair == "symmetric":
            return fused.symmetric_classifier(self, h, pair_index, attr_fwd, attr_bwd, extra)
        return self.net(self.pair_features(h, pair_index, attr_fwd, attr_bwd, extra)).squeeze(1)


def pool_by_probability(h: Tensor, pair_index: Tensor, prob: Tensor) -> Tensor:
    """For each vertex, the probability-weighted mean embedding of its pair partners: a
    soft picture of the person the vertex is assigned to ([N, H])."""
    src = torch.cat([pair_index[0], pair_index[1]])
    dst = torch.cat([pair_index[1], pair_index[0]])
    w = torch.cat([prob, prob]).unsqueeze(1)
    total = h.new_zeros(h.shape).index_add_(0, dst, w * h[src])
    weight = h.new_zeros((len(h), 1)).index_add_(0, dst, w)
    return total / (weight + 1e-6)


class EdgeGNN(nn.Module):
    """Vertex encoder + edge classifier, with the input feature normalization inside.

    ``feature_mean``/``feature_std`` are buffers (identity unless the graph setting is
    ``normalization=dataset``), so a checkpoint carries the statistics it needs.
    """

    def __init__(self, cfg: ModelConfig, in_dim: int, edge_dim: int) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.encoder = VertexEncoder(cfg, in_dim, edge_dim)
        emb = self.encoder.out_dim
        self.classifier = EdgeClassifier(cfg, emb, edge_dim)
        # a further round's classifier sees each side's pooled person embedding and the
        # last logit
        self.refiners = nn.ModuleList(
            EdgeClassifier(cfg, 2 * emb, edge_dim, extra_dim=1) for _ in range(cfg.rounds))
        self.vertex_head = (nn.Sequential(mlp_block(emb, cfg.classifier_hidden),
                                          nn.Linear(cfg.classifier_hidden, 1))
                            if cfg.vertex_head else None)

    def forward(self, data) -> Tensor:
        """Logits [M] of the M scored pairs of a graph or batch built by ``AddEdges``."""
        return self.outputs(data)[0][-1]

    def outputs(self, data) -> tuple[list[Tensor], Tensor | None]:
        """Pair logits of every stage (the classifier's, then each further round's) and, with
        ``vertex_head``, one logit [N] per candidate that it belongs to some person."""
        if data.num_nodes == 0:
            return [data.x.new_zeros(0)], (data.x.new_zeros(0) if self.vertex_head else None)
        x = (data.x - self.feature_mean) / self.feature_std
        h = self.encoder(x, data.edge_index, data.edge_attr)
        vertex = self.vertex_head(h).squeeze(1) if self.vertex_head is not None else None
        if data.pair_index.shape[1] == 0:
            return [data.x.new_zeros(0)], vertex
        pairs, fwd, bwd = data.pair_index, data.pair_attr, data.pair_attr_rev
        logits = [self.classifier(h, pairs, fwd, bwd)]
        for refiner in self.refiners:
            pooled = pool_by_probability(h, pairs, torch.sigmoid(logits[-1]))
            logits.append(refiner(torch.cat([h, pooled], dim=1), pairs, fwd, bwd,
                                  extra=logits[-1].unsqueeze(1)))
        return logits, vertex
