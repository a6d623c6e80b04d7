"""The report's network: a graph-convolution vertex encoder and an edge classifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from posegnn.choices import one_of
from posegnn.models.layers import CONVS, ConvLayer, eval_weights, fold_batchnorm, mlp_block

PAIR_MODES = ("concat", "symmetric")


@dataclass
class ModelConfig:
    """Architecture settings (``model=edgeconv`` is the report's)."""

    conv: str = "edgeconv"  # edgeconv | edgeconv_attr | gatv2 | gine | transformer
    hidden: int = 64  # vertex embedding width
    layers: int = 3
    aggr: str = "max"
    heads: int = 2  # attention heads for gatv2 / transformer
    skip: bool = False  # classify on the concatenation of every layer's output
    pair: str = "symmetric"  # concat | symmetric (order-invariant)
    classifier_hidden: int = 64
    classifier_edge_attr: bool = False  # also feed the pair's edge attributes
    dropout: float = 0.0
    # classifier rounds after the first: each re-classifies every pair after pooling, for
    # each vertex, the embeddings of the candidates the previous round put in its person
    rounds: int = 0
    # a vertex output: the probability that a candidate belongs to some person (0 marks a
    # false peak); the gnn grouping can leave such candidates out (grouping.gnn.drop_below)
    vertex_head: bool = False
    # a person scorer (posegnn.models.person_scorer), fitted after training on the training
    # split's people: each person's expected OKS becomes its score (grouping.gnn.score)
    person_scorer: bool = False

    def __post_init__(self) -> None:
        one_of("model.conv", self.conv, CONVS)
        one_of("model.pair", self.pair, PAIR_MODES)


class VertexEncoder(nn.Module):
    """Stacked graph convolutions giving the vertex feature embedding."""

    def __init__(self, cfg: ModelConfig, in_dim: int, edge_dim: int) -> None:
        super().__init__()
        dims = [in_dim] + [cfg.hidden] * cfg.layers
        self.layers = nn.ModuleList(
            ConvLayer(cfg.conv, a, b, edge_dim, aggr=cfg.aggr, heads=cfg.heads)
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
    """(Linear, BatchNorm1d, ReLU) x 2, then Linear -> one logit per candidate pair."""

    def __init__(self, cfg: ModelConfig, emb_dim: int, edge_dim: int,
                 extra_dim: int = 0) -> None:
        super().__init__()
        self.pair, self.use_attr = cfg.pair, cfg.classifier_edge_attr
        self.emb_dim, self.edge_dim, self.extra_dim = emb_dim, edge_dim, extra_dim
        in_dim = emb_dim * (3 if cfg.pair == "symmetric" else 2) + extra_dim
        if self.use_attr:
            in_dim += edge_dim * (2 if cfg.pair == "symmetric" else 1)
        h = cfg.classifier_hidden
        self.net = nn.Sequential(mlp_block(in_dim, h), nn.Dropout(cfg.dropout),
                                 mlp_block(h, h), nn.Linear(h, 1))

    def forward(self, h: Tensor, pair_index: Tensor, attr_fwd: Tensor,
                attr_bwd: Tensor, extra: Tensor | None = None) -> Tensor:
        if not self.training and self.pair == "symmetric":
            return self.factorized(h, pair_index, attr_fwd, attr_bwd, extra)
        if self.pair == "symmetric":
            return self.symmetric_train(h, pair_index, attr_fwd, attr_bwd, extra)
        hi, hj = h[pair_index[0]], h[pair_index[1]]
        parts = [hi, hj] + ([attr_fwd] if self.use_attr else [])
        if extra is not None:
            parts.append(extra)
        return self.net(torch.cat(parts, dim=1)).squeeze(1)

    def symmetric_train(self, h: Tensor, pair_index: Tensor, attr_fwd: Tensor,
                        attr_bwd: Tensor, extra: Tensor | None = None) -> Tensor:
        """The symmetric forward with gradients: the first linear map taken block by
        block instead of on the concatenated inputs (the same map), its ``h_i + h_j``
        block once per vertex; the constant pair-attribute blocks need no input gradient."""
        lin = self.net[0][0]
        w_sum, w_diff, w_prod, *w_rest = torch.split(lin.weight, self._block_widths(), dim=1)
        i, j = pair_index
        per_vertex = h @ w_sum.T
        z = (per_vertex + lin.bias).index_select(0, i).add_(per_vertex.index_select(0, j))
        hi, hj = h.index_select(0, i), h.index_select(0, j)
        z = z.addmm_((hi - hj).abs(), w_diff.T).addmm_(hi * hj, w_prod.T)
        inputs = [attr_fwd + attr_bwd, (attr_fwd - attr_bwd).abs()] if self.use_attr else []
        if extra is not None:
            inputs.append(extra)
        for x, w in zip(inputs, w_rest, strict=False):
            z = z.addmm_(x, w.T)
        return self.net[1:](self.net[0][1:](z)).squeeze(1)

    def _block_widths(self) -> list[int]:
        """Widths of the symmetric first map's input blocks: h_i + h_j, |h_i - h_j|,
        h_i * h_j, the two pair-attribute blocks (when used), the extra input."""
        d = self.emb_dim
        return [d, d, d] + [self.edge_dim] * (2 * self.use_attr) + [self.extra_dim]

    def _eval_weights(self) -> tuple[Tensor, ...]:
        """Folded, transposed weights: [first map split by input block (the h_i + h_j
        block first), bias 1, second map, bias 2, output map, output bias]."""
        (lin1, norm1, _), _, (lin2, norm2, _), out = self.net
        w1, b1 = fold_batchnorm(lin1, norm1)
        w2, b2 = fold_batchnorm(lin2, norm2)
        blocks = torch.split(w1.T, self._block_widths())
        return (*blocks, b1, w2.T, b2, out.weight.T, out.bias)

    def factorized(self, h: Tensor, pair_index: Tensor, attr_fwd: Tensor,
                   attr_bwd: Tensor, extra: Tensor | None = None) -> Tensor:
        """The eval-mode symmetric forward, BatchNorms folded into the linear maps; the
        first map's ``h_i + h_j`` part is applied once per vertex, not per pair, and each
        input block meets its own slice of the weight (no concatenation)."""
        *blocks, b1, w2, b2, w_out, b_out = eval_weights(self, self._eval_weights)
        m, both = pair_index.shape[1], pair_index.reshape(-1)  # both: all i, then all j
        per_vertex = (h @ blocks[0]).index_select(0, both)
        hij = h.index_select(0, both)
        hi, hj = hij[:m], hij[m:]
        inputs = [(hi - hj).abs_(), hi.mul_(hj)]
        if self.use_attr:
            inputs += [attr_fwd + attr_bwd, (attr_fwd - attr_bwd).abs_()]
        if extra is not None:
            inputs.append(extra)
        z = torch.add(per_vertex[:m], per_vertex[m:]).add_(b1)
        for x, w in zip(inputs, blocks[1:], strict=False):
            z.addmm_(x, w)
        z = torch.addmm(b2, z.relu_(), w2).relu_()
        return torch.addmm(b_out, z, w_out).squeeze(1)


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
        # a refining classifier sees each side's pooled person embedding and the last logit
        self.refiners = nn.ModuleList(
            EdgeClassifier(cfg, 2 * emb, edge_dim, extra_dim=1) for _ in range(cfg.rounds))
        self.vertex_head = (nn.Sequential(mlp_block(emb, cfg.classifier_hidden),
                                          nn.Linear(cfg.classifier_hidden, 1))
                            if cfg.vertex_head else None)

    def forward(self, data) -> Tensor:
        """Logits [M] of the M scored pairs of a graph or batch built by ``AddEdges``."""
        return self.outputs(data)[0][-1]

    def outputs(self, data) -> tuple[list[Tensor], Tensor | None]:
        """Pair logits of every stage (the classifier's, then each refinement's) and, with
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
