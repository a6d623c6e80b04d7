"""Run the learned detector over rendered scenes and write its maps as a user would:
flip test (heatmaps averaged with the flip index, the flipped pass's tags as a second
tag dimension) and ``map_to_image``, through :class:`~posegnn.writer.PoseMapsWriter`."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from posegnn.choices import one_of
from posegnn.data.synthetic import PoseFile, Scene, synthetic_scene
from posegnn.data.synthetic.writer import image_rng
from posegnn.layouts import Layout, get_layout
from posegnn.writer import PoseMapsWriter, affine_from_center_scale

from .network import BottomUpNet
from .render import InputGeometry, letterbox_geometry, render_scene
from .train import load_detector

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SCENE_STREAM, RENDER_STREAM = 12, 13  # apart from the streams the detector trained on
IMAGE_SETS = ("test", "train")


@dataclass
class WriteConfig:
    """A dataset of the learned detector's maps (``posegnn-detector write``)."""

    out: str | None = None
    weights: str | None = None  # None: the weights shipped for ``layout``
    layout: str = "crowdpose14"
    # people from this CrowdPose/COCO keypoint file; None: synthetic skeletons
    poses: str | None = None
    # poses: ``test`` takes the first num_images of the file's seeded order (held out
    # from the detector's training), ``train`` those after the first ``holdout``
    images: str = "test"
    holdout: int = 500
    split_seed: int = 0
    num_images: int = 300
    seed: int = 0  # synthetic scenes and the rendering's randomness
    crowd: str = "mixed"
    upsample: bool = True  # heatmaps at the input size, as HigherHRNet's project2image
    batch_size: int = 16
    overwrite: bool = False

    def __post_init__(self) -> None:
        one_of("images", self.images, IMAGE_SETS)


def shipped_weights(layout: str) -> Path:
    """The detector weights that ship with posegnn for a layout."""
    path = WEIGHTS_DIR / f"{layout}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no learned detector ships for layout {layout}; "
                                "train one with posegnn-detector train --out PATH")
    return path


@torch.no_grad()
def flip_test(net: BottomUpNet, images: torch.Tensor, layout: Layout,
              upsample: bool) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps [B, K, H, W] (the two passes averaged) and tags [B, K, h, w, 2] (the
    image's and the mirrored image's, flipped back, joint channels swapped)."""
    perm = torch.from_numpy(layout.flip_permutation())
    heat, tags = net(images)
    heat_f, tags_f = net(images.flip(-1))
    heat = 0.5 * (heat + heat_f.flip(-1)[:, perm])
    tags = torch.stack([tags, tags_f.flip(-1)[:, perm]], dim=-1)
    if upsample:
        heat = F.interpolate(heat, size=images.shape[-2:], mode="bilinear",
                             align_corners=False)
    return heat.numpy(), tags.numpy()


def scenes(cfg: WriteConfig, layout: Layout) -> Iterator[Scene]:
    """The scenes of the dataset, in image-id order."""
    if cfg.poses is None:
        for i in range(1, cfg.num_images + 1):
            yield synthetic_scene(image_rng(cfg.seed, i, SCENE_STREAM), i, layout, cfg.crowd,
                                  input_size=512)
        return
    poses = PoseFile(cfg.poses)
    ids = [int(i) for i in poses.images]
    order = [ids[i] for i in np.random.default_rng(cfg.split_seed).permutation(len(ids))]
    chosen = order[:cfg.num_images] if cfg.images == "test" else \
        order[cfg.holdout:cfg.holdout + cfg.num_images]
    if cfg.images == "test" and cfg.num_images > cfg.holdout:
        raise ValueError(f"num_images={cfg.num_images} test images of {cfg.poses} exceed the "
                         f"{cfg.holdout} held out from the detector's training (holdout)")
    for i in sorted(chosen):
        yield poses.scene(i)


def write_dataset(cfg: WriteConfig, progress: bool = True) -> Path:
    """Write the dataset into ``cfg.out`` (atomically: a failed run leaves nothing)."""
    if not cfg.out:
        raise ValueError("give the output folder (out=DIR)")
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass overwrite to replace it)")
    layout = get_layout(cfg.layout)
    net = load_detector(cfg.weights or shipped_weights(cfg.layout))
    if net.num_joints != layout.num_joints:
        raise ValueError(f"{cfg.weights}: a detector of {net.num_joints} joints, not "
                         f"{layout.name}'s {layout.num_joints}")
    size = net.input_size
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with PoseMapsWriter(tmp, layout=layout, overwrite=True) as writer:
            batch: list[tuple[Scene, object, np.ndarray]] = []
            for scene in tqdm(scenes(cfg, layout), total=cfg.num_images, desc="detect",
                              unit="img", disable=not progress):
                img = scene.image
                geom = letterbox_geometry(img["width"], img["height"], size)
                rng = image_rng(cfg.seed, img["id"], RENDER_STREAM)
                batch.append((scene, geom, render_scene(scene, layout, geom, rng)))
                if len(batch) == cfg.batch_size:
                    _write_batch(writer, batch, net, layout, cfg.upsample)
                    batch = []
            _write_batch(writer, batch, net, layout, cfg.upsample)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def map_affine(geom: InputGeometry, map_size: tuple[int, int]) -> np.ndarray:
    """``map_to_image`` of maps of ``map_size`` (W, H) over the network input ``geom``:
    the input region's centre and side, with the half pixel of HigherHRNet's decoder (a
    map pixel u is the point u + 0.5 of its grid, as the training targets place it)."""
    return affine_from_center_scale(geom.center, (geom.side, geom.side), map_size,
                                    half_pixel=True)


def _write_batch(writer: PoseMapsWriter, batch: list, net: BottomUpNet, layout: Layout,
                 upsample: bool) -> None:
    if not batch:
        return
    images = torch.from_numpy(np.stack([b[2] for b in batch]))
    heat, tags = flip_test(net, images, layout, upsample)
    for (scene, geom, _), h, t in zip(batch, heat, tags, strict=True):
        img = scene.image
        writer.add(img["id"], h, t, img["width"], img["height"], file_name=img["file_name"],
                   map_to_image=map_affine(geom, h.shape[:0:-1]),
                   crowd_index=img.get("crowd_index"), people=scene.annotations)
