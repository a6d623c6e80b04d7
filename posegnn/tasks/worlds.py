"""Worlds: ways to get a pose-maps dataset, each with a train and a test split.

A world is synthetic skeletons or real poses under the simulated detector (fixed, or
varied per image), the learned detector's maps over either, or a user's own folders.
:func:`world_split` writes a split once under ``paths.data_dir`` (keyed by everything
that shapes it) and returns its folder; :func:`mixed_dataset` joins several worlds'
training splits into one dataset, for training on a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from posegnn.choices import SettingError, one_of
from posegnn.data.datamodule import SyntheticSplits
from posegnn.data.maps import ANNOTATIONS, MAPS_DIR, DatasetError, PoseMapsDataset
from posegnn.data.synthetic import DetectorNoise, SyntheticConfig, generate_dataset
from posegnn.data.synthetic.detector import TRAINING_RANGES
from posegnn.io import file_lock

WORLD_KINDS = ("skeletons", "poses", "learned", "maps")
DETECTORS = ("fixed", "varied")
SPLIT_SEEDS = {"train": 0, "test": 2}  # as the synthetic datamodule offsets its splits


@dataclass
class WorldConfig:
    """One world (``conf/world/*.yaml``): where its train and test splits come from."""

    # skeletons: synthetic people; poses: the people of ``poses``; both under the
    # simulated detector. learned: the learned detector's maps (people of ``poses`` when
    # given, else skeletons). maps: your own dataset folders ``train`` and ``test``.
    kind: str = "skeletons"
    poses: str | None = None  # a CrowdPose/COCO keypoint file (kind poses, learned)
    crowd: str = "mixed"
    layout: str = "crowdpose14"
    # the simulated detector of each split: fixed (``noise``) or varied per image within
    # ``noise_ranges`` (the default training world's)
    train_detector: str = "varied"
    test_detector: str = "fixed"
    noise: DetectorNoise = field(default_factory=DetectorNoise)
    noise_ranges: dict[str, list[float]] = field(
        default_factory=lambda: {k: list(v) for k, v in TRAINING_RANGES.items()})
    # skeletons: share of the train split's people seen only down to a line across the
    # body, as the default training world's (SyntheticSplits.hidden_below)
    hidden_below: float = SyntheticSplits.hidden_below
    weights: str | None = None  # learned: detector weights; None: the shipped ones
    num_train: int = 2000
    num_test: int = 500
    seed: int = 0
    split_seed: int = 0  # order of a pose file's images: test first, then train
    train: str | None = None  # kind=maps
    test: str | None = None

    def __post_init__(self) -> None:
        one_of("world.kind", self.kind, WORLD_KINDS)
        one_of("world.train_detector", self.train_detector, DETECTORS)
        one_of("world.test_detector", self.test_detector, DETECTORS)


def _pose_ids(world: WorldConfig, split: str) -> list[int]:
    """Image ids of a split of the pose file: the first ``num_test`` of its seeded order
    are the test split, the ``num_train`` after them the train split."""
    with open(world.poses, encoding="utf-8") as f:
        ids = [int(img["id"]) for img in json.load(f)["images"]]
    order = [ids[i] for i in np.random.default_rng(world.split_seed).permutation(len(ids))]
    lo, hi = (0, world.num_test) if split == "test" else \
        (world.num_test, world.num_test + world.num_train)
    if hi > len(ids):
        raise SettingError(f"{world.poses}: {len(ids)} images, too few for num_test="
                           f"{world.num_test} and num_train={world.num_train}")
    return sorted(order[lo:hi])


def _check_world(name: str, world: WorldConfig) -> None:
    if world.kind == "poses" and not world.poses:
        raise DatasetError(f"world {name} draws its people from a CrowdPose or COCO keypoint "
                           "file: add poses=/path/to/crowdpose_val.json")
    if world.poses and not Path(world.poses).is_file():
        raise DatasetError(f"world {name}: poses={world.poses}: no such file")
    if world.kind == "maps":
        for split in ("train", "test"):
            if not getattr(world, split):
                raise DatasetError(f"world {name} (kind maps) needs worlds.{name}.{split}=DIR")


def world_split(name: str, world: WorldConfig, split: str, data_dir: str | Path,
                progress: bool = False) -> Path:
    """The folder of a world's ``train`` or ``test`` split, written on first use."""
    _check_world(name, world)
    if world.kind == "maps":
        return Path(getattr(world, split))
    n = world.num_train if split == "train" else world.num_test
    spec = {"kind": world.kind, "split": split, "n": n, "layout": world.layout,
            "crowd": world.crowd, "seed": world.seed, "split_seed": world.split_seed}
    if world.kind == "learned":
        from posegnn.data.learned_detector.write import WriteConfig, shipped_weights

        weights = Path(world.weights or shipped_weights(world.layout))
        spec["weights"] = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    else:
        detector = world.train_detector if split == "train" else world.test_detector
        spec["noise"] = asdict(world.noise)
        spec["ranges"] = world.noise_ranges if detector == "varied" else {}
    hidden = world.hidden_below if world.kind == "skeletons" and split == "train" else 0.0
    if hidden:  # worlds written before the setting keep their names
        spec["hidden_below"] = hidden
    ids = _pose_ids(world, split) if world.poses and world.kind == "poses" else None
    if world.poses:
        spec["poses"] = [Path(world.poses).name, Path(world.poses).stat().st_size]
    key = hashlib.sha256(json.dumps([spec, ids], sort_keys=True).encode()).hexdigest()[:12]
    out = Path(data_dir) / f"world-{world.kind}-{split}-{key}"
    with file_lock(out.parent / ".locks" / f"{out.name}.lock"):
        if out.exists():
            return out
        seed = world.seed * 1000 + SPLIT_SEEDS[split]
        if world.kind == "learned":
            from posegnn.data.learned_detector.write import write_dataset

            write_dataset(WriteConfig(out=str(out), weights=str(weights), layout=world.layout,
                                      poses=world.poses, images=split, num_images=n,
                                      seed=seed, crowd=world.crowd,
                                      split_seed=world.split_seed), progress=progress)
        else:
            generate_dataset(out, SyntheticConfig(
                num_images=n, seed=world.seed if ids else seed, crowd=world.crowd,
                layout=world.layout, poses=world.poses, noise=world.noise,
                noise_ranges=spec["ranges"], hidden_below=hidden), progress=progress,
                image_ids=ids)
    return out


def mixed_dataset(parts: dict[str, tuple[Path, int]], data_dir: str | Path) -> Path:
    """One dataset of the first ``n`` images of each named dataset ``{name: (folder,
    n)}``: images renumbered 1..N, map files linked (copied where links fail)."""
    key_src = [[name, str(Path(root).resolve()), n] for name, (root, n) in sorted(parts.items())]
    key = hashlib.sha256(json.dumps(key_src).encode()).hexdigest()[:12]
    out = Path(data_dir) / f"mix-{key}"
    with file_lock(out.parent / ".locks" / f"{out.name}.lock"):
        if out.exists():
            return out
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            _write_mix(parts, tmp)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def _write_mix(parts: dict[str, tuple[Path, int]], tmp: Path) -> None:
    (tmp / MAPS_DIR).mkdir()
    images, annotations, category = [], [], None
    for name, (root, n) in sorted(parts.items()):
        ds = PoseMapsDataset(root)
        with open(Path(root) / ANNOTATIONS, encoding="utf-8") as f:
            raw = json.load(f)
        cat = next(c for c in raw["categories"] if c.get("keypoints"))
        if category is not None and cat["keypoints"] != category["keypoints"]:
            raise DatasetError(f"{root}: keypoints {cat['keypoints']} differ from the other "
                               "worlds' of the mix")
        category = category or cat
        by_image: dict[int, list[dict]] = {}
        for ann in raw.get("annotations", []):
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        for img in sorted(raw["images"], key=lambda i: int(i["id"]))[:n]:
            new_id = len(images) + 1
            src = ds.maps_path(int(img["id"]))
            dst = tmp / MAPS_DIR / f"{new_id}.npz"
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            images.append({**img, "id": new_id, "file_name": f"{name}/{img['file_name']}"})
            for ann in by_image.get(int(img["id"]), []):
                annotations.append({**ann, "id": len(annotations) + 1, "image_id": new_id})
    doc = {"images": images, "annotations": annotations, "categories": [category]}
    (tmp / ANNOTATIONS).write_text(json.dumps(doc), encoding="utf-8")
