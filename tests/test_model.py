"""The network and LightningModule: fitting, variants, invariance, checkpoints."""

from __future__ import annotations

from dataclasses import asdict

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf.errors import ConfigKeyError
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform

from posegnn.checkpoints import check_graph_compatible, load_module
from posegnn.data.graph import AddEdges, EdgeConfig, GraphConfig, build_vertices
from posegnn.data.maps import PoseMapsDataset
from posegnn.layouts import CROWDPOSE14
from posegnn.models.module import PosegnnModule, SchedulerConfig
from posegnn.models.network import CONVS, EdgeConvAttr, ModelConfig, mlp_block


@pytest.fixture(scope="module")
def graphs(small_graphs):
    return small_graphs


def _module(graphs, **model) -> PosegnnModule:
    g = graphs[0]
    return PosegnnModule(g.x.shape[1], g.edge_attr.shape[1], model=model, graph=GraphConfig())


def _loader(graphs, batch_size: int | None = None) -> DataLoader:
    return DataLoader(graphs, batch_size=batch_size or len(graphs))


def _trainer(tmp_path, epochs: int) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=str(tmp_path), deterministic=True)


def test_overfits_a_handful_of_graphs(graphs, tmp_path):
    L.seed_everything(0)
    module = _module(graphs, hidden=64)
    module.hparams.optimizer["lr"] = module.optim_cfg.lr = 3e-3
    batch = Batch.from_data_list(graphs)
    _trainer(tmp_path, 150).fit(module, train_dataloaders=_loader(graphs))
    module.eval()
    with torch.no_grad():
        logits = module(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.y)
    acc = ((logits > 0).float() == batch.y).float().mean()
    assert loss < 0.05 and acc > 0.99


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("pair", ["symmetric", "concat"])
def test_every_variant_trains_and_ignores_vertex_order(graphs, conv, pair, tmp_path):
    L.seed_everything(0)
    symmetric = pair == "symmetric"
    module = _module(graphs, conv=conv, pair=pair, classifier_edge_attr=symmetric,
                     rounds=int(symmetric))
    _trainer(tmp_path, 1).fit(module, train_dataloaders=_loader(graphs[:2]))
    module.eval()
    g = graphs[1]
    perm = torch.randperm(g.num_nodes, generator=torch.Generator().manual_seed(1))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    permuted = g.clone()
    for key in ("x", "pos", "joint", "score", "tag", "feat_tag", "person"):
        permuted[key] = g[key][perm]
    permuted.pair_index = inverse[g.pair_index]
    permuted.edge_index = inverse[g.edge_index]
    with torch.no_grad():
        assert torch.allclose(module(g), module(permuted), atol=1e-5)
        if pair == "symmetric":  # a pair has no direction
            flipped = g.clone()
            flipped.pair_index = g.pair_index.flip(0)
            flipped.pair_attr, flipped.pair_attr_rev = g.pair_attr_rev, g.pair_attr
            assert torch.allclose(module(g), module(flipped), atol=1e-5)


def test_graphs_of_any_size_including_no_pairs(graphs, tmp_path):
    empty = graphs[0].clone()
    keep = empty.joint == 0
    for key in ("x", "pos", "joint", "score", "tag", "feat_tag", "person"):
        empty[key] = empty[key][keep]
    empty.num_nodes = int(keep.sum())
    empty = AddEdges(CROWDPOSE14, GraphConfig().edges)(empty)
    assert empty.pair_index.shape[1] == 0
    module = _module(graphs)
    _trainer(tmp_path, 1).fit(module, train_dataloaders=_loader([empty, *graphs[:2]], 1))
    module.eval()
    with torch.no_grad():
        assert module(empty).shape == (0,)
        mixed = Batch.from_data_list([graphs[0], empty, graphs[1]])
        n0, n1 = graphs[0].pair_index.shape[1], graphs[1].pair_index.shape[1]
        assert module(mixed).shape == (n0 + n1,)


