"""The Python API: docs/api.md's example runs as written; the grouper has the CLI's
defaults and an eval-mode model; resume checks name what differs."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from posegnn.checkpoints import SettingsMismatch, check_resume
from posegnn.config import GNNGroupingConfig, TrainConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture(scope="module")
def doc_example(tmp_path_factory):
    """The namespace left by running every python block of docs/api.md, in a fresh
    folder (its outputs/ go there)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/api.md has no python example"
    cwd = tmp_path_factory.mktemp("api")
    namespace: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
    namespace["cwd"] = cwd
    return namespace


def test_doc_example_trains_and_groups_one_image(doc_example):
    run, people = doc_example["run"], doc_example["people"]
    assert run.out_dir.is_relative_to(doc_example["cwd"])
    assert (run.out_dir / "metrics.json").is_file() and run.last_checkpoint.is_file()
    assert 0 <= run.metrics["test/gnn/AP"] <= 1
    assert people.keypoints.ndim == 3 and people.keypoints.shape[1:] == (14, 3)
    assert len(people) == len(people.scores) >= 1
    assert np.all(np.diff(people.scores) <= 0)  # best first


def test_grouper_uses_the_cli_defaults_in_eval_mode(doc_example):
    grouper = doc_example["grouper"]
    assert not grouper.module.training
    assert grouper.settings == asdict(GNNGroupingConfig())
    assert asdict(grouper.graph_cfg) == grouper.module.hparams.graph


def test_grouper_matches_the_evaluation_pipeline(doc_example, monkeypatch):
    """One image through the API gives the people posegnn-eval's pipeline gives."""
    from posegnn.evaluation.runner import edge_probabilities, group_images

    monkeypatch.chdir(doc_example["cwd"])  # the example's data paths are relative
    dm, grouper = doc_example["dm"], doc_example["grouper"]
    test = dm.dataset("test")
    scores = edge_probabilities(grouper.module, test)
    results, _ = group_images("gnn", GNNGroupingConfig(), dm.layout, test.graphs, scores,
                              maps=dm.source("test")[0].load_maps)
    image_id = int(test.graphs[0].image_id)
    expected = sorted((r["score"], r["keypoints"]) for r in results
                      if r["image_id"] == image_id)
    dataset = doc_example["dataset"]
    maps = dataset.load_maps(image_id)
    people = grouper(maps.heatmaps, maps.tags[..., 0], map_to_image=maps.map_to_image)
    assert len(people) == len(expected)
    got = sorted(people.scores.tolist())
    assert got == pytest.approx([s for s, _ in expected], rel=1e-5)
    assert len(grouper(maps)) == len(people)  # an ImageMaps carries its own affine


def test_grouper_rejects_maps_of_another_layout(doc_example):
    grouper = doc_example["grouper"]
    with pytest.raises(ValueError, match=r"expected \[14, H, W\]"):
        grouper(np.zeros((17, 64, 64), np.float32), np.zeros((17, 32, 32), np.float32),
                width=100, height=100)


def test_resume_check_names_keys_and_an_explicit_setting_allows_it(doc_example):
    ckpt = doc_example["run"].last_checkpoint
    cfg = doc_example["api"].settings("train", doc_example["tiny"])
    data, graph = cfg.data, cfg.graph
    assert check_resume(ckpt, data, graph, allow=False) == []
    data.batch_size = 2
    graph.edges.radius = 0.3
    with pytest.raises(SettingsMismatch) as err:
        check_resume(ckpt, data, graph, allow=False)
    assert "data.batch_size: trained 8, now 2" in str(err.value)
    assert "graph.edges.radius: trained 0.6, now 0.3" in str(err.value)
    assert len(check_resume(ckpt, data, graph, allow=True)) == 2
    data.cache_dir = "/elsewhere"  # where files live is not what the data is
    assert len(check_resume(ckpt, data, graph, allow=True)) == 2
    assert TrainConfig().resume_allow_changes is False


def test_ae_order_is_a_setting_with_higherhrnets_order_among_the_choices():
    from posegnn import api
    from posegnn.api import load_grouper
    from posegnn.choices import SettingError
    from posegnn.layouts import CROWDPOSE14

    assert load_grouper(grouping="ae").grouping.ae_order == CROWDPOSE14.ae_order
    hr = load_grouper(grouping="ae", order="higherhrnet").grouping.ae_order
    assert hr == (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13)  # COCO's order, first 14
    assert load_grouper(grouping="ae", order="index").grouping.ae_order == tuple(range(14))
    cfg = api.settings("eval", ["grouping.ae.order=higherhrnet"])
    assert cfg.grouping.ae.order == "higherhrnet"
    with pytest.raises(SettingError, match="grouping.ae.order='hrnet' is not one of"):
        api.settings("eval", ["grouping.ae.order=hrnet"])
