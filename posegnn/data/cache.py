"""Build, key and store the vertex graphs of a dataset split, atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from torch_geometric.data import Data
from tqdm.auto import tqdm

from posegnn.data.graph import GraphConfig, build_vertices, pad_tags
from posegnn.data.maps import ANNOTATIONS, MAPS_DIR, DatasetError, ImageMaps, PoseMapsDataset
from posegnn.io import atomic_torch_save, file_lock

log = logging.getLogger(__name__)
# Bump when the stored graph format changes: old caches are then never read.
CACHE_FORMAT = 2


class CacheError(ValueError):
    """A cache file is foreign, planted, corrupted or of another format."""


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
    settings = asdict(cfg)
    settings.pop("edges")
    payload = json.dumps({"format": CACHE_FORMAT, "data": dataset_fingerprint(dataset.root),
                          "images": image_ids, "graph": settings, "skip_bad": skip_bad},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def vertex_graphs(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
                  skipped: list[str] | None = None) -> Iterator[tuple[Data, ImageMaps]]:
    """Each image's vertex graph, with ground truth where the dataset has it, and the maps
    it was built from. A broken maps file raises :class:`DatasetError`, unless
    ``skipped`` is given: then the image is left out and the error appended to it."""
    for image_id in image_ids:
        gt = areas = None
        if dataset.has_annotations:
            gt, areas = dataset.gt_keypoints(image_id)
        try:
            maps = dataset.load_maps(image_id)
        except DatasetError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
            continue
        yield build_vertices(maps, dataset.layout, cfg, gt, areas), maps


def build_graphs(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
                 desc: str = "graphs", progress: bool = True,
                 skip_bad: bool = False) -> list[Data]:
    """Vertex graphs of the given images (:func:`vertex_graphs`), with tags of one width
    (:func:`~posegnn.data.graph.pad_tags`). With ``skip_bad`` an image with broken maps is
    left out, and a warning counts what was skipped and why."""
    skipped: list[str] | None = [] if skip_bad else None
    graphs = [g for g, _ in tqdm(vertex_graphs(dataset, image_ids, cfg, skipped), desc=desc,
                                 total=len(image_ids), disable=not progress, unit="img")]
    if skipped:
        shown = "\n  ".join(skipped[:10])
        log.warning("%s: skipped %d of %d images with broken maps:\n  %s", dataset.root,
                    len(skipped), len(image_ids), shown)
    return pad_tags(graphs)


def cache_path(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
               cache_dir: Path, split: str, skip_bad: bool = False) -> Path:
    """Where the split's graphs are cached (:func:`cache_key`)."""
    return Path(cache_dir) / f"{split}-{cache_key(dataset, image_ids, cfg, skip_bad)}.pt"


def cached_graphs(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
                  cache_dir: Path, split: str, progress: bool = True,
                  skip_bad: bool = False, rebuild: bool = False) -> Path:
    """Path of the split's cached graphs, building them first when missing (or when
    ``rebuild``)."""
    path = cache_path(dataset, image_ids, cfg, cache_dir, split, skip_bad)
    with file_lock(path.parent / ".locks" / f"{path.stem}.lock"):
        if rebuild or not path.exists():
            graphs = build_graphs(dataset, image_ids, cfg, desc=f"building {split} graphs",
                                  progress=progress, skip_bad=skip_bad)
            atomic_torch_save(pack_graphs(graphs), path)
    return path


def load_cached_graphs(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
                       cache_dir: Path, split: str, progress: bool = True,
                       skip_bad: bool = False) -> list[Data]:
    """The split's graphs from the cache; a cache file that cannot be trusted or read is
    reported and rebuilt."""
    args = (dataset, image_ids, cfg, cache_dir, split, progress, skip_bad)
    path = cached_graphs(*args)
    try:
        return load_graphs(path)
    except CacheError as err:
        log.warning("%s; rebuilding it", err)
        return load_graphs(cached_graphs(*args, rebuild=True))


def pack_graphs(graphs: list[Data]) -> dict:
    """Graphs as plain tensors, one concatenated tensor per field, so that a cache loads
    with ``weights_only=True`` and nothing in it can run code."""
    keys = sorted({k for g in graphs for k in g.keys()} - {"num_nodes"})
    fields = {}
    for key in keys:
        values = [g[key] for g in graphs]
        if not all(isinstance(v, torch.Tensor) and v.dim() > 0 for v in values):
            raise TypeError(f"graph field {key!r} is not a tensor in every graph")
        fields[key] = {"data": torch.cat(values), "sizes": torch.tensor([len(v) for v in values])}
    return {"format": CACHE_FORMAT, "num_graphs": len(graphs),
            "num_nodes": torch.tensor([g.num_nodes for g in graphs], dtype=torch.long),
            "fields": fields}


def unpack_graphs(blob: dict, path: Path) -> list[Data]:
    """Inverse of :func:`pack_graphs`, checking every size against the stored data."""
    if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise CacheError(f"{path}: not a graph cache of format {CACHE_FORMAT} (found {found})")
    try:
        n, num_nodes, fields = blob["num_graphs"], blob["num_nodes"], blob["fields"]
        if len(num_nodes) != n:
            raise ValueError("node counts do not match the number of graphs")
        columns = {}
        for key, column in fields.items():
            sizes = column["sizes"].tolist()
            if len(sizes) != n or sum(sizes) != len(column["data"]):
                raise ValueError(f"field {key!r} does not split into {n} graphs")
            columns[key] = column["data"].split(sizes)
        return [Data(num_nodes=int(num_nodes[i]), **{k: v[i] for k, v in columns.items()})
                for i in range(n)]
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise CacheError(f"{path}: corrupted graph cache ({err})") from None


def load_graphs(path: Path) -> list[Data]:
    """Read graphs written by :func:`cached_graphs`. Loading is weights-only: a planted
    pickle that would run code, a truncated or foreign file raise :class:`CacheError`."""
    try:
        blob = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError:
        raise CacheError(f"{path}: refused as a graph cache: it holds pickled objects other "
                         "than tensors and numbers, which could run code") from None
    except Exception as err:  # RuntimeError (not a zip), EOFError (truncated), ...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CacheError(f"{path}: unreadable graph cache ({reason})") from None
    return unpack_graphs(blob, path)