def test_checkpoint_reloads_to_identical_predictions(graphs, tmp_path):
    stats = torch.rand(graphs[0].x.shape[1])
    module = PosegnnModule(graphs[0].x.shape[1], graphs[0].edge_attr.shape[1],
                           model=ModelConfig(conv="edgeconv_attr"), graph=GraphConfig(),
                           feature_mean=stats.tolist(), feature_std=(stats + 1).tolist())
    trainer = _trainer(tmp_path, 1)
    trainer.fit(module, train_dataloaders=_loader(graphs[:2]))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module(path)
    module.eval()
    batch = Batch.from_data_list(graphs)
    with torch.no_grad():
        assert torch.equal(module(batch), loaded(batch))
    assert torch.equal(loaded.net.feature_mean, stats)
    # plain values in the checkpoint, the schema dataclasses once loaded
    assert loaded.hparams.graph == asdict(GraphConfig()) and loaded.graph_cfg == GraphConfig()
    assert loaded.model_cfg == ModelConfig(conv="edgeconv_attr")


def test_a_checkpoint_older_than_a_setting_loads_with_its_default(graphs, tmp_path):
    module = _module(graphs)
    _trainer(tmp_path, 1).fit(module, train_dataloaders=_loader(graphs[:2]))
    path = tmp_path / "old.ckpt"
    module.trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    hp = ckpt["hyper_parameters"]
    del hp["scheduler"]["monitor"], hp["graph"]["edges"]["competition"]  # not stored then
    hp["optimizer"]["lr"] = 0.01
    torch.save(ckpt, path)
    loaded = load_module(path)
    assert loaded.sched_cfg.monitor == SchedulerConfig().monitor
    assert loaded.graph_cfg.edges.competition is EdgeConfig().competition
    assert loaded.optim_cfg.lr == 0.01
    hp["model"]["no_such_setting"] = 1
    torch.save(ckpt, path)
    with pytest.raises(ConfigKeyError, match="no_such_setting"):  # not silently dropped
        load_module(path)


def test_the_vertex_head_learns_which_candidates_belong_to_nobody(graphs, tmp_path):
    batch = Batch.from_data_list(graphs)
    belongs = batch.person >= 0
    assert 0 < int((~belongs).sum()) < len(belongs)  # the noisy world makes false peaks
    L.seed_everything(0)
    module = _module(graphs, vertex_head=True)
    module.hparams.optimizer["lr"] = module.optim_cfg.lr = 3e-3
    trainer = _trainer(tmp_path, 100)
    trainer.fit(module, train_dataloaders=_loader(graphs))
    module.eval()
    prob, vertex = module.probabilities(batch)
    assert prob.shape == batch.y.shape and vertex.shape == belongs.shape
    assert ((vertex > 0.5) == belongs).float().mean() > 0.95
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    assert torch.equal(load_module(tmp_path / "model.ckpt").probabilities(batch)[1], vertex)
    assert _module(graphs).probabilities(batch)[1] is None  # off by default


def test_checkpoint_refuses_graphs_built_otherwise():
    trained = GraphConfig()
    check_graph_compatible(trained, GraphConfig(match_threshold=0.3), "x.ckpt")
    with pytest.raises(ValueError, match="graph.normalization: trained 'none', now 'per_map'"):
        check_graph_compatible(trained, GraphConfig(normalization="per_map"), "x.ckpt")


class _LearningRates(L.Callback):
    """The learning rate each training epoch ran at, and each epoch's val/loss."""

    def __init__(self) -> None:
        self.lr: list[float] = []
        self.val_loss: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.lr.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after that epoch's validation
        self.val_loss.append(float(trainer.callback_metrics["val/loss"]))


def _plateau_rates(lr: float, val_loss: list[float], factor: float) -> list[float]:
    """ReduceLROnPlateau's rates, mode max, patience 0, written out: the rate falls by
    ``factor`` after every epoch whose value is no relative 1e-4 above the best so far."""
    rates, best = [lr], -float("inf")
    for value in val_loss[:-1]:
        if value > best * (1 + 1e-4) if best > 0 else value > best:
            best = value
        else:
            lr *= factor
        rates.append(lr)
    return rates


