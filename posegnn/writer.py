"""Write a pose-maps dataset from a network's outputs, one image at a time.

A dump script runs the network over its images and hands each image's maps to
:class:`PoseMapsWriter`; the writer checks them against the contract (README: "Your own
data"), writes ``maps/<image_id>.npz`` at once and ``annotations.json`` on ``close()``.
Every file is written atomically, so an interrupted dump leaves only whole files::

    with PoseMapsWriter("my_dataset", layout="crowdpose14") as out:
        for image in images:
            heatmaps, tags = run_network(image)            # [K, Hh, Wh], [K, Ht, Wt]
            out.add(image.id, heatmaps, tags, image.width, image.height,
                    map_to_image=affine_from_center_scale(center, scale, heatmap_size),
                    people=annotations_of(image))          # COCO dicts, or [P, K, 3]

docs/real_networks.md gives recipes for HigherHRNet's official code and mmpose.

``heat_floor`` makes a *training dump*: every pixel where no heatmap reaches the floor
is stored as zero, in every channel, outside the few pixels around the kept ones that
graph building reads. Graphs built with ``graph.candidates.threshold`` at or above the
floor are those of the full maps, and the zeros compress to little (BENCHMARKS.md,
"Dumping a training set"). It is for training splits only: refinement and the ae
baseline read the whole map, so validate and test on full dumps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from posegnn.contract import (
    ANNOTATIONS,
    HEAT_FLOOR,
    MAPS_DIR,
    DatasetError,
    bbox_of,
    check_affine,
    check_arrays,
    person_area,
    write_maps,
)
from posegnn.io import atomic_write
from posegnn.layouts import Layout, get_layout


def affine_from_center_scale(center, scale, heatmap_size,
                             half_pixel: bool = False) -> np.ndarray:
    """``map_to_image`` [2, 3] of maps whose network input showed the image region of
    size ``scale`` (w, h, image pixels) centred on ``center`` (x, y), as HigherHRNet's and
    mmpose's bottom-up pipelines describe their input, at ``heatmap_size`` (W, H): the
    heatmap centre falls on ``center`` and W heatmap pixels span ``scale[0]`` image
    pixels (no rotation). ``half_pixel``: the network's own decoder puts a peak at pixel
    ``u`` at ``u + 0.5`` before this mapping (HigherHRNet's ``HeatmapParser.adjust``)."""
    cx, cy = (float(v) for v in center)
    sw, sh = (float(v) for v in np.broadcast_to(np.asarray(scale, np.float64), (2,)))
    w, h = (float(v) for v in heatmap_size)
    if min(sw, sh, w, h) <= 0:
        raise ValueError(f"scale {scale} and heatmap_size {heatmap_size} must be positive")
    shift = 0.5 if half_pixel else 0.0
    return np.array([[sw / w, 0.0, cx - sw / 2 + shift * sw / w],
                     [0.0, sh / h, cy - sh / 2 + shift * sh / h]])


def _read_by(n_tag: int, n_heat: int) -> np.ndarray:
    """[n_tag, n_heat]: tag row r is read when sampling at heat row v within half a pixel
    of heat row p (a sub-pixel peak), i.e. when v * n_tag / n_heat lies in [r - 1, r + 1]."""
    s = n_heat / n_tag
    r, p = np.arange(n_tag)[:, None], np.arange(n_heat)[None, :]
    return (p + 0.5 >= (r - 1) * s) & (p - 0.5 <= (r + 1) * s)


def graph_support(heatmaps: np.ndarray, tag_size: tuple[int, int], floor: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks [Hh, Wh] and [Ht, Wt] of the pixels graph building can read when
    every candidate peaks at ``floor`` or above. A candidate lies within half a pixel of
    a pixel where its heatmap reaches the floor; its sub-pixel fit and bilinear samples
    read one heat pixel each way, and the tag pixels either side of it."""
    above = np.asarray(heatmaps.max(axis=0) >= floor)
    pooled = F.max_pool2d(torch.from_numpy(above.astype(np.float32))[None], 3, 1, 1)
    heat = pooled[0].numpy() > 0
    (hh, wh), (ht, wt) = above.shape, tag_size
    tag = (_read_by(ht, hh).astype(np.float32) @ above.astype(np.float32)
           @ _read_by(wt, wh).T.astype(np.float32)) > 0
    return heat, tag


class PoseMapsWriter:
    """A pose-maps dataset being written (see the module doc). ``dtype`` is what the
    maps are stored as (``float16`` halves the files; ``float32`` keeps every bit);
    ``heat_floor`` makes it a training dump."""

    def __init__(self, root: str | Path, layout: Layout | str = "crowdpose14",
                 overwrite: bool = False, dtype: str = "float16",
                 category_id: int = 1, heat_floor: float | None = None) -> None:
        if heat_floor is not None and not 0 < heat_floor < 1:
            raise ValueError(f"heat_floor must be in (0, 1), got {heat_floor}")
        self.heat_floor = heat_floor
        self.root = Path(root)
        self.layout = get_layout(layout) if isinstance(layout, str) else layout
        if np.dtype(dtype) not in (np.float16, np.float32):
            raise ValueError(f"dtype must be float16 or float32, got {dtype}")
        self.dtype = np.dtype(dtype)
        self.category_id = category_id
        if self.root.exists() and any(self.root.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{self.root}: exists and is not empty "
                                      "(pass overwrite=True to replace it)")
            shutil.rmtree(self.root)
        (self.root / MAPS_DIR).mkdir(parents=True, exist_ok=True)
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.annotated = False  # people were given for some image
        self._closed = False

    # -- one image ------------------------------------------------------------------------
    def _check(self, image_id, heatmaps, tags, map_to_image) -> tuple[np.ndarray, ...]:
        where = f"image {image_id}"
        heat, tag = np.asarray(heatmaps), np.asarray(tags)
        for name, arr in (("heatmaps", heat), ("tags", tag)):
            if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
                raise DatasetError(f"{where}: {name} must be finite floats")
        check_arrays(where, heat.shape, tag.shape, self.dtype, self.dtype,
                     self.layout.num_joints, self.layout.name)
        affine = None if map_to_image is None else \
            check_affine(where, map_to_image).astype(np.float32)
        return heat.astype(self.dtype), tag.astype(self.dtype), affine

    def add(self, image_id: int, heatmaps, tags, width: int, height: int,
            file_name: str | None = None, map_to_image=None, crowd_index: float | None = None,
            people=None) -> Path:
        """Write one image's maps and record its entry and people. ``people``: COCO
        keypoint annotations (dicts with ``keypoints``, optional ``bbox``, ``area``,
        ``iscrowd``) or an array [P, K, 3] of (x, y, v) in image pixels; None for a
        prediction-only dataset. Returns the npz's path."""
        if self._closed:
            raise RuntimeError(f"{self.root}: the writer is closed")
        if not isinstance(image_id, (int, np.integer)) or isinstance(image_id, bool):
            raise TypeError(f"image_id must be an integer, got {image_id!r}")
        image_id = int(image_id)
        if any(img["id"] == image_id for img in self.images):
            raise DatasetError(f"image {image_id}: added twice")
        heat, tag, affine = self._check(image_id, heatmaps, tags, map_to_image)
        if self.heat_floor is not None:  # a training dump: zero what graphs never read
            heat_kept, tag_kept = graph_support(heat, tag.shape[1:3], self.heat_floor)
            heat[:, ~heat_kept] = 0  # _check's astype gave copies of the caller's arrays
            tag[:, ~tag_kept] = 0
        path = write_maps(self.root / MAPS_DIR / f"{image_id}.npz", heat, tag, affine)
        image = {"id": image_id, "file_name": file_name or f"{image_id}.jpg",
                 "width": int(width), "height": int(height)}
        if crowd_index is not None:
            image["crowd_index"] = float(crowd_index)
        self.images.append(image)
        if people is not None:
            self.annotated = True
            self._add_people(image_id, people)
        return path

    def _add_people(self, image_id: int, people) -> None:
        k = self.layout.num_joints
        if isinstance(people, np.ndarray) or (people and not isinstance(people[0], dict)):
            people = [{"keypoints": p} for p in np.asarray(people, np.float64).reshape(-1, k, 3)]
        for ann in people:
            kps = np.asarray(ann["keypoints"], np.float64).reshape(k, 3)
            bbox = ann.get("bbox", bbox_of(kps))
            self.annotations.append({
                "id": len(self.annotations) + 1, "image_id": image_id,
                "category_id": self.category_id,
                "keypoints": [float(v) for v in kps.reshape(-1)],
                "num_keypoints": int((kps[:, 2] > 0).sum()),
                "bbox": [float(v) for v in bbox],
                "area": float(ann.get("area", person_area(bbox))),
                "iscrowd": int(ann.get("iscrowd", 0))})

    # -- the dataset ----------------------------------------------------------------------
    def close(self, annotated: bool | None = None) -> Path:
        """Write ``annotations.json``; without ``annotations`` (a prediction-only
        dataset) when no image was given ``people`` or ``annotated=False``. Returns the
        dataset folder."""
        if self._closed:
            return self.root
        category = {"id": self.category_id, "name": "person",
                    "keypoints": list(self.layout.joints),
                    "skeleton": [[a + 1, b + 1] for a, b in self.layout.limbs]}
        doc = {"images": self.images, "categories": [category]}
        if self.heat_floor is not None:
            doc["info"] = {HEAT_FLOOR: self.heat_floor}
        if self.annotated if annotated is None else annotated:
            doc["annotations"] = self.annotations
        text = json.dumps(doc)
        atomic_write(self.root / ANNOTATIONS, lambda f: f.write(text.encode()))
        self._closed = True
        return self.root

    def __enter__(self) -> PoseMapsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
