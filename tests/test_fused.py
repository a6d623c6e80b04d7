"""The fused forms (posegnn.models.fused) equal the plain definitions of
posegnn.models.network: the max aggregation and its gradient, BatchNorm + max + ReLU in
one function, and whole networks, fused against plain with the same weights, in training
(logits, gradients, running statistics) and in eval mode (logits, cached weights)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from posegnn.models.fused import norm_max_relu, scatter_max
from posegnn.models.network import EdgeConvAttr, EdgeGNN, ModelConfig, mlp_block


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


def _pair(batch, **model) -> tuple[EdgeGNN, EdgeGNN]:
    """A fused network and a plain one with the same weights."""
    torch.manual_seed(0)
    fused = EdgeGNN(ModelConfig(**model), batch.x.shape[1], batch.edge_attr.shape[1])
    plain = copy.deepcopy(fused)
    for module in plain.modules():
        if hasattr(module, "fused"):
            module.fused = False
    return fused, plain


MODELS = [{}, {"rounds": 1}, {"classifier_edge_attr": False, "hidden": 16},
          {"conv": "edgeconv", "pair": "concat"}]


@pytest.mark.parametrize("model", MODELS, ids=str)
def test_training_logits_gradients_and_statistics_equal_the_plain_network(batch, model):
    """Logits to float rounding. Rounding moves a few ReLU and max decisions, which moves
    gradients by up to about 0.3% of their largest entry; they are compared to 1% of it,
    far below what a wrong formula gives (a wrong backward fails by orders more)."""
    fused, plain = _pair(batch, **model)
    assert ModelConfig().fused and not plain.classifier.fused
    fused.train()
    plain.train()
    loss = torch.nn.functional.binary_cross_entropy_with_logits
    for _ in range(2):  # the second step sees the first one's running statistics
        logits, expected = fused(batch), plain(batch)
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
        fused.zero_grad()
        plain.zero_grad()
        loss(logits, batch.y).backward()
        loss(expected, batch.y).backward()
    before_norm = {id(m[0].bias) for m in fused.modules()  # Linear, then BatchNorm1d
                   if isinstance(m, torch.nn.Sequential) and len(m) > 1
                   and isinstance(m[1], torch.nn.BatchNorm1d)}
    for (name, p), q in zip(fused.named_parameters(), plain.parameters(), strict=True):
        if id(p) in before_norm:  # BatchNorm takes the batch mean: zero but for rounding
            assert p.grad.abs().max() < 1e-6 and q.grad.abs().max() < 1e-6
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3,
                                   atol=1e-2 * float(q.grad.abs().max()) + 1e-9, msg=name)
    for (name, b), c in zip(fused.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-6, msg=name)


def _randomize_statistics(net: torch.nn.Module) -> None:
    """BatchNorm statistics and affine that do not fold to the identity."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()


@pytest.mark.parametrize("model", MODELS, ids=str)
def test_eval_logits_equal_the_plain_network_and_follow_new_weights(batch, model):
    fused, plain = _pair(batch, **model)
    _randomize_statistics(fused)
    plain.load_state_dict(fused.state_dict())
    fused.eval()
    plain.eval()
    with torch.inference_mode():
        first = fused(batch)
        torch.testing.assert_close(first, plain(batch), rtol=1e-4, atol=1e-5)
        assert torch.equal(fused(batch), first)  # from the kept derived weights
    with torch.no_grad():  # an optimizer step or a load: the kept weights follow
        for net in (fused, plain):
            net.classifier.net[0][0].weight.mul_(2.0)
            net.encoder.layers[0].conv.nn[0].weight.mul_(0.5)
    with torch.inference_mode():
        changed = fused(batch)
        torch.testing.assert_close(changed, plain(batch), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(changed, first, atol=1e-3)


def test_eval_layer_equals_its_definition_with_vertices_left_without_messages():
    """The eval-mode max path starts its running maximum at -inf: a vertex that receives
    no edge comes out as zeros, as the plain form's empty aggregation gives."""
    torch.manual_seed(0)
    layer = EdgeConvAttr(mlp_block(2 * 4 + 3, 8), in_dim=4, fused=True)
    _randomize_statistics(layer)
    layer.eval()
    x, e = torch.randn(5, 4), torch.randn(4, 3)
    edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 1]])  # 0 and 4 receive nothing
    with torch.inference_mode():
        out = layer(x, edges, e)
        layer.fused = False
        expected = layer(x, edges, e)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert (out[[0, 4]] == 0).all() and (out[[1, 2, 3]] != 0).any()
