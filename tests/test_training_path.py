"""The training path's faster forms equal their definitions: the max aggregation and its
gradient, BatchNorm + max + relu in one function, the block-wise pair classifier, and
the training split's edges built once."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from posegnn.data.datamodule import DataConfig, KeptEdges, PoseGraphDataModule
from posegnn.data.graph import GraphConfig
from posegnn.models.aggregate import norm_max_relu, scatter_max
from posegnn.models.module import PosegnnModule

DEFAULT_MODEL = {"conv": "edgeconv_attr", "classifier_edge_attr": True}  # model=posegnn


def _edges(num_vertices: int, num_edges: int, seed: int) -> torch.Tensor:
    """Targets of random edges; the last two vertices receive none."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_vertices - 2, (num_edges,), generator=gen)


def test_scatter_max_and_its_gradient_equal_autograds_max():
    torch.manual_seed(0)
    index = _edges(12, 90, seed=1)
    src = torch.randn(90, 5, requires_grad=True)
    out = scatter_max(src, index, 12)
    expected = scatter(src, index, 0, dim_size=12, reduce="max")  # PyG: autograd's backward
    assert torch.equal(out, expected)
    assert (out[-2:] == 0).all()  # no incoming edge: 0
    grad = torch.randn(12, 5)
    mine, = torch.autograd.grad(out, src, grad)
    theirs, = torch.autograd.grad(expected, src, grad)
    assert torch.equal(mine, theirs)
    assert (mine != 0).sum() == 10 * 5  # one maximal message per vertex and channel


@pytest.mark.parametrize("momentum", [0.1, None])
def test_norm_max_relu_equals_batchnorm_then_max_then_relu(momentum):
    """Output, input and parameter gradients, running statistics and the batch count,
    over two steps; one channel's BatchNorm weight is negative (its maximum comes from the
    smallest input), one is zero (every edge ties)."""
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm1d(6, momentum=momentum)
    with torch.no_grad():
        plain.weight.copy_(torch.tensor([1.5, -0.7, 0.0, 0.3, 2.0, 1.0]))
        plain.bias.normal_()
    fused = copy.deepcopy(plain)
    for step in range(2):
        index = _edges(20, 300, seed=step)
        z = (torch.randn(300, 6) * 3 + 1).requires_grad_()
        grad = torch.randn(20, 6)
        expected = torch.relu(scatter(plain(z), index, 0, dim_size=20, reduce="max"))
        out = norm_max_relu(z, fused, index, 20)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        want = torch.autograd.grad(expected, (z, plain.weight, plain.bias), grad)
        got = torch.autograd.grad(out, (z, fused.weight, fused.bias), grad)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5 * float(w.abs().max()))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(fused, name), getattr(plain, name)), name


def test_norm_max_relu_takes_the_plain_route_where_its_shortcut_does_not_apply():
    norm = torch.nn.BatchNorm1d(3)
    z = torch.randn(1, 3)  # a single edge: BatchNorm refuses to train on it
    with pytest.raises(ValueError, match="more than 1 value"):
        norm_max_relu(z, norm, torch.tensor([0]), 2)
    norm.eval()  # running statistics: BatchNorm's own eval form
    out = norm_max_relu(z, norm, torch.tensor([1]), 2)
    assert torch.equal(out, torch.relu(scatter(norm(z), torch.tensor([1]), 0, dim_size=2,
                                               reduce="max")))


@pytest.fixture(scope="module")
def batch(small_graphs):
    return Batch.from_data_list(small_graphs)


def _definition(module: PosegnnModule, batch) -> torch.Tensor:
    """The default network's training forward written from its definition: messages
    ``h([x_i, x_j - x_i, e_ij])`` maxed per vertex, the classifier on concatenated inputs."""
    net = module.net
    h = (batch.x - net.feature_mean) / net.feature_std
    src, dst = batch.edge_index
    for layer in net.encoder.layers:
        message = layer.conv.nn(torch.cat([h[dst], h[src] - h[dst], batch.edge_attr], dim=1))
        h = scatter(message, dst, 0, dim_size=len(h), reduce="max")
    hi, hj = h[batch.pair_index[0]], h[batch.pair_index[1]]
    fwd, bwd = batch.pair_attr, batch.pair_attr_rev
    parts = [hi + hj, (hi - hj).abs(), hi * hj, fwd + bwd, (fwd - bwd).abs()]
    return net.classifier.net(torch.cat(parts, dim=1)).squeeze(1)


def test_the_training_forward_and_gradients_equal_the_definition(batch):
    """Logits to float rounding. Rounding moves a few ReLU and max decisions, which moves
    gradients by up to about 0.3% of their largest entry (as much for the code before the
    faster forms); they are compared to 1% of it, far below what a wrong formula gives."""
    torch.manual_seed(0)
    module = PosegnnModule(batch.x.shape[1], batch.edge_attr.shape[1], model=DEFAULT_MODEL)
    reference = copy.deepcopy(module)
    module.train()
    reference.train()
    logits = module(batch)
    expected = _definition(reference, batch)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    loss = torch.nn.functional.binary_cross_entropy_with_logits
    loss(logits, batch.y).backward()
    loss(expected, batch.y).backward()
    before_norm = {id(m[0].bias) for m in module.modules()  # Linear, then BatchNorm1d
                   if isinstance(m, torch.nn.Sequential) and len(m) > 1
                   and isinstance(m[1], torch.nn.BatchNorm1d)}
    for (name, p), q in zip(module.named_parameters(), reference.parameters(), strict=True):
        if id(p) in before_norm:  # BatchNorm takes the batch mean: zero but for rounding
            assert p.grad.abs().max() < 1e-6 and q.grad.abs().max() < 1e-6
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3,
                                   atol=1e-2 * float(q.grad.abs().max()) + 1e-9, msg=name)
    for (name, b), c in zip(module.named_buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-6, msg=name)


def _datamodule(small_dataset, tmp_path, **data) -> PoseGraphDataModule:
    dm = PoseGraphDataModule(DataConfig(kind="maps", train=str(small_dataset),
                                        val_fraction=0.25, cache_dir=str(tmp_path), **data),
                             GraphConfig(), progress=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_the_training_loader_builds_each_graphs_edges_once(small_dataset, tmp_path):
    dm = _datamodule(small_dataset, tmp_path)
    kept = dm.train_dataset()
    assert isinstance(kept, KeptEdges) and dm.train_dataset() is kept
    calls = []
    build = kept.transform.forward
    kept.transform.forward = lambda data: calls.append(1) or build(data)
    stats = dm.statistics("train")  # posegnn-train's pass before fitting builds them
    assert len(calls) == len(kept) and stats["pairs_per_image"] > 0
    fresh = dm.dataset("train")  # edges derived anew on each access
    for i in range(len(kept)):
        for key in ("pair_index", "edge_index", "edge_attr", "pair_attr", "pair_attr_rev", "y"):
            assert torch.equal(kept[i][key], fresh[i][key]), key
    for _ in range(2):  # two epochs: nothing rebuilt
        for b in dm.train_dataloader():
            assert b.pair_attr.shape == b.pair_attr_rev.shape == (b.pair_index.shape[1],
                                                                   b.edge_attr.shape[1])
    assert len(calls) == len(kept)
    # the two directions' attributes are views of edge_attr, not copies
    g = kept[0]
    assert g.pair_attr.untyped_storage().data_ptr() == g.edge_attr.untyped_storage().data_ptr()
    plain = _datamodule(small_dataset, tmp_path, keep_train_edges=False).train_dataset()
    assert not isinstance(plain, KeptEdges)
