"""Per-image units (graph.units): a detector whose tags are spread three times as wide, or
whose heat is 20% higher, or whose image is drawn at twice the size, gives the same
features once the image's own units are used, and other features without them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from posegnn.data.graph import (
    AddEdges,
    GraphConfig,
    ImageUnitsConfig,
    build_vertices,
    heat_level,
    limb_length,
    tag_spread,
)
from posegnn.data.maps import PoseMapsDataset

NO_UNITS = GraphConfig(units=ImageUnitsConfig(tags=False, heat=False, lengths=False))


def _graph(maps, ds, cfg: GraphConfig, size: float = 1.0):
    """The graph of ``maps``, its ground truth drawn ``size`` times as large."""
    gt, areas = ds.gt_keypoints(maps.image_id)
    gt, areas = gt * np.array([size, size, 1.0]), areas * size ** 2
    return AddEdges(ds.layout, cfg.edges)(build_vertices(maps, ds.layout, cfg, gt, areas))


def _other_detector(maps):
    """The same image from a detector with tags x3 (about another value), heat x1.2
    and maps over an image of twice the size."""
    return replace(maps, tags=maps.tags * 3.0 + 5.0, heatmaps=maps.heatmaps * 1.2,
                   map_to_image=maps.map_to_image * 2.0)


@pytest.mark.parametrize("units, same", [(GraphConfig(), True), (NO_UNITS, False)])
def test_image_units_make_features_independent_of_the_detectors_scales(small_dataset,
                                                                        units, same):
    ds = PoseMapsDataset(small_dataset)
    maps = ds.load_maps(ds.image_ids[0])
    a, b = _graph(maps, ds, units), _graph(_other_detector(maps), ds, units, size=2.0)
    assert torch.equal(a.pair_index, b.pair_index) or not same
    close = (torch.allclose(a.x, b.x, atol=1e-4)
             and torch.allclose(a.edge_attr, b.edge_attr, atol=1e-4))
    assert close == same
    assert torch.equal(a.y, b.y) or not same


def test_each_unit_measures_what_it_names():
    joint = torch.tensor([0, 1, 2, 0, 1, 2])
    tag = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])  # two people
    assert tag_spread(tag, joint) == pytest.approx(0.1)
    assert tag_spread(tag * 4, joint) == pytest.approx(0.4)
    assert tag_spread(tag[:1], joint[:1]) == 0.0  # one joint type: nothing to compare
    score = torch.tensor([0.9, 0.5, 0.7, 0.3, 0.8, 0.2])
    assert heat_level(score, joint) == pytest.approx(0.8)  # strongest per type: .9 .8 .7
    pos = torch.tensor([[0.0, 0.0], [0.0, 30.0], [0.0, 70.0],
                        [500.0, 0.0], [500.0, 30.0], [500.0, 70.0]])
    limbs = np.zeros((3, 3), dtype=np.int64)
    limbs[0, 1] = limbs[1, 0] = 1  # one limb: joints 0-1; joint 2 has none
    assert limb_length(pos, joint, limbs) == pytest.approx(30.0)
    assert limb_length(pos, joint, np.zeros((3, 3), dtype=np.int64)) == 0.0
