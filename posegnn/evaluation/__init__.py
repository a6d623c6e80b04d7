"""Evaluation: COCO OKS AP/AR with pycocotools for any keypoint layout."""

from posegnn.evaluation.coco import (
    CROWD_LEVELS,
    METRIC_KEYS,
    crowd_level,
    evaluate_keypoints,
    oks,
    people_to_coco_results,
)

__all__ = ["CROWD_LEVELS", "METRIC_KEYS", "crowd_level", "evaluate_keypoints", "oks",
           "people_to_coco_results"]
