"""HigherHRNet's adjust and refine after grouping, on hand-made maps, from the command
line and in an evaluation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from posegnn.config import CONF_DIR, register_schemas
from posegnn.data.candidates import bilinear
from posegnn.data.maps import ImageMaps
from posegnn.grouping import build_grouping
from posegnn.grouping.refine import (
    best_pixels,
    hottest_pixels,
    refine_people,
    tag_grid,
    tags_at_pixels,
)
from posegnn.types import Candidates

register_schemas()
STRIDE = 2.0  # image pixels per heatmap pixel in the hand-made maps


def blob(heat: np.ndarray, col: int, row: int, peak: float, right: float = 0.0,
         down: float = 0.0) -> None:
    """A 3x3 peak at (col, row); ``right``/``down`` raise the right/lower neighbour."""
    heat[row - 1:row + 2, col - 1:col + 2] = np.maximum(heat[row - 1:row + 2, col - 1:col + 2],
                                                        0.5 * peak)
    heat[row, col] = peak
    heat[row, col + 1] += right
    heat[row + 1, col] += down


def make_maps(heat: np.ndarray, tags: np.ndarray) -> ImageMaps:
    """Maps with heatmap pixel (u, v) at image point (2u, 2v)."""
    affine = np.array([[STRIDE, 0.0, 0.0], [0.0, STRIDE, 0.0]])
    return ImageMaps(1, heat.astype(np.float32), tags.astype(np.float32)[..., None], affine)


def two_people_maps() -> ImageMaps:
    """Two joint types on a 16x16 heatmap (8x8 tags): the left half of each tag map is
    -1, the right half +1. Joint 0 has a peak in each half; joint 1 has a weak peak at
    (3, 10) on the left and a strong one at (12, 4) on the right, each with its right
    neighbour above its left one and equal upper and lower neighbours."""
    heat = np.zeros((2, 16, 16))
    blob(heat[0], 3, 5, 0.8)
    blob(heat[0], 12, 6, 0.9)
    blob(heat[1], 3, 10, 0.4, right=0.05)
    blob(heat[1], 12, 4, 0.95, right=0.05)
    tags = np.where(np.arange(8) < 4, -1.0, 1.0)[None, None, :].repeat(8, axis=1)
    return make_maps(heat, tags.repeat(2, axis=0))


def test_adjust_moves_a_keypoint_a_quarter_pixel_toward_the_higher_neighbour():
    heat = np.zeros((1, 12, 12))
    blob(heat[0], 5, 6, 0.9, right=0.1)  # right neighbour above the left, upper above lower
    heat[0, 5, 5] += 0.05
    maps = make_maps(heat, np.zeros((1, 6, 6)))
    # the candidate sits near its peak, with a sub-pixel offset of its own
    cands = Candidates(pos=[[5.3 * STRIDE, 5.8 * STRIDE]], joint=[0], score=[0.9], tag=[[0.0]])
    plain = build_grouping("ae", num_joints=1, refine=False).group(cands, maps=maps)
    adjusted = build_grouping("ae", num_joints=1, adjust=True, refine=False).group(cands, maps=maps)
    np.testing.assert_allclose(plain.keypoints[0, 0, :2], [10.6, 11.6], atol=1e-5)
    # integer peak (5, 6), then +1/4 toward the right and -1/4 toward the upper neighbour
    np.testing.assert_allclose(adjusted.keypoints[0, 0], [5.25 * STRIDE, 5.75 * STRIDE, 0.9],
                               atol=1e-5)
    assert adjusted.scores[0] == pytest.approx(plain.scores[0])


def test_refine_fills_a_missing_joint_at_the_pixel_of_the_persons_tag():
    maps = two_people_maps()
    # only joint 0 was detected, one candidate per person; tags -1 (left) and +1 (right)
    cands = Candidates(pos=[[3 * STRIDE, 5 * STRIDE], [12 * STRIDE, 6 * STRIDE]], joint=[0, 0],
                       score=[0.8, 0.9], tag=[[-1.0], [1.0]])
    plain = build_grouping("ae", num_joints=2, refine=False).group(cands, maps=maps)
    refined = build_grouping("ae", num_joints=2, refine=True).group(cands, maps=maps)
    assert (plain.keypoints[:, 1] == 0).all()
    by_x = {round(float(p[0, 0])): p for p in refined.keypoints}
    left, right = by_x[6], by_x[24]
    # the left person gets the weak peak of its own tag, not the stronger one on the right
    # (at its integer pixel (3, 10) plus HigherHRNet's quarter shifts: +1/4 toward the
    # higher right neighbour, -1/4 where the upper and lower ones are equal)
    np.testing.assert_allclose(left[1], [3.25 * STRIDE, 9.75 * STRIDE, 0.4], atol=1e-5)
    np.testing.assert_allclose(right[1], [12.25 * STRIDE, 3.75 * STRIDE, 0.95], atol=1e-5)
    # present joints, scores (taken before refine, as HigherHRNet does) and the
    # assignment stay as they were
    np.testing.assert_array_equal(refined.keypoints[:, 0], plain.keypoints[:, 0])
    np.testing.assert_array_equal(refined.scores, plain.scores)
    np.testing.assert_array_equal(refined.assignment, plain.assignment)


def test_refine_leaves_a_joint_missing_where_the_heatmap_is_empty():
    maps = two_people_maps()
    maps.heatmaps[1] = 0.0
    cands = Candidates(pos=[[6.0, 10.0]], joint=[0], score=[0.8], tag=[[-1.0]])
    oracle = build_grouping("oracle", num_joints=2, refine=True)
    refined = oracle.group(cands, person=[0], maps=maps)
    assert (refined.keypoints[0, 1] == 0).all()


def test_the_pruned_search_finds_the_full_argmax():
    """``best_pixels`` searches the hottest pixels first; on random maps with tags far
    from every hot pixel it must still agree with the argmax over all pixels."""
    rng = np.random.default_rng(0)
    heat = rng.uniform(0, 1, (1, 48, 40)) ** 8
    tags = rng.normal(0, 2, (1, 24, 20))
    maps = make_maps(heat, tags)
    means = np.array([[0.0], [3.0], [-6.0], [40.0]], np.float32)
    grid = tag_grid(maps, 0)
    full = (heat[0].reshape(-1)[None] - np.round(np.abs(grid[None, :, 0] - means))).argmax(1)
    found = best_pixels(heat[0].reshape(-1), means, lambda f: tags_at_pixels(maps, 0, f),
                        lambda: grid)
    np.testing.assert_array_equal(found, full)
    # both give the bilinear samples the candidates' tags are (data.graph.sample_maps)
    flat = np.arange(48 * 40)
    uv = torch.from_numpy(np.column_stack([flat % 40, flat // 40]) / 2.0).float()
    sampled = bilinear(torch.from_numpy(maps.tags[0].transpose(2, 0, 1).copy()), uv).numpy()
    np.testing.assert_allclose(grid, sampled, atol=1e-6)
    np.testing.assert_allclose(tags_at_pixels(maps, 0, flat), sampled, atol=1e-6)


@pytest.mark.parametrize("kind", ["peaked", "sample_misleads", "flat"])
def test_the_hottest_pixels_hold_every_pixel_above_their_bound(kind):
    """Whatever the map, the pixels left out are no hotter than the bound, and the set
    stays near the asked size (the threshold from a sample, else the exact top)."""
    rng = np.random.default_rng(1)
    heat = (rng.uniform(0, 1, 256 * 256) ** 8).astype(np.float32)
    if kind == "sample_misleads":  # every 16th pixel cold, the others hot
        heat = np.full(256 * 256, 0.9, np.float32)
        heat[::16] = 0.0
    elif kind == "flat":
        heat = np.zeros(256 * 256, np.float32)
    idx, bound = hottest_pixels(heat, 1024)
    assert (np.diff(idx) > 0).all()
    assert 0 < len(idx) <= 4 * 1024
    outside = np.ones(heat.size, bool)
    outside[idx] = False
    assert heat[outside].max() <= bound


def test_without_maps_a_grouping_leaves_the_steps_out():
    cands = Candidates(pos=[[6.0, 10.0]], joint=[0], score=[0.8], tag=[[-1.0]])
    on = build_grouping("gnn", num_joints=2, refine=True)
    off = build_grouping("gnn", num_joints=2, refine=False)
    kwargs = {"pair_index": np.zeros((2, 0)), "prob": np.zeros(0)}
    np.testing.assert_array_equal(on.group(cands, **kwargs).keypoints,
                                  off.group(cands, **kwargs).keypoints)
    assert on.group(cands, maps=two_people_maps(), **kwargs).keypoints[0, 1, 2] > 0
    people = off.group(cands, **kwargs)
    assert refine_people(people, cands, two_people_maps(), adjust=False,
                         refine=False) is people  # nothing asked, nothing read


def test_the_settings_compose_from_the_command_line():
    overrides = ["grouping.ae.adjust=true", "grouping.ae.refine=false",
                 "grouping.gnn.refine=false"]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    built = OmegaConf.to_object(cfg).grouping
    assert (built.ae.adjust, built.ae.refine, built.gnn.adjust, built.gnn.refine,
            built.oracle.adjust, built.oracle.refine) == (True, False, False, False, False, True)


def test_a_wrong_value_fails_at_start_naming_the_setting(tmp_path):
    """A bool setting is checked by Hydra when it merges the override: its message, not
    a traceback, and no data work."""
    run = subprocess.run(
        [str(Path(sys.executable).with_name("posegnn-eval")), "grouping.ae.refine=maybe",
         f"paths.output_dir={tmp_path}"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[0] == "Error merging override grouping.ae.refine=maybe"
    assert "Value 'maybe' is not a valid bool" in run.stderr
    assert not (tmp_path / "data").exists()


def test_evaluation_with_refinement_writes_its_metrics(small_dataset, tmp_path):
    from posegnn.config import AEGroupingConfig, GroupingConfig
    from posegnn.data.cache import build_graphs
    from posegnn.data.graph import AddEdges, GraphConfig, GraphList
    from posegnn.data.maps import PoseMapsDataset
    from posegnn.evaluation.runner import evaluate_groupings

    ds = PoseMapsDataset(small_dataset)
    cfg = GraphConfig()
    graphs = build_graphs(ds, ds.image_ids, cfg, progress=False)
    dataset = GraphList(graphs, AddEdges(ds.layout, cfg.edges))
    gt = ds.coco_dict()
    plain = evaluate_groupings(gt, ds.layout, dataset,
                               GroupingConfig(run=["ae"], ae=AEGroupingConfig(refine=False)))
    read: list[int] = []

    def maps(image_id: int) -> ImageMaps:
        read.append(image_id)
        return ds.load_maps(image_id)

    steps = GroupingConfig(run=["ae", "oracle"], ae=AEGroupingConfig(adjust=True))  # + refine
    with pytest.raises(ValueError, match="grouping.ae.adjust/refine need the images' maps"):
        evaluate_groupings(gt, ds.layout, dataset, steps)
    refined = evaluate_groupings(gt, ds.layout, dataset, steps, results_dir=tmp_path,
                                 maps=maps)
    assert sorted(read) == sorted(ds.image_ids)  # once per image for both groupings
    for name in ("ae", "oracle"):
        assert 0.0 <= refined[f"test/{name}/AP"] <= 1.0
        assert refined[f"test/{name}/sec_per_image"] > 0
        assert (tmp_path / f"test_{name}_results.json").is_file()
    # filled joints: the refined people hold keypoints where the plain ones had none
    assert refined["test/ae/AP"] != plain["test/ae/AP"]
