"""Candidates, graphs, labels, the cache and the DataModule on small real datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from posegnn.data import cache as cache_mod
from posegnn.data.candidates import CandidateConfig, bilinear, find_peaks, max_filter
from posegnn.data.datamodule import DataConfig, PoseGraphDataModule, SyntheticSplits
from posegnn.data.graph import AddEdges, EdgeConfig, FeatureConfig, GraphConfig, build_vertices
from posegnn.data.maps import DatasetError, PoseMapsDataset
from posegnn.data.synthetic import DetectorNoise, SyntheticConfig, generate_dataset
from posegnn.layouts import CROWDPOSE14


def _gaussian(u: float, v: float, size: int = 64, sigma: float = 2.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_peaks_are_refined_to_sub_pixel_positions():
    heat = torch.from_numpy(np.stack([_gaussian(20.3, 31.7), _gaussian(40.6, 10.2)]))
    peaks = find_peaks(heat, CandidateConfig(threshold=0.5))
    assert peaks.joint.tolist() == [0, 1]
    expected = torch.tensor([[20.3, 31.7], [40.6, 10.2]])
    assert torch.allclose(peaks.uv, expected, atol=0.15)
    coarse = find_peaks(heat, CandidateConfig(threshold=0.5, subpixel=False))
    assert (coarse.uv - expected).abs().max() > (peaks.uv - expected).abs().max()


def test_nms_top_k_and_threshold():
    heat = np.maximum.reduce([_gaussian(10, 10), _gaussian(12, 10) * 0.9,
                              _gaussian(40, 40) * 0.5, _gaussian(50, 20) * 0.05])
    peaks = find_peaks(torch.from_numpy(heat[None]), CandidateConfig(nms_kernel=5, top_k=30,
                                                                     threshold=0.1))
    assert len(peaks.score) == 2  # the shoulder at (12, 10) is suppressed, 0.05 is too weak
    top1 = find_peaks(torch.from_numpy(heat[None]), CandidateConfig(top_k=1))
    assert top1.score.tolist() == pytest.approx([1.0], abs=1e-3)
    with pytest.raises(ValueError, match="odd"):
        find_peaks(torch.from_numpy(heat[None]), CandidateConfig(nms_kernel=4))


def test_bilinear_sampling_interpolates():
    maps = torch.arange(12.0).reshape(1, 3, 4)  # value = 4 * row + col
    points = torch.tensor([[1.5, 0.5], [3.0, 2.0], [0.0, 0.0]])
    assert bilinear(maps, points)[:, 0].tolist() == pytest.approx([3.5, 11.0, 0.0])


def _graph(dataset_dir, cfg: GraphConfig | None = None, index: int = 0):
    ds = PoseMapsDataset(dataset_dir)
    cfg = cfg or GraphConfig()
    image_id = ds.image_ids[index]
    gt, areas = ds.gt_keypoints(image_id)
    return ds, build_vertices(ds.load_maps(image_id), ds.layout, cfg, gt, areas), gt


def test_clean_maps_give_candidates_on_the_ground_truth(clean_dataset):
    ds, g, gt = _graph(clean_dataset)
    assert (g.person >= 0).all(), "every candidate of a noiseless detector matches someone"
    target = gt[g.person.numpy(), g.joint.numpy(), :2]
    assert np.abs(g.pos.numpy() - target).max() < 0.05 * ds.image(int(g.image_id))["width"]
    labeled = (gt[..., 2] > 0).sum()
    assert len(g.joint) <= labeled


def test_pairs_labels_and_edges(small_dataset):
    ds, g, _ = _graph(small_dataset)
    full = AddEdges(ds.layout, EdgeConfig(strategy="radius", radius=0))(g)
    i, j = full.pair_index
    assert (i < j).all() and (full.joint[i] != full.joint[j]).all()
    n_types = torch.bincount(g.joint, minlength=14)
    expected = (n_types.sum() ** 2 - (n_types**2).sum()) // 2
    assert full.pair_index.shape[1] == expected  # every pair of different joint types
    same = (g.person[i] == g.person[j]) & (g.person[i] >= 0)
    assert torch.equal(full.y.bool(), same)
    m = full.pair_index.shape[1]
    assert full.edge_index.shape == (2, 2 * m)
    assert torch.equal(full.edge_index[:, m:], full.pair_index.flip(0))
    assert full.pair_attr.shape == full.pair_attr_rev.shape == (m, full.edge_attr.shape[1])


def test_partner_pairs_are_each_candidates_cheapest_of_every_other_type(small_dataset):
    ds, g, _ = _graph(small_dataset)
    cfg = EdgeConfig(strategy="partners", partners=2, partner_scale=0.1)
    data = AddEdges(ds.layout, cfg)(g)
    cost = (torch.cdist(g.pos, g.pos) / (0.1 * float(g.long_side))
            + torch.cdist(g.tag * float(g.tag_unit), g.tag * float(g.tag_unit)))
    expected = set()
    for i in range(g.num_nodes):
        for t in set(g.joint.tolist()) - {int(g.joint[i])}:
            others = (g.joint == t).nonzero().squeeze(1)
            for j in others[cost[i, others].argsort()[:2]].tolist():
                expected.add((min(i, j), max(i, j)))
    assert set(map(tuple, data.pair_index.T.tolist())) == expected
    assert (data.pair_index[0] < data.pair_index[1]).all()
    # linear in the candidates: at most partners * (K - 1) chosen by each
    assert data.pair_index.shape[1] <= g.num_nodes * 2 * 13
    assert data.pair_index.shape[1] < AddEdges(ds.layout, EdgeConfig(strategy="radius"))(
        g).pair_index.shape[1]
    with pytest.raises(ValueError, match="partners"):
        GraphConfig(edges=EdgeConfig(partners=0))


def test_partner_pairs_keep_order_and_break_ties_towards_the_first_candidate():
    """Pairs come sorted by (i, j); of equal costs the lower-numbered candidate is the
    partner: on integer positions and tags (many exact ties), against a plain loop."""
    from posegnn.data.graph import partner_pairs

    gen = torch.Generator().manual_seed(0)
    for partners in (1, 2, 3):
        n = 30
        pos = torch.randint(0, 4, (n, 2), generator=gen).float()
        tag = torch.randint(0, 2, (n, 1), generator=gen).float()
        joint = torch.randint(0, 5, (n,), generator=gen)
        pairs = partner_pairs(pos, tag, joint, 10.0, 5, EdgeConfig(partners=partners))
        cost = torch.cdist(pos, pos) + torch.cdist(tag, tag)  # partner_scale * 10 = 1
        expected = set()
        for i in range(n):
            for t in set(joint.tolist()) - {int(joint[i])}:
                others = sorted((float(cost[i, j]), j) for j in range(n) if joint[j] == t)
                expected |= {(min(i, j), max(i, j)) for _, j in others[:partners]}
        assert {tuple(p) for p in pairs.T.tolist()} == expected
        key = pairs[0] * n + pairs[1]
        assert pairs.dtype == torch.long and pairs.is_contiguous()
        assert (pairs[0] < pairs[1]).all() and (key[1:] > key[:-1]).all()


@pytest.mark.parametrize("strategy", ["partners", "radius", "knn", "skeleton"])
def test_edge_strategies(small_dataset, strategy):
    ds, g, _ = _graph(small_dataset)
    cfg = EdgeConfig(strategy=strategy, radius=0.3, k=4)
    data = AddEdges(ds.layout, cfg)(g)
    i, j = data.pair_index
    assert data.pair_index.shape[1] > 0
    if strategy == "radius":
        assert ((data.pos[i] - data.pos[j]).norm(dim=1) <= 0.3 * data.long_side + 1e-4).all()
    if strategy == "skeleton":
        limbs = torch.from_numpy(CROWDPOSE14.limb_matrix())
        assert (limbs[data.joint[i], data.joint[j]] > 0).all()
    if strategy == "knn":  # every candidate keeps at least its k nearest partners
        degree = torch.bincount(data.pair_index.flatten(), minlength=data.num_nodes)
        assert (degree >= 4).all()


def test_feature_switches_and_normalization(small_dataset):
    raw = FeatureConfig(tag=True)
    ds, base, _ = _graph(small_dataset, GraphConfig(normalization="none", features=raw))
    _, per_map, _ = _graph(small_dataset, GraphConfig(normalization="per_map", features=raw))
    assert base.x.shape == per_map.x.shape == (base.num_nodes, 1 + 1 + 2 + 14)
    assert not torch.allclose(base.x[:, :2], per_map.x[:, :2])  # tag and score standardized
    assert torch.equal(base.tag, per_map.tag)  # the raw tag AE uses is never normalized
    rich = GraphConfig(features=FeatureConfig(tag=True, all_tags=True, all_heats=True))
    _, g, _ = _graph(small_dataset, rich)
    assert g.x.shape[1] == 1 + 14 + 1 + 2 + 14 + 14
    with pytest.raises(ValueError, match="normalization"):
        GraphConfig(normalization="global")


_BUILD_IN_A_FRESH_PROCESS = """
import sys, torch
from posegnn.data.graph import AddEdges, GraphConfig, build_vertices
from posegnn.data.maps import PoseMapsDataset
ds = PoseMapsDataset(sys.argv[1])
image_id = ds.image_ids[3]
gt, areas = ds.gt_keypoints(image_id)
g = AddEdges(ds.layout, GraphConfig().edges)(
    build_vertices(ds.load_maps(image_id), ds.layout, GraphConfig(), gt, areas))
