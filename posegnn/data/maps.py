"""Read and validate a pose-maps dataset (the contract in DESIGN.md; one image's maps:
:mod:`posegnn.contract`).

A dataset is a directory with ``annotations.json`` (COCO keypoints) and
``maps/<image_id>.npz`` holding ``heatmaps`` [K, Hh, Wh], ``tags`` [K, Ht, Wt] or
[K, Ht, Wt, D], and optionally ``map_to_image`` [2, 3]. Every problem is reported as a
:class:`DatasetError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np

from posegnn.contract import (  # noqa: F401 - the reader's names, re-exported
    ANNOTATIONS,
    HEAT_FLOOR,
    MAP_ARRAYS,
    MAP_DTYPES,
    MAPS_DIR,
    MAX_MAP_MIB,
    OPTIONAL_ARRAYS,
    DatasetError,
    ImageMaps,
    bbox_of,
    npz_headers,
    person_area,
    read_maps,
)
from posegnn.layouts import Layout, layout_from_category

log = logging.getLogger(__name__)

# Labeled keypoints may stray this far outside the image (as a fraction of its size):
# real annotation files hold a few at x = -1 .. -7.
OUTSIDE_TOLERANCE = 0.05


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (a pose-maps dataset needs {ANNOTATIONS})")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unique_ids(items: list, kind: str, path: Path) -> None:
    seen: set = set()
    for item in items:
        if not isinstance(item, dict) or not _is_int(item.get("id")):
            raise DatasetError(f"{path}: every entry of '{kind}' needs an integer 'id'")
        if item["id"] in seen:
            raise DatasetError(f"{path}: duplicate {kind} id {item['id']}")
        seen.add(item["id"])


class PoseMapsDataset:
    """A validated pose-maps dataset directory.

    ``require_annotations=False`` accepts a prediction-only dataset that lists images
    but no annotations. ``sigmas`` is needed only for a layout other than crowdpose14
    and coco17. ``skip_bad_annotations`` leaves out every image with a broken entry (an
    image without a size, an annotation with bad keypoints or a duplicate id) instead of
    raising; ``skipped`` then says which and why, and the ground truth follows.
    """

    def __init__(self, root: str | Path, sigmas: list[float] | None = None,
                 require_annotations: bool = True, check_maps: bool = True,
                 max_map_mib: float = MAX_MAP_MIB, skip_bad_annotations: bool = False) -> None:
        self.root = Path(root)
        self.max_map_mib = max_map_mib
        self.skip_bad_annotations = skip_bad_annotations
        self.skipped: dict[int, str] = {}  # image id -> why it was left out
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: not a directory (expected a pose-maps dataset)")
        self.ann_path = self.root / ANNOTATIONS
        raw = _read_json(self.ann_path)
        self.images, self.category, self.layout = self._read_images_and_layout(raw, sigmas)
        self.has_annotations = "annotations" in raw
        self.heat_floor = _heat_floor(raw, self.ann_path)  # a training dump's, else None
        if require_annotations and not self.has_annotations:
            raise DatasetError(f"{self.ann_path}: no 'annotations' list")
        self.annotations = self._normalize_annotations(raw.get("annotations") or [])
        if self.skipped:
            self._leave_out_skipped(len(self.images))
        self.image_ids = [img["id"] for img in self.images]
        self._by_image: dict[int, list[dict]] = {i: [] for i in self.image_ids}
        for ann in self.annotations:
            self._by_image[ann["image_id"]].append(ann)
        self._image_index = {img["id"]: img for img in self.images}
        if check_maps:
            self._check_map_files()

    # -- annotations ---------------------------------------------------------------------
    def _read_images_and_layout(self, raw: dict, sigmas) -> tuple[list, dict, Layout]:
        path = self.ann_path
        images = raw.get("images")
        if not isinstance(images, list):
            raise DatasetError(f"{path}: no 'images' list")
        _unique_ids(images, "images", path)
        for img in images:
            for key in ("width", "height"):
                if not _is_number(img.get(key)) or img[key] <= 0:
                    self._broken(img["id"], f"{path}: image {img['id']} has no positive "
                                            f"'{key}'")
                    img[key] = 1  # only reached when skipping: the image is left out
            # CrowdPose's official json spells it crowdIndex
            if "crowd_index" not in img and "crowdIndex" in img:
                img["crowd_index"] = img.pop("crowdIndex")
        cats = raw.get("categories")
        if not isinstance(cats, list) or not cats:
            raise DatasetError(f"{path}: no 'categories' with keypoint names")
        category = next((c for c in cats if isinstance(c, dict) and c.get("keypoints")), None)
        if category is None:
            raise DatasetError(f"{path}: no category lists 'keypoints' names")
        try:
            layout = layout_from_category(category, sigmas, source=str(path))
        except ValueError as e:
            raise DatasetError(str(e)) from None
        skeleton = category.get("skeleton")
        if skeleton and layout.name != "custom":
            expected = sorted(tuple(sorted((a - 1, b - 1))) for a, b in skeleton)
            if any(max(pair) >= layout.num_joints for pair in expected):
                warnings.warn(f"{path}: the category's skeleton refers to joints beyond "
                              f"{layout.num_joints} (COCO's skeleton in a {layout.name} "
                              "category?); using the layout's own limbs", stacklevel=2)
        return images, category, layout

    def _normalize_annotations(self, anns: list) -> list[dict]:
        path = self.ann_path
        if not isinstance(anns, list):
            raise DatasetError(f"{path}: 'annotations' must be a list")
        images = {img["id"]: img for img in self.images}
        out, seen = [], set()
        for ann in anns:
            if not isinstance(ann, dict) or not _is_int(ann.get("id")):
                raise DatasetError(f"{path}: every entry of 'annotations' needs an integer "
                                   "'id'")
            img = images.get(ann.get("image_id")) if _is_int(ann.get("image_id")) else None
            if img is None:
                raise DatasetError(f"{path}: annotation {ann['id']} refers to unknown image "
                                   f"{ann.get('image_id')}")
            try:
                if ann["id"] in seen:
                    raise DatasetError(f"{path}: duplicate annotations id {ann['id']}")
                seen.add(ann["id"])
                out.append(self._normalize_annotation(ann, img))
            except DatasetError as err:
                self._broken(img["id"], str(err))
        return out

    def check_graph_settings(self, graph) -> None:
        """Refuse graph settings that would read pixels a training dump left out."""
        if self.heat_floor is None:
            return
        where = f"{self.root}: a training dump (heat below {self.heat_floor:g} stored as 0)"
        if graph.candidates.threshold < self.heat_floor:
            raise DatasetError(f"{where}; graph.candidates.threshold="
                               f"{graph.candidates.threshold:g} would read what it dropped")
        if graph.normalization == "per_map":
            raise DatasetError(f"{where}; graph.normalization=per_map reads whole maps")

    def _broken(self, image_id: int, message: str) -> None:
        """Raise ``message``, or remember the image as left out when skipping."""
        if not self.skip_bad_annotations:
            raise DatasetError(message)
        self.skipped.setdefault(image_id, message)

    def _leave_out_skipped(self, total: int) -> None:
        self.images = [img for img in self.images if img["id"] not in self.skipped]
        self.annotations = [a for a in self.annotations if a["image_id"] not in self.skipped]
        shown = "\n  ".join(list(self.skipped.values())[:10])
        log.warning("%s: left out %d of %d images with broken annotations "
                    "(data.skip_bad_annotations):\n  %s", self.ann_path, len(self.skipped),
                    total, shown)

    def _normalize_annotation(self, ann: dict, img: dict) -> dict:
        """One annotation checked and completed (area, bbox, iscrowd, num_keypoints)."""
        path, k, aid = self.ann_path, self.layout.num_joints, ann["id"]
        kps = ann.get("keypoints")
        if not isinstance(kps, list) or len(kps) != 3 * k or not all(map(_is_number, kps)):
            n = len(kps) if isinstance(kps, list) else "no"
            raise DatasetError(f"{path}: annotation {aid} has {n} keypoint values, "
                               f"expected 3 * {k} numbers for layout {self.layout.name}")
        arr = np.asarray(kps, dtype=np.float64).reshape(k, 3)
        if not np.isfinite(arr).all():
            raise DatasetError(f"{path}: annotation {aid} has NaN or inf keypoints")
        v = arr[:, 2]
        if not np.isin(v, (0, 1, 2)).all():
            raise DatasetError(f"{path}: annotation {aid} has visibility flags "
                               f"{sorted(set(v.tolist()))}; only 0, 1, 2 are allowed")
        self._check_inside(arr[v > 0, :2], img, aid)
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            bbox = bbox_of(arr)
        area = ann.get("area")
        if not _is_number(area):  # CrowdPose: no area (crowdposetools' rule)
            area = person_area(bbox)
        return {**ann, "keypoints": arr.reshape(-1).tolist(), "bbox": list(bbox),
                "area": float(area), "iscrowd": int(ann.get("iscrowd", 0)),
                "category_id": ann.get("category_id", self.category.get("id", 1)),
                "num_keypoints": int((v > 0).sum())}

    def _check_inside(self, xy: np.ndarray, img: dict, aid) -> None:
        w, h = img["width"], img["height"]
        lo = -OUTSIDE_TOLERANCE * np.array([w, h])
        hi = (1 + OUTSIDE_TOLERANCE) * np.array([w, h])
        bad = (xy < lo) | (xy > hi)
        if bad.any():
            x, y = xy[bad.any(axis=1)][0]
            raise DatasetError(f"{self.ann_path}: annotation {aid} has a labeled keypoint at "
                               f"({x:g}, {y:g}), outside image {img['id']} of size {w}x{h}")

    def _check_map_files(self) -> None:
        maps_dir = self.root / MAPS_DIR
        if not maps_dir.is_dir():
            raise DatasetError(f"{maps_dir}: missing (one npz of maps per image)")
        on_disk = {p.stem for p in maps_dir.glob("*.npz")}
        listed = {str(i) for i in self.image_ids}
        missing = sorted(listed - on_disk)
        extra = sorted(on_disk - listed - {str(i) for i in self.skipped})
        if missing:
            padded = next((e for e in extra if e.lstrip("0") == missing[0].lstrip("0")), None)
            fix = (f"; name files by id: {padded}.npz should be {missing[0]}.npz" if padded
                   else f" (expected {missing[0]}.npz)")
            raise DatasetError(f"{maps_dir}: no maps for {len(missing)} listed image(s), "
                               f"e.g. image id {missing[0]}{fix}")
        if extra:
            raise DatasetError(f"{maps_dir}/{extra[0]}.npz: maps for an image that "
                               f"{ANNOTATIONS} does not list ({len(extra)} such file(s))")

    # -- access --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    def image(self, image_id: int) -> dict:
        return self._image_index[image_id]

    def annotations_of(self, image_id: int) -> list[dict]:
        return self._by_image.get(image_id, [])

    def gt_keypoints(self, image_id: int,
                     include_crowd: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth people of an image: keypoints [P, K, 3] and areas [P]."""
        anns = [a for a in self.annotations_of(image_id) if include_crowd or not a["iscrowd"]]
        k = self.layout.num_joints
        kps = np.asarray([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, k, 3)
        return kps, np.asarray([a["area"] for a in anns], dtype=np.float64)

    def coco_dict(self, image_ids: list[int] | None = None) -> dict:
        """The normalized COCO ground truth (optionally for a subset of images)."""
        keep = set(self.image_ids if image_ids is None else image_ids)
        return {
            "images": [img for img in self.images if img["id"] in keep],
            "annotations": [a for a in self.annotations if a["image_id"] in keep],
            "categories": [{**self.category, "skeleton": [[a + 1, b + 1] for a, b in
                                                          self.layout.limbs]}],
        }

    def maps_path(self, image_id: int) -> Path:
        return self.root / MAPS_DIR / f"{image_id}.npz"

    def load_maps(self, image_id: int) -> ImageMaps:
        """Load and validate the maps of one image."""
        return read_maps(self.maps_path(image_id), self.image(image_id), self.layout.num_joints,
                         self.max_map_mib, self.layout.name)


def _heat_floor(raw: dict, path: Path) -> float | None:
    """``info.heat_floor`` of a training dump, checked; None for full maps."""
    info = raw.get("info")
    floor = info.get(HEAT_FLOOR) if isinstance(info, dict) else None
    if floor is not None and not (_is_number(floor) and 0 < floor < 1):
        raise DatasetError(f"{path}: info.{HEAT_FLOOR} must be a number in (0, 1), "
                           f"got {floor!r}")
    return None if floor is None else float(floor)
