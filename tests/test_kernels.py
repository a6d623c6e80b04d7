"""The compiled kernels (posegnn.kernels) give what their numpy references give: pairs,
decoder labels, assignment columns, person features, refined keypoints; and, end to end
on benchmark-like images (a packed crowd of about 60 people and the default mixed world)
with the shipped model, the same people, keypoints and scores from gnn and ae."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from posegnn import kernels
from posegnn.data import graph as graph_module
from posegnn.data.cache import build_graphs
from posegnn.data.graph import AddEdges
from posegnn.data.maps import PoseMapsDataset
from posegnn.data.synthetic import SyntheticConfig, generate_dataset
from posegnn.evaluation.runner import candidates_of
from posegnn.grouping import base, build_grouping, gnn
from posegnn.grouping.parallel_moves import parallel_moves_decode
from posegnn.grouping.person_features import person_features
from posegnn.grouping.refine import missing_pixels
from posegnn.pretrained import shipped_checkpoint
from posegnn.types import People


def test_assignment_breaks_ties_as_scipy_does() -> None:
    rng = np.random.default_rng(0)
    for trial in range(600):
        rows = int(rng.integers(1, 9))
        cols = rows + int(rng.integers(0, 9))
        cost = (rng.integers(-3, 3, (rows, cols)).astype(float) if trial % 2
                else rng.normal(size=(rows, cols)))
        if trial % 3 == 0:
            cost[:, rows:] = 0.0  # the decoder's start: a zero column per new person
        np.testing.assert_array_equal(kernels.assign(cost), linear_sum_assignment(cost)[1])


def test_parallel_moves_match_the_numpy_decoder() -> None:
    rng = np.random.default_rng(1)
    for trial in range(400):
        n, k = int(rng.integers(2, 50)), int(rng.integers(1, 8))
        joint = rng.integers(0, k, n)
        pairs = np.unique(np.sort(rng.integers(0, n, (2, int(rng.integers(1, 4 * n)))),
                                  axis=0), axis=1)
        w = (rng.normal(size=pairs.shape[1]) if trial % 2
             else rng.integers(-2, 3, pairs.shape[1]).astype(float))  # ties
        rounds = [None, 0, 1, 2][trial % 4]
        np.testing.assert_array_equal(
            parallel_moves_decode(n, joint, pairs, w, max_rounds=rounds),
            parallel_moves_decode(n, joint, pairs, w, max_rounds=rounds, reference=True))


def test_partner_pairs_match_the_numpy_selection() -> None:
    rng = np.random.default_rng(2)
    cfg = graph_module.EdgeConfig()
    for trial in range(60):
        n = int(rng.integers(2, 80))
        pos = torch.from_numpy(rng.integers(0, 20, (n, 2)).astype(np.float32))  # ties
        tag = torch.from_numpy(rng.integers(0, 3, (n, 1)).astype(np.float32))
        joint = torch.from_numpy(rng.integers(0, 14, n))
        cfg.partners = 1 + trial % 3
        new = graph_module.partner_pairs(pos, tag, joint, 100.0, 14, cfg)
        old = graph_module.partner_pairs(pos, tag, joint, 100.0, 14, cfg, reference=True)
        assert torch.equal(new, old)


def test_person_features_match_the_numpy_statistics() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        n, p = int(rng.integers(2, 60)), int(rng.integers(1, 8))
        assignment = rng.integers(-1, p, n)
        people = People(rng.random((p, 14, 3)).astype(np.float32), np.zeros(p, np.float32),
                        assignment)
        pairs = rng.integers(0, n, (2, 3 * n))
        prob = rng.random(3 * n)
        np.testing.assert_array_equal(person_features(people, pairs, prob),
                                      person_features(people, pairs, prob, reference=True))


@pytest.fixture(scope="module")
def packed_dataset(tmp_path_factory):
    """Two images of a packed crowd (about 60 people each), as the benchmarks use."""
    out = tmp_path_factory.mktemp("data") / "packed"
    return generate_dataset(out, SyntheticConfig(num_images=2, crowd="packed", seed=7),
                            progress=False)


def reference_paths(monkeypatch) -> None:
    """Every caller of a kernel switched to the kernel's numpy reference."""
    monkeypatch.setattr(gnn, "parallel_moves_decode",
                        functools.partial(parallel_moves_decode, reference=True))
    monkeypatch.setattr(gnn, "person_features",
                        functools.partial(person_features, reference=True))
    refine = base.refine_people
    monkeypatch.setattr(base, "refine_people", functools.partial(refine, reference=True))
    pairs = graph_module.partner_pairs
    monkeypatch.setattr(graph_module, "partner_pairs", functools.partial(pairs,
                                                                           reference=True))


