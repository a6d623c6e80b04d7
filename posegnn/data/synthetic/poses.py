"""Real poses: scenes drawn from a COCO-format keypoint annotation file.

The file gives image sizes, keypoints, visibility, boxes and crowd regions; the simulated
detector then renders maps for them. CrowdPose quirks are accepted: ``crowdIndex`` in
camelCase, no ``area`` (0.53 * w * h, as crowdposetools), COCO's skeleton in a 14-joint
category, and joint types whose labels are never v=2 (CrowdPose's head and neck), where
v=1 says nothing about occlusion.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from posegnn.contract import DatasetError, person_area
from posegnn.layouts import Layout, layout_from_category

from .scene import Scene, crowd_index, facing_back, make_regions, region_distance


def _fail(path: Path, what: str) -> DatasetError:
    return DatasetError(f"{path}: {what}")


def estimate_height(layout: Layout, joints: np.ndarray, labels: np.ndarray,
                    boxes: np.ndarray) -> np.ndarray:
    """Body height in pixels [P] from the box and, where labeled, the trunk length."""
    from_box = 1.6 * np.sqrt(np.maximum(boxes[:, 2] * boxes[:, 3], 1.0))
    names = layout.joints
    trunk = ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]
    if not all(n in names for n in trunk):
        return np.maximum(from_box, 8.0)
    ls, rs, lh, rh = (names.index(n) for n in trunk)
    ok = (labels[:, [ls, rs, lh, rh]] > 0).all(axis=1)
    length = np.linalg.norm(0.5 * (joints[:, ls] + joints[:, rs])
                            - 0.5 * (joints[:, lh] + joints[:, rh]), axis=1)
    return np.maximum(np.where(ok, np.maximum(from_box, length / 0.29), from_box), 8.0)


class PoseFile:
    """A COCO keypoint annotation file as a source of scenes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: pose annotation file not found")
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _fail(self.path, f"not valid JSON ({e})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("images"), list):
            raise _fail(self.path, "no 'images' list (expected COCO keypoint format)")
        self.category = self._category(raw)
        self.layout = layout_from_category(self.category, source=str(self.path))
        self.images = {int(img["id"]): img for img in raw["images"]}
        self.by_image: dict[int, list[dict]] = {i: [] for i in self.images}
        for ann in raw.get("annotations") or []:
            self._check(ann)
            self.by_image[int(ann["image_id"])].append(ann)
        self.uninformative_v1 = self._uninformative_v1()

    def _category(self, raw: dict) -> dict:
        cat = next((c for c in raw.get("categories") or [] if c.get("keypoints")), None)
        if cat is None:
            raise _fail(self.path, "no category lists 'keypoints' names")
        if cat.get("skeleton") and max(max(p) for p in cat["skeleton"]) > len(cat["keypoints"]):
            warnings.warn(f"{self.path}: the category's skeleton names joints beyond its "
                          f"{len(cat['keypoints'])} keypoints; using the layout's limbs",
                          stacklevel=3)
        return cat

    def _check(self, ann: dict) -> None:
        k = self.layout.num_joints
        if int(ann.get("image_id", -1)) not in self.images:
            raise _fail(self.path, f"annotation {ann.get('id')} refers to an unknown image "
                                   f"{ann.get('image_id')}")
        if len(ann.get("keypoints") or []) != 3 * k:
            raise _fail(self.path, f"annotation {ann.get('id')} has "
                                   f"{len(ann.get('keypoints') or [])} keypoint values, "
                                   f"expected {3 * k}")

    def _uninformative_v1(self) -> np.ndarray:
        """Joint types labeled but never v=2 in the whole file (CrowdPose head, neck)."""
        vis = [np.asarray(a["keypoints"]).reshape(-1, 3)[:, 2]
               for anns in self.by_image.values() for a in anns if not a.get("iscrowd")]
        if not vis:
            return np.zeros(self.layout.num_joints, dtype=bool)
        v = np.stack(vis)
        return ((v > 0).sum(axis=0) > 0) & ((v == 2).sum(axis=0) == 0)

    def default_ids(self, n: int, seed: int) -> list[int]:
        """The first ``n`` image ids in an order shuffled by ``seed``."""
        ids = np.array(sorted(self.images), dtype=np.int64)
        order = np.random.default_rng(seed).permutation(len(ids))
        return ids[order][: max(n, 0)].tolist()

    def check_ids(self, ids: list[int]) -> None:
        missing = [i for i in ids if i not in self.images]
        if missing:
            raise _fail(self.path, f"image ids not in the file: {missing[:10]}")

    def scene(self, image_id: int) -> Scene:
        """The scene of one image: its people as labeled, depth guessed from their feet."""
        img = self.images[image_id]
        w, h = int(img["width"]), int(img["height"])
        anns = [self._annotation(a) for a in self.by_image[image_id]]
        people = [a for a in anns if not a["iscrowd"]]
        k = self.layout.num_joints
        kpts = np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(-1, k, 3)
        boxes = np.array([a["bbox"] for a in people], dtype=np.float64).reshape(-1, 4)
        joints, labels = kpts[..., :2], kpts[..., 2].astype(np.int64)
        height = estimate_height(self.layout, joints, labels, boxes)
        regions = make_regions(self.layout, joints, labels > 0, height)
        ci = img.get("crowd_index", img.get("crowdIndex"))
        image = {"id": image_id, "file_name": img.get("file_name", f"{image_id}.jpg"),
                 "width": w, "height": h,
                 "crowd_index": float(ci) if ci is not None else
                 round(crowd_index(kpts, boxes), 4)}
        occluded = self._occluded(joints, labels, boxes, regions)
        return Scene(image=image, annotations=anns, joints=joints, labels=labels,
                     occluded=occluded, height=height, regions=regions,
                     facing_back=facing_back(self.layout, joints, labels))

    def _annotation(self, ann: dict) -> dict:
        """The contract's fields of one annotation, with area filled in if missing."""
        kp = ann["keypoints"]
        bbox = ann.get("bbox")
        if not bbox:
            pts = np.asarray(kp, dtype=np.float64).reshape(-1, 3)
            pts = pts[pts[:, 2] > 0, :2]
            lo, hi = (pts.min(0), pts.max(0)) if len(pts) else (np.zeros(2), np.zeros(2))
            bbox = [*lo.tolist(), *(hi - lo).tolist()]
        area = ann.get("area")
        if area is None:
            area = round(person_area(bbox), 2)
        return {"id": ann["id"], "image_id": int(ann["image_id"]),
                "category_id": ann.get("category_id", self.category.get("id", 1)),
                "keypoints": kp,
                "num_keypoints": ann.get("num_keypoints",
                                         int(sum(v > 0 for v in kp[2::3]))),
                "bbox": bbox, "area": area, "iscrowd": int(ann.get("iscrowd", 0))}

    def _occluded(self, joints, labels, boxes, regions) -> np.ndarray:
        """Hidden from the detector: labeled v=1 (where that means occluded), or inside
        the body of someone nearer the camera (lower feet in the image)."""
        p, k = labels.shape
        flagged = (labels == 1) & ~self.uninformative_v1[None]
        if p < 2:
            return flagged
        d = region_distance(joints.reshape(-1, 2), regions).reshape(p, k, p)
        bottom = boxes[:, 1] + boxes[:, 3]
        rank = np.argsort(np.argsort(-bottom, kind="stable"), kind="stable")
        in_front = rank[None, :] < rank[:, None]
        return flagged | (((d < 1.0) & in_front[:, None, :]).any(axis=2) & (labels > 0))
