"""Dumping a training set: time and disk of full maps against a training dump.

A trained network's maps are nowhere exactly zero, so full float16 maps barely compress.
This writes ``--num-images`` images through :class:`~posegnn.writer.PoseMapsWriter`, the
maps drawn in turn from a pool of the learned detector's outputs (flip test, 2-D tags),
upsampled to the report's CrowdPose shape (heatmaps 14x256x256, tags 14x128x128x2), as
full maps and as a training dump (``heat_floor``); then it builds the graphs of a sample
of both and checks they are equal. Only the writer is timed (checks, mask, compression,
the atomic write).

    python benchmarks/bench_dump.py --num-images 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from posegnn.data.cache import build_graphs
from posegnn.data.graph import GraphConfig
from posegnn.data.learned_detector.write import WriteConfig, write_dataset
from posegnn.data.maps import PoseMapsDataset
from posegnn.writer import PoseMapsWriter

HEAT_SIZE, TAG_SIZE = 256, 128  # the report's CrowdPose maps


def network_maps(tmp: Path, pool: int) -> list[tuple]:
    """``pool`` images of the learned detector's maps at the report's shape, with their
    image entry and people."""
    src = PoseMapsDataset(write_dataset(WriteConfig(out=str(tmp / "pool"), num_images=pool),
                                        progress=False))
    out = []
    for image_id in src.image_ids:
        maps = src.load_maps(image_id)
        heat = F.interpolate(torch.from_numpy(maps.heatmaps)[None], size=HEAT_SIZE,
                             mode="bilinear", align_corners=False)[0].numpy()
        k, _, _, d = maps.tags.shape
        tags = torch.from_numpy(maps.tags).permute(0, 3, 1, 2).reshape(1, k * d,
                                                                      *maps.tags.shape[1:3])
        tags = F.interpolate(tags, size=TAG_SIZE, mode="bilinear", align_corners=False)
        tags = tags.reshape(k, d, TAG_SIZE, TAG_SIZE).permute(0, 2, 3, 1).numpy()
        scale = maps.heatmaps.shape[2] / HEAT_SIZE
        affine = maps.map_to_image @ np.diag([scale, scale, 1.0])
        out.append((heat, tags, affine, src.image(image_id), src.annotations_of(image_id)))
    return out


def dump(root: Path, pool: list[tuple], n: int, heat_floor: float | None) -> float:
    """Write ``n`` images cycling through ``pool``; the writer's seconds."""
    seconds = 0.0
    with PoseMapsWriter(root, heat_floor=heat_floor) as writer:
        for i in tqdm(range(n), desc=root.name, unit="img", mininterval=5):
            heat, tags, affine, image, people = pool[i % len(pool)]
            start = time.perf_counter()
            writer.add(i + 1, heat, tags, image["width"], image["height"],
                       map_to_image=affine, people=people)
            seconds += time.perf_counter() - start
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=10_000)
    ap.add_argument("--pool", type=int, default=50, help="distinct network outputs")
    ap.add_argument("--heat-floor", type=float, default=GraphConfig().candidates.threshold)
    ap.add_argument("--check", type=int, default=50, help="images whose graphs are compared")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(tmp)
        pool = network_maps(tmp, args.pool)
        sizes = {}
        for name, floor in (("full", None), ("training_dump", args.heat_floor)):
            seconds = dump(tmp / name, pool, args.num_images, floor)
            size = sum(p.stat().st_size for p in (tmp / name).rglob("*") if p.is_file())
            sizes[name] = size
            print(f"{name:<14} {args.num_images} images: {size / 2**30:7.2f} GiB "
                  f"({size / args.num_images / 2**20:.2f} MiB/image), writer {seconds:7.1f} s "
                  f"({1e3 * seconds / args.num_images:.1f} ms/image); 60,000 images: "
                  f"{size / args.num_images * 6e4 / 2**30:.0f} GiB")
        print(f"training dump / full: {sizes['training_dump'] / sizes['full']:.2f} "
              f"(heat_floor {args.heat_floor:g})")
        cfg, ids = GraphConfig(), list(range(1, min(args.check, args.num_images) + 1))
        full, kept = (build_graphs(PoseMapsDataset(tmp / n), ids, cfg, progress=False)
                      for n in ("full", "training_dump"))
        same = all(torch.equal(a[key], b[key]) for a, b in zip(full, kept, strict=True)
                   for key in a.keys() if isinstance(a[key], torch.Tensor))
        print(f"graphs of the first {len(ids)} images equal: {same}")


if __name__ == "__main__":
    main()
