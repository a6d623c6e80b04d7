"""OKS evaluation: pycocotools configured for any layout, checked against a hand-computed OKS."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posegnn.evaluation import (
    METRIC_KEYS,
    crowd_level,
    evaluate_keypoints,
    oks,
    people_to_coco_results,
)
from posegnn.layouts import COCO17, CROWDPOSE14, Layout
from posegnn.types import People

SIGMAS = CROWDPOSE14.sigma_array


def person(rng: np.random.Generator, k: int = 14, x: float = 100.0) -> np.ndarray:
    """[K, 3] labeled joints of one person around (x, 200)."""
    xy = np.array([x, 200.0]) + rng.uniform([-40, -120], [40, 120], size=(k, 2))
    return np.column_stack([xy, np.full(k, 2.0)])


def gt_dict(layout: Layout, images: dict[int, list[np.ndarray]],
            crowd: dict[int, float] | None = None) -> dict:
    crowd = crowd or {}
    imgs, anns = [], []
    for image_id, people in images.items():
        img = {"id": image_id, "file_name": f"{image_id}.jpg", "width": 800, "height": 600}
        if image_id in crowd:
            img["crowd_index"] = crowd[image_id]
        imgs.append(img)
        for kps in people:
            x0, y0 = kps[:, :2].min(axis=0)
            w, h = kps[:, :2].max(axis=0) - (x0, y0)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         "keypoints": kps.reshape(-1).tolist(), "num_keypoints": len(kps),
                         "bbox": [x0, y0, w, h], "area": float(w * h), "iscrowd": 0})
    cat = {"id": 1, "name": "person", "keypoints": list(layout.joints), "skeleton": []}
    return {"images": imgs, "annotations": anns, "categories": [cat]}


def result(image_id: int, kps: np.ndarray, score: float = 1.0) -> dict:
    kps = np.column_stack([kps[:, :2], np.ones(len(kps))])
    return {"image_id": image_id, "category_id": 1, "keypoints": kps.reshape(-1).tolist(),
            "score": score}


def offset_for_oks(target: float, area: float, sigmas: np.ndarray) -> np.ndarray:
    """Per-joint distance giving each joint the similarity ``target``, hence OKS = target."""
    return np.sqrt(-math.log(target) * 2 * area * (2 * sigmas) ** 2)


# ----------------------------------------------------------------------------- oks


def test_oks_by_hand() -> None:
    gt = np.array([[0.0, 0.0, 2.0], [10.0, 0.0, 1.0], [5.0, 5.0, 0.0]])
    sigmas = np.array([0.1, 0.2, 0.3])
    pred = np.array([[3.0, 4.0], [10.0, 0.0], [100.0, 100.0]])  # joint 0 off by 5 px
    area = 100.0
    e0 = 25 / ((2 * 0.1) ** 2 * area * 2)  # = 3.125
    assert oks(gt, area, pred, sigmas) == pytest.approx((math.exp(-e0) + 1.0) / 2)
    assert oks(gt, area, gt, sigmas) == pytest.approx(1.0)
    assert oks(np.zeros((3, 3)), area, pred, sigmas) == 0.0


@pytest.mark.parametrize("layout", [CROWDPOSE14, COCO17], ids=lambda lay: lay.name)
def test_oks_matches_pycocotools(layout: Layout) -> None:
    rng = np.random.default_rng(0)
    gt_kps = person(rng, layout.num_joints)
    gt_kps[rng.random(layout.num_joints) < 0.3, 2] = 0  # some unlabeled joints
    gt = gt_dict(layout, {1: [gt_kps]})
    pred = gt_kps[:, :2] + rng.normal(0, 6, (layout.num_joints, 2))
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes([result(1, pred)])
    ev = COCOeval(coco_gt, coco_dt, "keypoints")
    ev.params.kpt_oks_sigmas = layout.sigma_array
    ev.params.imgIds = [1]
    ev._prepare()
    expected = ev.computeOks(1, 1)[0, 0]
    area = gt["annotations"][0]["area"]
    assert oks(gt_kps, area, pred, layout.sigma_array) == pytest.approx(expected)


def test_ap_thresholds_follow_hand_computed_oks() -> None:
    """OKS 0.62: matched at thresholds .50, .55, .60 only, so AP50 = 1, AP75 = 0, AP = 0.3."""
    rng = np.random.default_rng(1)
    gt_kps = person(rng)
    gt = gt_dict(CROWDPOSE14, {1: [gt_kps]})
    area = gt["annotations"][0]["area"]
    pred = gt_kps[:, :2].copy()
    pred[:, 0] += offset_for_oks(0.62, area, SIGMAS)
    assert oks(gt_kps, area, pred, SIGMAS) == pytest.approx(0.62)
    m = evaluate_keypoints(gt, [result(1, pred)], SIGMAS)
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == 0.0
    assert m["AP"] == pytest.approx(0.3) and m["AR"] == pytest.approx(0.3)
    assert m["AR50"] == pytest.approx(1.0) and m["AR75"] == 0.0


def test_sigmas_are_the_layouts_not_cocos() -> None:
    """The same offsets scored with COCO's first 14 sigmas give a different AP."""
    rng = np.random.default_rng(2)
    gt_kps = person(rng)
    gt = gt_dict(CROWDPOSE14, {1: [gt_kps]})
    area = gt["annotations"][0]["area"]
    pred = gt_kps[:, :2] + offset_for_oks(0.72, area, SIGMAS)[:, None] / math.sqrt(2)
    ours = evaluate_keypoints(gt, [result(1, pred)], SIGMAS)
    assert ours["AP"] == pytest.approx(0.5)  # matched at .50 .. .70
    other = evaluate_keypoints(gt, [result(1, pred)], COCO17.sigma_array[:14])
    assert other["AP"] != pytest.approx(0.5)
    with pytest.raises(ValueError, match="sigmas"):
        evaluate_keypoints(gt, [result(1, pred)], COCO17.sigma_array)


# ----------------------------------------------------------------------------- edge cases


def test_metric_keys_and_crowd_levels() -> None:
    rng = np.random.default_rng(3)
    images = {i: [person(rng, x=100 + 200 * j) for j in range(3)] for i in range(1, 5)}
    crowd = {1: 0.05, 2: 0.5, 3: 0.95}  # image 4 has no crowd index
    gt = gt_dict(CROWDPOSE14, images, crowd)
    # perfect on images 1 and 4, one person missed on 2, a worse-ranked miss on 3
    results = [result(i, kps) for i in (1, 4) for kps in images[i]]
    results += [result(2, kps) for kps in images[2][:2]]
    results += [result(3, kps, score=0.9) for kps in images[3]]
    results += [result(3, images[3][0][:, :2] + 300, score=0.95)]  # false positive on top
    m = evaluate_keypoints(gt, results, SIGMAS)
    assert set(METRIC_KEYS) <= set(m) and {"AP_easy", "AP_medium", "AP_hard"} <= set(m)
    assert m["AP_easy"] == pytest.approx(1.0)
    assert m["AP_medium"] == pytest.approx(2 / 3, abs=0.02)
    assert 0.4 < m["AP_hard"] < 1.0
    assert 0.5 < m["AP"] < 1.0
    assert all(isinstance(v, float) for v in m.values())


def test_crowd_level_without_images_has_no_key() -> None:
    rng = np.random.default_rng(4)
    gt = gt_dict(CROWDPOSE14, {1: [person(rng)], 2: [person(rng)]}, {1: 0.1})
    m = evaluate_keypoints(gt, [], SIGMAS)
    assert "AP_easy" in m and "AP_medium" not in m and "AP_hard" not in m
    gt = gt_dict(CROWDPOSE14, {1: [person(rng)]})
    assert not any(k.startswith("AP_") for k in evaluate_keypoints(gt, [], SIGMAS))


def test_no_results_gives_zero() -> None:
    rng = np.random.default_rng(5)
    gt = gt_dict(CROWDPOSE14, {1: [person(rng)], 2: []}, {1: 0.3, 2: 0.9})
    m = evaluate_keypoints(gt, [], SIGMAS)
    assert m["AP"] == 0.0 and m["AR"] == 0.0 and m["AP_medium"] == 0.0
    assert m["AP_hard"] == -1.0  # only an empty image: undefined, as pycocotools says


