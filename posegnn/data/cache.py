"""Build, key and store the vertex graphs of a dataset split, atomically."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch_geometric.data import Data
from tqdm.auto import tqdm

from posegnn.data.graph import GraphConfig, build_vertices
from posegnn.data.maps import ANNOTATIONS, MAPS_DIR, DatasetError, PoseMapsDataset
from posegnn.io import atomic_torch_save, file_lock

log = logging.getLogger(__name__)
# Bump when the stored graph format changes: old caches are then never read.
CACHE_FORMAT = 1


def dataset_fingerprint(root: Path) -> str:
    """Identity of a dataset directory: its annotations' content and its map files'
    names, sizes and modification times."""
    h = hashlib.sha256()
    h.update((root / ANNOTATIONS).read_bytes())
    for path in sorted((root / MAPS_DIR).glob("*.npz")):
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def cache_key(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
              skip_bad: bool = False) -> str:
    """Key covering the data's identity, the chosen images and every vertex setting.

    Edge settings are not part of it: edges are derived from the cached vertices when
    graphs are loaded (:class:`posegnn.data.graph.AddEdges`).
    """
    settings = cfg.to_dict()
    settings.pop("edges")
    payload = json.dumps({"format": CACHE_FORMAT, "data": dataset_fingerprint(dataset.root),
                          "images": image_ids, "graph": settings, "skip_bad": skip_bad},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_graphs(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
                 desc: str = "graphs", progress: bool = True,
                 skip_bad: bool = False) -> list[Data]:
    """Vertex graphs of the given images, with ground truth where the dataset has it.

    A broken maps file raises :class:`DatasetError`, unless ``skip_bad``: then the image
    is left out and a warning counts what was skipped and why.
    """
    graphs, skipped = [], []
    for image_id in tqdm(image_ids, desc=desc, disable=not progress, unit="img"):
        gt = areas = None
        if dataset.has_annotations:
            gt, areas = dataset.gt_keypoints(image_id)
        try:
            maps = dataset.load_maps(image_id)
        except DatasetError as err:
            if not skip_bad:
                raise
            skipped.append(str(err))
            continue
        graphs.append(build_vertices(maps, dataset.layout, cfg, gt, areas))
    if skipped:
        shown = "\n  ".join(skipped[:10])
        log.warning("%s: skipped %d of %d images with broken maps:\n  %s", dataset.root,
                    len(skipped), len(image_ids), shown)
    return graphs


def cached_graphs(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
                  cache_dir: Path, split: str, progress: bool = True,
                  skip_bad: bool = False) -> Path:
    """Path of the split's cached graphs, building them first when missing."""
    key = cache_key(dataset, image_ids, cfg, skip_bad)
    path = Path(cache_dir) / f"{split}-{key}.pt"
    with file_lock(path.parent / ".locks" / f"{path.stem}.lock"):
        if not path.exists():
            graphs = build_graphs(dataset, image_ids, cfg, desc=f"building {split} graphs",
                                  progress=progress, skip_bad=skip_bad)
            atomic_torch_save({"format": CACHE_FORMAT, "graphs": graphs}, path)
    return path


def load_graphs(path: Path) -> list[Data]:
    """Read graphs written by :func:`cached_graphs` (our own files: full unpickling)."""
    blob = torch.load(path, weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path}: not a graph cache of format {CACHE_FORMAT}; delete it")
    return blob["graphs"]