torch.save({k: g[k] for k in sys.argv[3:]}, sys.argv[2])
"""


def test_graphs_do_not_depend_on_the_process(small_dataset, tmp_path):
    """Two fresh interpreters with different hash seeds build the same graph, bit for bit."""
    keys = ["x", "pos", "joint", "person", "edge_index", "edge_attr", "pair_index", "y"]
    built = []
    for seed in ("1", "2"):
        out = tmp_path / f"graph-{seed}.pt"
        env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", _BUILD_IN_A_FRESH_PROCESS,
                               str(small_dataset), str(out), *keys],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        built.append(torch.load(out, weights_only=True))
    a, b = built
    for key in keys:
        assert a[key].numel() > 0, key
        assert torch.equal(a[key], b[key]), key


def test_cache_key_covers_data_and_every_vertex_setting(small_dataset):
    ds = PoseMapsDataset(small_dataset)
    key = cache_mod.cache_key(ds, ds.image_ids, GraphConfig())
    assert key == cache_mod.cache_key(ds, ds.image_ids, GraphConfig())
    variants = [GraphConfig(normalization="per_map"),
                GraphConfig(candidates=CandidateConfig(top_k=5)),
                GraphConfig(features=FeatureConfig(all_heats=True)),
                GraphConfig(match_threshold=0.7)]
    keys = {cache_mod.cache_key(ds, ds.image_ids, v) for v in variants}
    assert key not in keys and len(keys) == len(variants)
    assert key != cache_mod.cache_key(ds, ds.image_ids[:-1], GraphConfig())


def test_cache_is_built_once_and_never_half_written(small_dataset, tmp_path, monkeypatch):
    ds = PoseMapsDataset(small_dataset)
    path = cache_mod.cached_graphs(ds, ds.image_ids, GraphConfig(), tmp_path, "train",
                                   progress=False)
    stamp = path.stat().st_mtime_ns
    assert cache_mod.cached_graphs(ds, ds.image_ids, GraphConfig(), tmp_path, "train",
                                   progress=False) == path
    assert path.stat().st_mtime_ns == stamp
    assert len(cache_mod.load_graphs(path)) == len(ds)

    calls = {"n": 0}
    real = cache_mod.build_vertices

    def dies_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "build_vertices", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        cache_mod.cached_graphs(ds, ds.image_ids, GraphConfig(normalization="per_map"), tmp_path,
                                "train", progress=False)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [path.name]
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written file either


def test_datamodule_on_a_maps_dataset_splits_val_off_train(small_dataset, tmp_path):
    data = DataConfig(kind="maps", train=str(small_dataset), test=str(small_dataset),
                      val_fraction=0.25, cache_dir=str(tmp_path), batch_size=3)
    dm = PoseGraphDataModule(data, GraphConfig(), progress=False)
    dm.prepare_data()
    dm.setup("fit")
    train_ids = {int(g.image_id) for g in dm.graphs["train"]}
    val_ids = {int(g.image_id) for g in dm.graphs["val"]}
    assert len(val_ids) == 2 and not train_ids & val_ids and len(train_ids) == 6
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 3
    assert batch.pair_index.max() < batch.num_nodes
    assert (batch.batch[batch.pair_index[0]] == batch.batch[batch.pair_index[1]]).all()
    stats = dm.statistics("train")
    assert 0 < stats["positive_pairs"] < 0.9 and stats["matched_candidates"] > 0.5
    assert 0.5 < stats["gt_joints_covered"] <= 1 and stats["images"] == 6
    assert dm.feature_mean.shape == (dm.dims()[0],)


def test_an_evaluation_datamodule_generates_and_opens_only_its_split(tmp_path):
    """The layout and the graphs of a job limited to the test split come from that split:
    no other synthetic split is generated; other graph settings keep the opened data."""
    data = DataConfig(root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"),
                      synthetic=SyntheticSplits(num_train=3, num_val=2, num_test=2,
                                                layout="coco17"))
    dm = PoseGraphDataModule(data, GraphConfig(), progress=False, splits=("test",))
    assert dm.layout.name == "coco17" and dm.available_splits() == ("test",)
    other = dm.with_graph(GraphConfig(normalization="per_map"))
    assert len(other.dataset("test")) == 2 and other.graph_cfg.normalization == "per_map"
    assert len(other.dataset("test", limit=1)) == 1
    assert other.ground_truth("test", limit=1)["images"][0]["id"] == int(
        other.dataset("test").graphs[0].image_id)
    generated = [p.name.split("-")[1] for p in (tmp_path / "data").glob("synthetic-*")]
    assert generated == ["test"]


def test_datamodule_reports_missing_splits(tmp_path):
    dm = PoseGraphDataModule(DataConfig(kind="maps", cache_dir=str(tmp_path)), GraphConfig())
    with pytest.raises(ValueError, match="data.test is not set"):
        dm.source("test")


def test_real_poses_come_from_data_poses_and_its_absence_is_explained(tmp_path, dev_poses):
    data = DataConfig(kind="poses", root=str(tmp_path / "data"), cache_dir=str(tmp_path),
                      synthetic=SyntheticSplits(num_train=4, num_val=2, num_test=2))
    with pytest.raises(DatasetError, match="add data.poses="):
        PoseGraphDataModule(data, GraphConfig(), progress=False).source("test")
    with pytest.raises(DatasetError, match="data.poses=nope.json: no such file"):
        PoseGraphDataModule(replace(data, poses="nope.json"), GraphConfig(),
                            progress=False).source("test")
    dm = PoseGraphDataModule(replace(data, poses=str(dev_poses)), GraphConfig(),
                             progress=False)
    ids = {split: set(dm.source(split)[1]) for split in ("train", "val", "test")}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    assert not ids["train"] & ids["test"] and not ids["val"] & ids["test"]


def test_max_filter_equals_max_pooling():
    maps = torch.rand(3, 40, 33)
    pooled = torch.nn.functional.max_pool2d(maps[None], 5, stride=1, padding=2)[0]
    assert torch.equal(max_filter(maps, 2), pooled)


def test_local_maxima_equal_the_dense_max_filter(small_dataset):
    """The sparse check (only pixels above the threshold, windows clamped at the border)
    finds exactly the pixels of ``maps == max_filter(maps) & maps > threshold``, in the
    same order: on real maps, on coarse random maps full of ties and border peaks, and
    with a threshold that lets most pixels through (the dense path)."""
    from posegnn.data.candidates import local_maxima

    ds = PoseMapsDataset(small_dataset)
    gen = torch.Generator().manual_seed(0)
    cases = [torch.from_numpy(ds.load_maps(i).heatmaps) for i in ds.image_ids[:3]]
    for _ in range(20):  # sparse (the sparse path) and dense, with many exact ties
        coarse = torch.randint(1, 4, (3, 9, 7), generator=gen).float() / 4
        cases += [coarse, coarse * (torch.rand(3, 9, 7, generator=gen) < 0.04)]
    for maps in cases:
        for radius in (1, 2, 3):
            for threshold in (0.1, 0.3, -1.0):
                dense = ((maps == max_filter(maps, radius)) & (maps > threshold)).nonzero(
                    as_tuple=True)
                sparse = local_maxima(maps, radius, threshold)
                assert all(torch.equal(a, b) for a, b in zip(dense, sparse, strict=True))
    assert all(len(t) == 0 for t in local_maxima(torch.zeros(2, 5, 5), 2, 0.1))


def test_a_plateau_gives_one_candidate():
    heat = torch.zeros(1, 32, 32)
    heat[0, 10, 10:12] = 0.8  # two equal neighbours, as float16 rounding makes them
    heat[0, 20, 20] = 0.5
    peaks = find_peaks(heat, CandidateConfig())
    assert len(peaks.score) == 2 and peaks.uv[0, 1] == 10


def test_maps_rendered_from_ground_truth_group_perfectly(tmp_path_factory):
    """Noiseless maps with well-separated tags: ae and oracle find every person exactly,
    through the whole pipeline (peaks, graphs, groupings, pycocotools)."""
    from posegnn.config import GroupingConfig
    from posegnn.data.graph import GraphList
    from posegnn.data.synthetic import SyntheticConfig, generate_dataset
    from posegnn.evaluation.runner import evaluate_groupings
    from tests.conftest import CLEAN

    out = tmp_path_factory.mktemp("perfect") / "data"
    noise = replace(CLEAN, tag_spread=4.0, merge_distance=0.0)
    ds = PoseMapsDataset(generate_dataset(out, SyntheticConfig(num_images=6, seed=3,
                                                               crowd="easy", noise=noise),
                                          progress=False))
    cfg = GraphConfig()
    graphs = [build_vertices(ds.load_maps(i), ds.layout, cfg, *ds.gt_keypoints(i))
              for i in ds.image_ids]
    metrics = evaluate_groupings(ds.coco_dict(), ds.layout,
                                 GraphList(graphs, AddEdges(ds.layout, cfg.edges)),
                                 GroupingConfig(run=["ae", "oracle"]), maps=ds.load_maps)
    assert metrics["test/oracle/AP"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["test/ae/AP"] == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def tag_dim_datasets(tmp_path_factory) -> dict[int, object]:
    """The same four images with 1-D and with 3-D tags."""
    out = tmp_path_factory.mktemp("tagdim")
    return {d: generate_dataset(out / f"d{d}", SyntheticConfig(
        num_images=4, seed=1, noise=DetectorNoise(tag_dim=d)), progress=False) for d in (1, 3)}


def _edged(dataset_dir, cfg: GraphConfig):
    ds, g, _ = _graph(dataset_dir, cfg)
    return AddEdges(ds.layout, cfg.edges)(g)


RAW_TAGS = GraphConfig(features=FeatureConfig(tag=True),
                       edges=EdgeConfig(tag_diff=True, tag_distance=False))  # graph=raw_tags


def test_default_graphs_have_the_same_widths_for_every_tag_dimension(tag_dim_datasets):
    free = GraphConfig()
    assert free.dimension_free and not RAW_TAGS.dimension_free
    one, three = (_edged(tag_dim_datasets[d], free) for d in (1, 3))
    assert one.tag.shape[1] == 1 and three.tag.shape[1] == 3
    assert one.x.shape[1] == three.x.shape[1] and one.edge_attr.shape[1] == three.edge_attr.shape[1]
    raw = [_edged(tag_dim_datasets[d], RAW_TAGS) for d in (1, 3)]
    assert raw[1].x.shape[1] == raw[0].x.shape[1] + 2  # the raw tag: D numbers
    # in 1-D the tag distance is the per-dimension difference, so only the vertex tag differs
    both = _edged(tag_dim_datasets[1], replace(free, edges=replace(free.edges, tag_diff=True)))
    at = 2 + 1  # offset, distance, then the tag difference and the tag distance
    assert torch.equal(both.pair_attr[:, at], both.pair_attr[:, at + 1])
    assert torch.equal(one.pair_attr[:, at], both.pair_attr[:, at])
    # and in D dimensions it is the norm of the difference
    i, j = three.pair_index
    norm = (three.feat_tag[j] - three.feat_tag[i]).norm(dim=1)
    assert torch.allclose(three.pair_attr[:, at], norm)


def test_a_training_split_of_varying_tag_dimension_caches_and_batches(tmp_path):
    data = DataConfig(root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"),
                      batch_size=6, synthetic=SyntheticSplits(
                          num_train=6, num_val=2, num_test=2, noise_ranges={"tag_dim": [1, 4]}))
    with pytest.raises(ValueError, match="graph=raw_tags"):
        PoseGraphDataModule(data, RAW_TAGS, progress=False).source("train")
    free = GraphConfig()
    dm = PoseGraphDataModule(data, free, progress=False)
    ds, ids = dm.source("train")
    dims = {ds.load_maps(i).tags.shape[3] for i in ids}
    assert len(dims) > 1  # the split mixes tag dimensions
    dm.prepare_data()
    dm.setup("fit")
    graphs = dm.graphs["train"]  # tags zero-padded to the widest: distances unchanged
    assert {g.tag.shape[1] for g in graphs} == {max(dims)}
    for g, i in zip(graphs, ids, strict=True):
        own = build_vertices(ds.load_maps(i), ds.layout, free, *ds.gt_keypoints(i))
        d = own.tag.shape[1]
        assert torch.equal(g.tag[:, :d], own.tag) and not g.tag[:, d:].any()
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 6 and batch.x.shape[1] == graphs[0].x.shape[1]