def test_no_ground_truth_people_is_undefined() -> None:
    rng = np.random.default_rng(6)
    gt = gt_dict(CROWDPOSE14, {1: [], 2: []})
    m = evaluate_keypoints(gt, [result(1, person(rng))], SIGMAS)
    assert all(m[k] == -1.0 for k in METRIC_KEYS)
    gt.pop("annotations")  # a prediction-only dataset
    assert evaluate_keypoints(gt, [], SIGMAS)["AP"] == -1.0
    assert evaluate_keypoints({"images": []}, [], SIGMAS)["AP"] == -1.0


def test_results_on_empty_images_are_false_positives() -> None:
    rng = np.random.default_rng(7)
    kps = person(rng)
    gt = gt_dict(CROWDPOSE14, {1: [kps], 2: []})
    clean = evaluate_keypoints(gt, [result(1, kps, 0.5)], SIGMAS)
    assert clean["AP"] == pytest.approx(1.0)
    noisy = evaluate_keypoints(gt, [result(1, kps, 0.5), result(2, person(rng), 0.9)], SIGMAS)
    assert noisy["AP"] < 0.6 and noisy["AR"] == pytest.approx(1.0)
    low = evaluate_keypoints(gt, [result(1, kps, 0.9), result(2, person(rng), 0.5)], SIGMAS)
    assert low["AP"] == pytest.approx(1.0)


def test_bad_results_are_reported() -> None:
    rng = np.random.default_rng(8)
    gt = gt_dict(CROWDPOSE14, {1: [person(rng)]})
    with pytest.raises(ValueError, match="image 9"):
        evaluate_keypoints(gt, [result(9, person(rng))], SIGMAS)
    del gt["annotations"][0]["area"]
    with pytest.raises(ValueError, match="area"):
        evaluate_keypoints(gt, [], SIGMAS)


def test_max_dets_and_ignored_people() -> None:
    rng = np.random.default_rng(9)
    people = [person(rng, x=60 + 100 * j) for j in range(4)]
    gt = gt_dict(CROWDPOSE14, {1: people})
    results = [result(1, kps, score=1.0 - 0.1 * j) for j, kps in enumerate(people)]
    assert evaluate_keypoints(gt, results, SIGMAS, max_dets=2)["AR"] == pytest.approx(0.5)
    assert evaluate_keypoints(gt, results, SIGMAS, max_dets=20)["AR"] == pytest.approx(1.0)
    gt["annotations"][3]["iscrowd"] = 1  # an ignored region: neither missed nor matched
    gt["annotations"][2]["num_keypoints"] = 0  # a wrong count is recounted from keypoints
    m = evaluate_keypoints(gt, results[:3], SIGMAS)
    assert m["AP"] == pytest.approx(1.0) and m["AR"] == pytest.approx(1.0)


def test_people_to_coco_results_and_empty_people() -> None:
    people = People(np.arange(2 * 14 * 3, dtype=np.float32).reshape(2, 14, 3),
                    np.array([0.9, 0.4], np.float32), np.zeros(0, np.int64))
    res = people_to_coco_results(7, people, category_id=3)
    assert len(res) == 2 and res[0]["image_id"] == 7 and res[1]["category_id"] == 3
    assert res[0]["keypoints"] == [float(v) for v in range(42)]
    assert res[1]["score"] == pytest.approx(0.4)
    assert people_to_coco_results(1, People.empty(14)) == []


def test_crowd_level() -> None:
    assert crowd_level(0.0) == "easy" and crowd_level(0.1999) == "easy"
    assert crowd_level(0.2) == "medium" and crowd_level(0.7999) == "medium"
    assert crowd_level(0.8) == "hard" and crowd_level(1.5) == "hard"
    with pytest.raises(ValueError):
        crowd_level(float("nan"))