@pytest.mark.parametrize("epochs, warmup", [(3, 1), (2, 2)])  # (2, 2): all warm-up at first
def test_a_cosine_run_resumed_with_more_epochs_stretches_its_schedule(graphs, tmp_path,
                                                                       epochs, warmup):
    """Resumed from its checkpoint with a later max_epochs, the cosine continues towards
    the new last epoch; it neither restarts nor keeps the old horizon, even when the
    first run ended inside the warm-up."""
    from posegnn.models.module import cosine_factor

    def trainer(epochs: int, rates: _LearningRates) -> L.Trainer:
        return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path), callbacks=[rates])

    L.seed_everything(0)
    lr, loader = 0.02, _loader(graphs[:2])
    module = PosegnnModule(graphs[0].x.shape[1], graphs[0].edge_attr.shape[1],
                           optimizer={"name": "adam", "lr": lr},
                           scheduler={"name": "cosine", "warmup_epochs": warmup})
    first, resumed = _LearningRates(), _LearningRates()
    fit = trainer(epochs, first)
    fit.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    fit.save_checkpoint(tmp_path / "first.ckpt")
    trainer(epochs + 3, resumed).fit(module, train_dataloaders=loader,
                                     val_dataloaders=loader, ckpt_path=tmp_path / "first.ckpt")
    assert first.lr == pytest.approx([lr * cosine_factor(e, warmup, epochs)
                                      for e in range(epochs)])
    assert resumed.lr == pytest.approx([lr * cosine_factor(e, warmup, epochs + 3)
                                        for e in range(epochs, epochs + 3)])
    assert resumed.lr[-1] < resumed.lr[0]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("scheduler", ["none", "cosine", "step", "plateau"])
def test_optimizers_and_schedulers_from_config(graphs, name, scheduler, tmp_path):
    """The optimizer and scheduler named in the config are built with its values, and the
    learning rate follows the schedule epoch by epoch."""
    import math

    L.seed_everything(0)
    g, lr, epochs = graphs[0], 0.02, 5
    module = PosegnnModule(g.x.shape[1], g.edge_attr.shape[1],
                           optimizer={"name": name, "lr": lr, "weight_decay": 1e-3,
                                      "momentum": 0.8, "nesterov": True},
                           scheduler={"name": scheduler, "warmup_epochs": 1, "step_size": 2,
                                      "gamma": 0.5, "patience": 0, "mode": "max"},
                           loss={"pos_weight": 3.0})
    rates = _LearningRates()
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path), deterministic=True, callbacks=[rates])
    loader = _loader(graphs[:2])
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)

    opt = trainer.optimizers[0]
    expected_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                      "sgd": torch.optim.SGD}[name]
    assert type(opt) is expected_class
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-3
    if name == "sgd":
        assert group["momentum"] == 0.8 and group["nesterov"] is True
    owned = {id(p) for p in module.net.parameters()}
    assert {id(p) for p in group["params"]} == owned  # the network's, no person scorer

    configs = trainer.lr_scheduler_configs
    if scheduler == "none":
        assert configs == []
        expected = [lr] * epochs
    elif scheduler == "cosine":  # one warm-up epoch at a tenth, then cosine over the rest
        assert isinstance(configs[0].scheduler, torch.optim.lr_scheduler.LambdaLR)
        expected = [lr * 0.1] + [lr * (1 + math.cos(math.pi * t / (epochs - 1))) / 2
                                 for t in range(epochs - 1)]
    elif scheduler == "step":
        sched = configs[0].scheduler
        assert isinstance(sched, torch.optim.lr_scheduler.StepLR)
        assert (sched.step_size, sched.gamma) == (2, 0.5)
        expected = [lr, lr, lr / 2, lr / 2, lr / 4]
    else:
        sched = configs[0].scheduler
        assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
        assert (sched.factor, sched.patience, sched.mode) == (0.5, 0, "max")
        assert configs[0].monitor == "val/loss"
        expected = _plateau_rates(lr, rates.val_loss, 0.5)
        if name != "sgd":  # Adam's loss falls here, so mode=max sees it stall: rates drop
            assert expected[-1] < lr
    assert len(rates.val_loss) == epochs and all(map(math.isfinite, rates.val_loss))
    assert rates.lr == pytest.approx(expected, rel=1e-9)


def test_layers_and_the_edge_transform_follow_pyg_conventions(small_dataset):
    layer = EdgeConvAttr(mlp_block(2 * 4 + 3, 8), in_dim=4, fused=True).eval()
    assert repr(layer).startswith("EdgeConvAttr(nn=Sequential(") and "in_dim=4" in repr(layer)
    x, e = torch.randn(5, 4), torch.randn(6, 3)
    edges = torch.tensor([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]])
    with torch.no_grad():
        before = layer(x, edges, e)
        layer.reset_parameters()  # new weights, and the eval-mode cache follows them
        after = layer(x, edges, e)
    assert not torch.allclose(before, after)
    transform = AddEdges(CROWDPOSE14, GraphConfig().edges)
    assert isinstance(transform, BaseTransform) and "crowdpose14" in repr(transform)
    ds = PoseMapsDataset(small_dataset)
    vertices = build_vertices(ds.load_maps(ds.image_ids[0]), ds.layout, GraphConfig())
    with_edges = transform(vertices)
    assert "edge_index" in with_edges and "edge_index" not in vertices  # input untouched


