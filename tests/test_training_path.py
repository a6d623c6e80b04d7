"""The training loader builds each graph's pairs once and keeps them."""

from __future__ import annotations

import torch

from posegnn.data.datamodule import DataConfig, KeptEdges, PoseGraphDataModule
from posegnn.data.graph import GraphConfig


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