def group_all(root, module, adjust: bool) -> list:
    """Pairs, then gnn and ae people (with refine, and ``adjust`` as asked) per image."""
    ds = PoseMapsDataset(root)
    cfg = module.graph_cfg
    edges = AddEdges(ds.layout, cfg.edges)
    groupings = [build_grouping("gnn", layout=ds.layout, scorer=module.scorer, adjust=adjust),
                 build_grouping("ae", layout=ds.layout, adjust=adjust)]
    out = []
    for g in build_graphs(ds, ds.image_ids, cfg, progress=False):
        data = edges(g)
        with torch.inference_mode():
            prob = torch.sigmoid(module.net(data)).numpy()
        cands, maps = candidates_of(g), ds.load_maps(int(g.image_id))
        pair_index = data.pair_index.numpy()
        out.append((pair_index, [grouping.group(cands, pair_index=pair_index, prob=prob,
                                                maps=maps) for grouping in groupings]))
    return out


@pytest.mark.parametrize("which", ["packed", "mixed"])
def test_compiled_groupings_give_todays_people(which, packed_dataset, small_dataset,
                                               monkeypatch) -> None:
    from posegnn.checkpoints import load_module

    module = load_module(shipped_checkpoint("crowdpose14"))
    root = packed_dataset if which == "packed" else small_dataset
    for adjust in (False, True):
        new = group_all(root, module, adjust)
        with monkeypatch.context() as m:
            reference_paths(m)
            old = group_all(root, module, adjust)
        for (pairs_new, people_new), (pairs_old, people_old) in zip(new, old, strict=True):
            np.testing.assert_array_equal(pairs_new, pairs_old)
            for a, b in zip(people_new, people_old, strict=True):  # gnn, then ae
                np.testing.assert_array_equal(a.assignment, b.assignment)
                np.testing.assert_array_equal(a.keypoints, b.keypoints)
                np.testing.assert_array_equal(a.scores, b.scores)


def test_refine_search_matches_the_numpy_search_with_vector_tags() -> None:
    """Random 2-d tags on a map larger than one search block: the same pixel per person
    and joint as the exhaustive numpy search."""
    from posegnn.data.maps import ImageMaps

    rng = np.random.default_rng(4)
    heat = rng.random((3, 40, 56)).astype(np.float32) ** 4
    tags = rng.normal(0, 2, (3, 20, 28, 2)).astype(np.float32)
    maps = ImageMaps(1, heat, tags, np.array([[2.0, 0, 0], [0, 2.0, 0]]))
    present = rng.random((9, 3)) < 0.3
    means = rng.normal(0, 2, (9, 2))
    means[4] = np.nan  # a person without a mean tag is left as it is
    np.testing.assert_array_equal(missing_pixels(present, means, maps),
                                  missing_pixels(present, means, maps, reference=True))


def test_without_numba_posegnn_says_so_in_one_line(monkeypatch) -> None:
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "numba", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "posegnn.kernels")
    with pytest.raises(ImportError) as err:
        importlib.import_module("posegnn.kernels")
    message = str(err.value)
    assert message.startswith("posegnn needs numba") and "\n" not in message