def test_the_person_scorer_learns_oks_and_travels_in_the_checkpoint(small_dataset, tmp_path):
    from posegnn.checkpoints import store_person_scorer
    from posegnn.data.datamodule import DataConfig, PoseGraphDataModule
    from posegnn.evaluation.runner import fit_person_scorer
    from posegnn.grouping.gnn import GNNGroupingConfig

    dm = PoseGraphDataModule(DataConfig(kind="maps", train=str(small_dataset),
                                        val_fraction=0.25, cache_dir=str(tmp_path)),
                             GraphConfig(), progress=False)
    dm.prepare_data()
    dm.setup("fit")
    in_dim, edge_dim = dm.dims()
    L.seed_everything(0)
    module = PosegnnModule(in_dim, edge_dim, model={"person_scorer": True},
                           graph=GraphConfig(), num_joints=14)
    trainer = _trainer(tmp_path, 3)
    trainer.fit(module, datamodule=dm)
    assert module.scorer is None  # not fitted yet: the grouping scores by heat
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    fit = fit_person_scorer(module, dm.dataset("train"), dm.ground_truth("train"), dm.layout,
                            GNNGroupingConfig())
    assert fit["people"] > 10 and fit["mse"] < 0.05
    store_person_scorer(path, module)
    loaded = load_module(path)
    features = torch.rand(5, loaded.person_scorer.mean.shape[0]).numpy()
    np.testing.assert_array_equal(loaded.scorer(features), module.scorer(features))
    assert ((0 <= loaded.scorer(features)) & (loaded.scorer(features) <= 1)).all()


def test_a_default_model_reads_maps_of_any_tag_dimension(tmp_path):
    from posegnn.data.graph import FeatureConfig
    from posegnn.data.synthetic import DetectorNoise, SyntheticConfig, generate_dataset
    cfg = GraphConfig()
    batches = {}
    for dim in (1, 3, 8):
        root = generate_dataset(tmp_path / f"d{dim}", SyntheticConfig(
            num_images=2, seed=5, noise=DetectorNoise(tag_dim=dim)), progress=False)
        ds, edges = PoseMapsDataset(root), AddEdges(CROWDPOSE14, cfg.edges)
        batches[dim] = Batch.from_data_list([edges(build_vertices(
            ds.load_maps(i), ds.layout, cfg, *ds.gt_keypoints(i))) for i in ds.image_ids])
    one = batches[1]
    module = PosegnnModule(one.x.shape[1], one.edge_attr.shape[1], graph=cfg).eval()
    for dim, batch in batches.items():  # built for 1-D tags, it reads 3-D and 8-D ones
        assert batch.tag.shape[1] == dim
        with torch.no_grad():
            logits = module(batch)
        assert logits.shape == (batch.pair_index.shape[1],) and torch.isfinite(logits).all()
    raw = GraphConfig(features=FeatureConfig(tag=True),
                      edges=EdgeConfig(tag_diff=True, tag_distance=False))  # graph=raw_tags
    one, three = (Batch.from_data_list([AddEdges(CROWDPOSE14, raw.edges)(build_vertices(
        ds.load_maps(i), ds.layout, raw, *ds.gt_keypoints(i))) for i in ds.image_ids])
        for ds in (PoseMapsDataset(tmp_path / f"d{dim}") for dim in (1, 3)))
    module = PosegnnModule(one.x.shape[1], one.edge_attr.shape[1], graph=raw).eval()
    assert module.probabilities(one)[0].shape == (one.pair_index.shape[1],)
    with pytest.raises(ValueError, match=r"graph=raw_tags.*these maps have D=3"):
        module.probabilities(three)  # a raw-tag model reads only its own tag dimension


def test_a_checkpoint_from_before_the_tag_distance_keeps_its_graphs():
    old = asdict(GraphConfig())
    old["features"]["tag"], old["edges"]["tag_diff"] = True, True
    del old["edges"]["tag_distance"]  # stored before the setting existed
    module = PosegnnModule(18, 30, graph=old)
    assert module.graph_cfg.edges.tag_distance is False and not module.graph_cfg.dimension_free
