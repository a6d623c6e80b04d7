"""Figures render to PNG files; the PredictionFigures callback draws during a tiny fit and
hands its images to an offline W&B run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import posegnn.tasks.train as train_module
from posegnn.config import CONF_DIR, register_schemas
from posegnn.data.graph import AddEdges, GraphConfig, build_vertices
from posegnn.data.maps import PoseMapsDataset
from posegnn.evaluation.runner import candidates_of
from posegnn.figures import (
    draw_examples,
    edge_probability_histogram,
    loss_curves,
    make_example,
    matched_colors,
    save_figure,
)
from posegnn.grouping import build_grouping
from tests.conftest import tiny_train_overrides


def _png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and \
        path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_of_a_real_graph(small_dataset, tmp_path):
    ds = PoseMapsDataset(small_dataset)
    image_id = ds.image_ids[0]
    gt, areas = ds.gt_keypoints(image_id)
    cfg = GraphConfig()
    graph = AddEdges(ds.layout, cfg.edges)(
        build_vertices(ds.load_maps(image_id), ds.layout, cfg, gt, areas))
    cands = candidates_of(graph)
    # stand-in probabilities: the ground truth, softened
    probs = np.where(graph.y.numpy() > 0.5, 0.9, 0.1)
    people = build_grouping("gnn", layout=ds.layout).group(
        cands, pair_index=graph.pair_index.numpy(), prob=probs)
    assert len(people) > 0
    example = make_example(ds, image_id, people, cands.pos)
    paths = [
        save_figure(draw_examples([example, example], ds.layout), tmp_path / "ex.png"),
        save_figure(edge_probability_histogram(probs, graph.y.numpy()), tmp_path / "h.png"),
        save_figure(loss_curves({"a": {"epoch": [0, 1, 2], "train/loss": [0.7, 0.5, 0.4],
                                       "val/loss": [0.8, 0.6, np.nan]},
                                 "b": {"epoch": [0, 1], "train/loss": [0.6, 0.5]}},
                                groups={"a": "adam", "b": "sgd"}), tmp_path / "l.png"),
    ]
    assert all(_png(p) for p in paths)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_matched_colors_follow_ground_truth():
    gt = np.zeros((2, 3, 3))
    gt[0, :, :2], gt[1, :, :2], gt[:, :, 2] = 10.0, 100.0, 2
    pred = gt[::-1].copy()  # the same two people in the other order, plus a spurious one
    pred = np.concatenate([pred, np.ones((1, 3, 3)) * 500])
    pred_colors, gt_colors = matched_colors(pred, gt)
    assert pred_colors[0] == gt_colors[1] and pred_colors[1] == gt_colors[0]
    assert pred_colors[2] not in gt_colors


def test_histogram_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="labels"):
        edge_probability_histogram(np.zeros(3), np.zeros(2))


def _tiny_cfg(out: Path, *extra: str):
    register_schemas()
    overrides = [*tiny_train_overrides(out), "callbacks.val_ap_every_n_epochs=0", "test=false",
                 *extra]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose("train", overrides=overrides)), overrides


def test_callback_writes_pngs_and_wandb_images(tmp_path, monkeypatch):
    """A tiny fit with ``logger=wandb`` (offline): PNGs per epoch under figures/ and the
    same images in the W&B run's media folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg, overrides = _tiny_cfg(tmp_path, "logger=wandb", "callbacks.figures_every_n_epochs=1",
                               "callbacks.figures_num_images=2")
    run_dir = tmp_path / "run"
    train_module.train(cfg, run_dir, overrides)
    figures = run_dir / "figures"
    for epoch in (0, 1):  # every epoch; fit end does not draw the last epoch twice
        assert _png(figures / f"val_examples_epoch{epoch:03d}.png")
        assert _png(figures / f"val_edge_prob_hist_epoch{epoch:03d}.png")
    assert len(list(figures.glob("*.png"))) == 4
    media = list(run_dir.glob("wandb/offline-run-*/files/media/images/**/*.png"))
    names = {p.name.split("_")[0] for p in media}
    assert {"examples", "edge"} <= names, media


def test_examples_show_people_above_the_score_with_their_scores():
    from posegnn.figures import Example
    from posegnn.layouts import get_layout

    layout = get_layout("crowdpose14")
    person = np.column_stack([np.linspace(20, 60, 14), np.linspace(10, 90, 14),
                              np.ones(14)])
    ex = Example(image_id=1, width=100.0, height=100.0, heat=np.zeros((50, 50)),
                 map_to_image=np.array([[2.0, 0, 0], [0, 2.0, 0]]),
                 predicted=np.stack([person, person + [5, 0, 0]]),
                 ground_truth=person[None], scores=np.array([0.93, 0.07]))
    fig = draw_examples([ex], layout, min_score=0.2)
    left = fig.axes[0]
    assert [t.get_text() for t in left.texts] == ["0.93"]
    assert "1 people, 1 below 0.2" in left.get_title()
    assert not fig.axes[1].texts  # ground truth has no scores
