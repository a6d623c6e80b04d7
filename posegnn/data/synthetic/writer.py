"""Write a pose-maps dataset (the DESIGN.md contract) from synthetic or real poses.

Writes are atomic: everything goes to a temporary sibling directory that is renamed into
place at the end. Output bytes depend only on the config: the json is written in a fixed
order and the npz archives carry a fixed timestamp.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from posegnn.choices import one_of
from posegnn.contract import save_npz
from posegnn.io import current_umask
from posegnn.layouts import LAYOUTS, Layout, get_layout

from .detector import (
    RESOLUTION,
    DetectorNoise,
    check_noise_ranges,
    check_tag_dim,
    draw_noise,
    draw_tag_dim,
    letterbox,
    render_maps,
)
from .poses import PoseFile
from .scene import CROWDS, Scene, synthetic_scene

SCENE_STREAM, DETECTOR_STREAM, RANGES_STREAM = 0, 1, 2


@dataclass
class SyntheticConfig:
    """What to generate; ``noise`` configures the simulated detector."""

    num_images: int = 200
    seed: int = 0
    crowd: str = "mixed"  # easy | medium | hard | mixed | packed (about 60 people)
    layout: str = "crowdpose14"  # or coco17
    poses: str | None = None  # COCO keypoint file to draw people from
    input_size: int = 512
    heatmap_size: int = 256
    tag_size: int = 128
    noise: DetectorNoise = field(default_factory=DetectorNoise)
    # per-image ranges [low, high] of detector settings (DetectorNoise fields, or
    # heatmap_size: the tag map keeps its ratio to it; tag_dim: a whole number); the rest
    # comes from ``noise``
    noise_ranges: dict[str, list[float]] = field(default_factory=dict)
    # share of the synthetic people seen only down to a line across the body (legs
    # hidden, box cut short), as in real crowds; a poses file keeps its own visibility
    hidden_below: float = 0.0


def image_rng(seed: int, image_id: int, stream: int) -> np.random.Generator:
    """The generator of one image: independent of the other images and of the order."""
    return np.random.default_rng(np.random.SeedSequence([seed, image_id, stream]))


def category(layout: Layout, category_id: int = 1) -> dict:
    """The COCO person category of a layout (1-based skeleton from its limbs)."""
    return {"id": category_id, "name": "person", "supercategory": "person",
            "keypoints": list(layout.joints),
            "skeleton": [[a + 1, b + 1] for a, b in layout.limbs]}


class _Synthetic:
    """Scenes of articulated people; image ids are 1..num_images."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg, self.layout = cfg, get_layout(cfg.layout)
        self.category_id = 1

    def default_ids(self, n: int, seed: int) -> list[int]:
        return list(range(1, n + 1))

    def check_ids(self, ids: list[int]) -> None:
        bad = [i for i in ids if int(i) < 0]
        if bad:
            raise ValueError(f"synthetic image ids must be >= 0, got {bad[:10]}")

    def scene(self, image_id: int) -> Scene:
        rng = image_rng(self.cfg.seed, image_id, SCENE_STREAM)
        return synthetic_scene(rng, image_id, self.layout, self.cfg.crowd, self.cfg.input_size,
                               self.cfg.hidden_below)


class _Real:
    """Scenes from a pose file, with its own image ids."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.file = PoseFile(cfg.poses)
        self.layout = self.file.layout
        self.category_id = self.file.category.get("id", 1)
        if self.layout.name != cfg.layout:
            warnings.warn(f"{cfg.poses}: its keypoints are {self.layout.name}, not "
                          f"layout={cfg.layout}; using {self.layout.name}", stacklevel=3)
        self.default_ids, self.check_ids, self.scene = (
            self.file.default_ids, self.file.check_ids, self.file.scene)


def _check_config(cfg: SyntheticConfig) -> None:
    if cfg.seed < 0:
        raise ValueError(f"seed={cfg.seed}: must be >= 0")
    one_of("crowd", cfg.crowd, CROWDS)
    one_of("layout", cfg.layout, LAYOUTS)
    if min(cfg.input_size, cfg.heatmap_size, cfg.tag_size) <= 0:
        raise ValueError("input_size, heatmap_size and tag_size must be positive")
    check_tag_dim(cfg.noise.tag_dim, "noise.tag_dim")
    check_noise_ranges(cfg.noise_ranges)
    if not 0.0 <= cfg.hidden_below <= 1.0:
        raise ValueError(f"hidden_below={cfg.hidden_below}: a share of the people, in [0, 1]")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass overwrite=True to "
                              "replace it)")


def _commit(tmp: Path, out: Path) -> None:
    """Move the finished dataset into place, replacing an old one only at the end."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "data")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_image(scene: Scene, source, cfg: SyntheticConfig, maps_dir: Path) -> None:
    img = scene.image
    noise, heatmap_size, tag_size = cfg.noise, cfg.heatmap_size, cfg.tag_size
    if cfg.noise_ranges:  # its own stream: fixed-noise datasets stay byte-identical
        ranges_rng = image_rng(cfg.seed, img["id"], RANGES_STREAM)
        noise = draw_noise(noise, cfg.noise_ranges, ranges_rng)
        if RESOLUTION in cfg.noise_ranges:
            heatmap_size = 16 * round(ranges_rng.uniform(*cfg.noise_ranges[RESOLUTION]) / 16)
            tag_size = round(heatmap_size * cfg.tag_size / cfg.heatmap_size)
        noise = draw_tag_dim(noise, cfg.noise_ranges, ranges_rng)  # last: the rest stays
    geom = letterbox(img["width"], img["height"], cfg.input_size, heatmap_size, tag_size)
    rng = image_rng(cfg.seed, img["id"], DETECTOR_STREAM)
    arrays = render_maps(scene, source.layout, geom, noise, rng)
    save_npz(maps_dir / f"{img['id']}.npz", arrays)


def _info(cfg: SyntheticConfig) -> dict:
    conf = asdict(cfg)
    if cfg.poses is not None:
        conf["poses"] = Path(cfg.poses).name
    return {"description": "posegnn pose-maps dataset (simulated detector)", "config": conf}


def generate_dataset(out: str | Path, cfg: SyntheticConfig, progress: bool = True,
                     image_ids: list[int] | None = None, overwrite: bool = False) -> Path:
    """Generate a pose-maps dataset in ``out`` and return its path.

    Synthetic images have ids 1..num_images; with ``cfg.poses`` the file's images are
    used, the first ``num_images`` in a seeded order. ``image_ids`` picks images
    explicitly (the same ids give the same images whatever else is generated).
    """
    _check_config(cfg)
    out = Path(out)
    _check_out(out, overwrite)
    source = _Real(cfg) if cfg.poses else _Synthetic(cfg)
    ids = [int(i) for i in image_ids] if image_ids is not None else source.default_ids(
        cfg.num_images, cfg.seed)
    source.check_ids(ids)
    if len(set(ids)) != len(ids):
        raise ValueError("image_ids has duplicates")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; the dataset is not
        (tmp / "maps").mkdir()
        images, annotations = [], []
        for image_id in tqdm(ids, desc="generate", unit="img", disable=not progress):
            scene = source.scene(image_id)
            _write_image(scene, source, cfg, tmp / "maps")
            images.append(scene.image)
            annotations.extend(scene.annotations)
        data = {"info": _info(cfg), "images": images, "annotations": annotations,
                "categories": [category(source.layout, source.category_id)]}
        with open(tmp / "annotations.json", "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