def test_verbose_prints(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(10)
    kps = person(rng)
    gt = gt_dict(CROWDPOSE14, {1: [kps]})
    evaluate_keypoints(gt, [result(1, kps)], SIGMAS)
    assert capsys.readouterr().out == ""
    evaluate_keypoints(gt, [result(1, kps)], SIGMAS, verbose=True)
    assert "AP=1.000" in capsys.readouterr().out


def test_gnn_time_per_image_counts_pairs_model_and_decoding(small_dataset, monkeypatch) -> None:
    """``sec_per_image`` counts everything after the candidates for every grouping: a
    delay put into the gnn's pair building shows in the gnn's time and nowhere else. The
    runner's clock is a fake one that only the delay moves, so nothing here is timed."""
    import types

    import posegnn.evaluation.runner as runner
    from posegnn.config import (
        AEGroupingConfig,
        GNNGroupingConfig,
        GroupingConfig,
        OracleGroupingConfig,
    )
    from posegnn.data.cache import build_graphs
    from posegnn.data.graph import AddEdges, GraphConfig, GraphList
    from posegnn.data.maps import PoseMapsDataset
    from posegnn.models.module import PosegnnModule

    clock = {"now": 0.0}
    monkeypatch.setattr(runner, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    ds = PoseMapsDataset(small_dataset)
    cfg = GraphConfig()
    graphs = build_graphs(ds, ds.image_ids[:4], cfg, progress=False)
    edges = AddEdges(ds.layout, cfg.edges)

    def slow_edges(data):
        clock["now"] += 5.0
        return edges(data)

    sample = edges(graphs[0])
    module = PosegnnModule(sample.x.shape[1], sample.edge_attr.shape[1], graph=cfg)
    metrics = runner.evaluate_groupings(ds.coco_dict(ds.image_ids[:4]), ds.layout,
                                        GraphList(graphs, slow_edges),
                                        GroupingConfig(run=["gnn", "ae", "oracle"],
                                                       gnn=GNNGroupingConfig(refine=False),
                                                       ae=AEGroupingConfig(refine=False),
                                                       oracle=OracleGroupingConfig(refine=False)),
                                        module=module, batch_size=2)
    assert metrics["test/gnn/sec_per_image"] == pytest.approx(5.0)
    assert metrics["test/ae/sec_per_image"] == 0.0
    assert metrics["test/oracle/sec_per_image"] == 0.0


def test_an_evaluation_decompresses_each_maps_file_once(small_dataset, tmp_path, monkeypatch):
    """posegnn-eval on a split without cached graphs builds them from the same maps its
    refinement reads, and caches them: each npz is decompressed once, cold or warm, and
    both runs give the same metrics (small chunks: the split spans several)."""
    from posegnn.config import EvalConfig
    from posegnn.data.datamodule import DataConfig, PoseGraphDataModule
    from posegnn.data.maps import PoseMapsDataset
    from posegnn.tasks.evaluate import evaluate

    reads: list[int] = []
    real = PoseMapsDataset.load_maps
    monkeypatch.setattr(PoseMapsDataset, "load_maps",
                        lambda self, i: reads.append(int(i)) or real(self, i))
    monkeypatch.setattr(PoseGraphDataModule, "evaluation_chunks",
                        lambda self, split, size, real=PoseGraphDataModule.evaluation_chunks:
                        real(self, split, 3))
    cfg = EvalConfig(data=DataConfig(kind="maps", test=str(small_dataset),
                                     cache_dir=str(tmp_path / "cache")), progress=False)
    ids = sorted(PoseMapsDataset(small_dataset).image_ids)
    runs = []
    for name in ("cold", "warm"):
        reads.clear()
        runs.append(evaluate(cfg, tmp_path / name))
        assert sorted(reads) == ids, name
    assert len(list((tmp_path / "cache").glob("test-*.pt"))) == 1
    keys = [k for k in runs[0] if "sec_per_image" not in k]
    assert {k: runs[0][k] for k in keys} == {k: runs[1][k] for k in keys}
    assert runs[0]["test/gnn/AP"] > 0.3 and runs[0]["test/ae/AP"] > 0.1


def test_evaluation_takes_candidates_from_the_command_and_the_rest_from_the_checkpoint(caplog):
    from posegnn.data.graph import CandidateConfig, GraphConfig
    from posegnn.tasks.evaluate import checkpoint_graph

    trained = GraphConfig(normalization="dataset")
    assert checkpoint_graph(GraphConfig(), trained) is trained
    given = GraphConfig(normalization="per_map", candidates=CandidateConfig(threshold=0.25))
    with caplog.at_level("WARNING", logger="posegnn.tasks.evaluate"):
        used = checkpoint_graph(given, trained)
    assert used.candidates.threshold == 0.25 and used.normalization == "dataset"
    assert "graph.normalization: ignored" in caplog.text
