"""OKS keypoint evaluation with pycocotools, for any keypoint layout (CrowdPose 14, COCO 17).

:func:`evaluate_keypoints` returns, for the whole set:
``AP AP50 AP75 APM APL AR AR50 AR75`` and, on the images of each CrowdPose crowd level
(crowdposetools' cuts: easy < 0.2 <= medium < 0.8 <= hard), ``AP_easy AP_medium AP_hard``.

Conventions, as pycocotools where it has one:
- a metric with no ground-truth person to score against (e.g. every image of a level is
  empty) is -1.0, pycocotools' value for "undefined";
- a crowd level without any image (or a set without ``crowd_index``) has no key at all;
  images without ``crowd_index`` count for the overall metrics only;
- no results at all give AP 0 (not pycocotools' ``loadRes`` failure on an empty list);
- pycocotools' area ranges are kept: APM (32^2..96^2) and APL (> 96^2); CrowdPose's own
  tables report neither, and small people are not scored separately for keypoints;
- at most ``max_dets`` people per image (highest score) are scored, 20 as in COCO;
- ``num_keypoints`` of each annotation is recounted from its ``keypoints`` (CrowdPose's
  counts only the 12 body joints; pycocotools ignores a person whose count is 0), and
  ``iscrowd`` people are ignored regions, as pycocotools does;
- a result's box and area (used by pycocotools only to ignore unmatched detections
  outside an area range) span its joints with positive score, not the (0, 0) of missing
  joints that ``loadRes`` would include.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posegnn.contract import keypoint_similarity
from posegnn.types import People

CROWD_LEVELS = (("easy", 0.0, 0.2), ("medium", 0.2, 0.8), ("hard", 0.8, math.inf))
METRIC_KEYS = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75")


def crowd_level(crowd_index: float) -> str:
    """CrowdPose crowd level of an image: easy < 0.2 <= medium < 0.8 <= hard."""
    if crowd_index is None or not math.isfinite(float(crowd_index)):
        raise ValueError(f"crowd index {crowd_index!r} is not a finite number")
    value = float(crowd_index)
    return next(name for name, _, upper in CROWD_LEVELS if value < upper)


def oks(gt_keypoints: np.ndarray, area: float, pred: np.ndarray, sigmas: np.ndarray) -> float:
    """Object keypoint similarity of one prediction to one person (reference version).

    Mean over labeled joints (v > 0) of exp(-d^2 / (2 * area * (2 sigma)^2)). A person
    without labeled joints gives 0 here (pycocotools falls back to box distances).
    """
    gt = np.asarray(gt_keypoints, dtype=np.float64).reshape(-1, 3)
    pred = np.asarray(pred, dtype=np.float64)
    pred = pred.reshape(len(gt), -1)[:, :2]
    sigmas = np.asarray(sigmas, dtype=np.float64)
    labeled = gt[:, 2] > 0
    if not labeled.any():
        return 0.0
    d2 = np.sum((pred - gt[:, :2]) ** 2, axis=1)
    return float(np.mean(keypoint_similarity(d2, sigmas, area)[labeled]))


def best_oks(keypoints: np.ndarray, annotations: list[dict], sigmas: np.ndarray) -> np.ndarray:
    """[P] each predicted person's (``keypoints`` [P, K, 3]) largest :func:`oks` with
    the annotated people of its image (COCO annotations with ``keypoints`` and ``area``);
    0 without any."""
    best = np.zeros(len(keypoints))
    sigmas = np.asarray(sigmas, dtype=np.float64)
    for ann in annotations:
        gt = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        labeled = gt[:, 2] > 0
        if not labeled.any() or ann.get("iscrowd", 0):
            continue
        d2 = ((keypoints[:, labeled, :2] - gt[None, labeled, :2]) ** 2).sum(2)
        similarity = keypoint_similarity(d2, sigmas[labeled], float(ann["area"]))
        np.maximum(best, similarity.mean(1), out=best)
    return best


def people_to_coco_results(image_id: int, people: People, category_id: int = 1) -> list[dict]:
    """COCO keypoint results of one image: ``[x, y, joint score] * K`` and the person score."""
    return [
        {"image_id": int(image_id), "category_id": int(category_id),
         "keypoints": [float(v) for v in kps.reshape(-1)], "score": float(score)}
        for kps, score in zip(np.asarray(people.keypoints), np.asarray(people.scores),
                              strict=True)
    ]


def evaluate_keypoints(gt: dict, results: list[dict], sigmas: np.ndarray, max_dets: int = 20,
                       verbose: bool = False) -> dict[str, float]:
    """OKS AP/AR of ``results`` against ``gt`` (a COCO keypoints dict); see module doc."""
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    coco_gt = _coco_from_dict(_prepare_gt(gt, len(sigmas)), verbose)
    coco_dt = _coco_from_dict(_prepare_results(gt, results, len(sigmas)), verbose)
    metrics = _run(coco_gt, coco_dt, sigmas, max_dets, coco_gt.getImgIds(), verbose)
    for level, ids in _crowd_splits(gt).items():
        if ids:
            split = _run(coco_gt, coco_dt, sigmas, max_dets, ids, verbose)
            metrics[f"AP_{level}"] = split["AP"]
    return metrics


def _prepare_gt(gt: dict, num_joints: int) -> dict:
    """A checked copy of ``gt`` with ``num_keypoints`` recounted."""
    images = list(gt.get("images") or [])
    image_ids = {img["id"] for img in images}
    anns = []
    for ann in gt.get("annotations") or []:
        missing = [k for k in ("id", "image_id", "keypoints", "area", "bbox") if k not in ann]
        if missing:
            raise ValueError(f"ground truth annotation {ann.get('id')}: missing {missing}")
        if len(ann["keypoints"]) != 3 * num_joints:
            raise ValueError(f"ground truth annotation {ann['id']}: {len(ann['keypoints'])} "
                             f"keypoint values for {num_joints} sigmas")
        if ann["image_id"] not in image_ids:
            raise ValueError(f"ground truth annotation {ann['id']}: unknown image "
                             f"{ann['image_id']}")
        ann = dict(ann)
        ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"])[2::3] > 0))
        ann.setdefault("iscrowd", 0)
        ann.setdefault("category_id", _category_id(gt))
        anns.append(ann)
    return {"images": images, "annotations": anns,
            "categories": copy.deepcopy(gt.get("categories") or [{"id": 1, "name": "person"}])}


def _category_id(gt: dict) -> int:
    cats = gt.get("categories") or [{"id": 1}]
    return int(cats[0]["id"])


def _prepare_results(gt: dict, results: list[dict], num_joints: int) -> dict:
    """Results as a COCO dataset: ids, boxes and areas from the joints with positive score."""
    image_ids = {img["id"] for img in gt.get("images") or []}
    anns = []
    for i, res in enumerate(results):
        if res["image_id"] not in image_ids:
            raise ValueError(f"result {i}: image {res['image_id']} is not in the ground truth")
        kps = np.asarray(res["keypoints"], dtype=np.float64).reshape(-1, 3)
        if len(kps) != num_joints:
            raise ValueError(f"result {i}: {len(kps)} joints for {num_joints} sigmas")
        present = kps[kps[:, 2] > 0] if np.any(kps[:, 2] > 0) else kps
        x0, y0 = present[:, :2].min(axis=0)
        x1, y1 = present[:, :2].max(axis=0)
        anns.append({"id": i + 1, "image_id": res["image_id"],
                     "category_id": res.get("category_id", _category_id(gt)),
                     "keypoints": kps.reshape(-1).tolist(), "score": float(res["score"]),
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
                     "iscrowd": 0})
    return {"images": list(gt.get("images") or []), "annotations": anns,
            "categories": copy.deepcopy(gt.get("categories") or [{"id": 1, "name": "person"}])}


def _coco_from_dict(dataset: dict, verbose: bool) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with _quiet(verbose):
        coco.createIndex()
    return coco


def _crowd_splits(gt: dict) -> dict[str, list]:
    """Image ids per crowd level; images without ``crowd_index`` belong to none."""
    splits: dict[str, list] = {name: [] for name, _, _ in CROWD_LEVELS}
    for img in gt.get("images") or []:
        if img.get("crowd_index") is not None:
            splits[crowd_level(img["crowd_index"])].append(img["id"])
    return splits


def _run(coco_gt: COCO, coco_dt: COCO, sigmas: np.ndarray, max_dets: int, image_ids: list,
         verbose: bool) -> dict[str, float]:
    ev = COCOeval(coco_gt, coco_dt, "keypoints")
    ev.params.kpt_oks_sigmas = sigmas
    ev.params.maxDets = [int(max_dets)]
    ev.params.imgIds = sorted(image_ids)
    with _quiet(verbose):
        ev.evaluate()
        ev.accumulate()
    metrics = _summarize(ev)
    if verbose:
        print("  ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    return metrics


def _summarize(ev: COCOeval) -> dict[str, float]:
    """The keypoint summary for the single ``maxDets`` entry (pycocotools hard-codes 20)."""
    p = ev.params
    if not p.imgIds or "precision" not in ev.eval:
        return dict.fromkeys(METRIC_KEYS, -1.0)
    area = {label: i for i, label in enumerate(p.areaRngLbl)}

    def mean(kind: str, iou: float | None = None, rng: str = "all") -> float:
        values = ev.eval[kind]
        if iou is not None:
            values = values[np.isclose(p.iouThrs, iou)]
        values = values[..., area[rng], 0]
        valid = values[values > -1]
        return float(valid.mean()) if valid.size else -1.0

    return {"AP": mean("precision"), "AP50": mean("precision", 0.5),
            "AP75": mean("precision", 0.75), "APM": mean("precision", rng="medium"),
            "APL": mean("precision", rng="large"), "AR": mean("recall"),
            "AR50": mean("recall", 0.5), "AR75": mean("recall", 0.75)}


@contextlib.contextmanager
def _quiet(verbose: bool):
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield
