"""Build, key and store the vertex graphs of a dataset split, atomically."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import multiprocessing
import os
import pickle
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from torch_geometric.data import Data
from tqdm.auto import tqdm

from posegnn.data.graph import GraphConfig, build_vertices, pad_tags
from posegnn.data.maps import ANNOTATIONS, MAPS_DIR, DatasetError, ImageMaps, PoseMapsDataset
from posegnn.io import WriteError, atomic_torch_save

log = logging.getLogger(__name__)
# Bump when the stored graph format changes: old caches are then never read.
CACHE_FORMAT = 2
CHUNK = 32  # images per task of a parallel build


class LockTimeout(WriteError):
    """A process waited longer than ``data.lock_timeout_s`` for another to build a cache."""


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


def _build_chunk(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
                 skip_bad: bool) -> tuple[list[Data], list[str]]:
    """Vertex graphs of some images, and why each broken one was skipped."""
    skipped: list[str] = []
    graphs = [g for g, _ in vertex_graphs(dataset, image_ids, cfg,
                                          skipped if skip_bad else None)]
    return graphs, skipped


_worker_dataset: PoseMapsDataset | None = None  # in a build worker: its copy, sent once


def _worker_start(dataset: PoseMapsDataset) -> None:
    global _worker_dataset
    _worker_dataset = dataset
    torch.set_num_threads(1)  # one image at a time per process: threads only contend


def _worker_chunk(image_ids: list[int], cfg: GraphConfig,
                  skip_bad: bool) -> tuple[bytes, list[str]]:
    """A chunk's graphs as the bytes of one packed blob: sent as tensors, each would
    travel through its own shared-memory file (slow, and thousands of them)."""
    graphs, skipped = _build_chunk(_worker_dataset, image_ids, cfg, skip_bad)
    buffer = io.BytesIO()
    torch.save(pack_graphs(pad_tags(graphs)), buffer)  # one tag width to pack; the
    # builder pads again to the widest of all chunks, as it would have padded once
    return buffer.getvalue(), skipped


def _unpack_chunk(part: tuple[bytes, list[str]]) -> tuple[list[Data], list[str]]:
    blob, skipped = part
    return unpack_graphs(torch.load(io.BytesIO(blob), weights_only=True), Path("<worker>")), \
        skipped


def build_graphs(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
                 desc: str = "graphs", progress: bool = True,
                 skip_bad: bool = False, workers: int = 1,
                 beat: Callable[[], None] | None = None) -> list[Data]:
    """Vertex graphs of the given images, with ground truth where the dataset has it (and
    tags of one width: :func:`~posegnn.data.graph.pad_tags`).

    ``workers`` > 1 builds chunks of images in that many processes; the graphs and their
    order are those of one process; ``beat`` is called after each chunk. A broken maps
    file raises :class:`DatasetError`, unless ``skip_bad``: then the image is left out
    and a warning counts what was skipped and why.
    """
    dataset.check_graph_settings(cfg)
    chunks = [image_ids[i:i + CHUNK] for i in range(0, len(image_ids), CHUNK)]
    bar = tqdm(total=len(image_ids), desc=desc, disable=not progress, unit="img")
    graphs, skipped = [], []
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(chunks) > 1:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(
                min(workers, len(chunks)), initializer=_worker_start, initargs=(dataset,)))
            parts = map(_unpack_chunk, pool.imap(
                partial(_worker_chunk, cfg=cfg, skip_bad=skip_bad), chunks))
        else:
            parts = (_build_chunk(dataset, chunk, cfg, skip_bad) for chunk in chunks)
        for chunk, (built, why) in zip(chunks, parts, strict=True):
            graphs += built
            skipped += why
            bar.update(len(chunk))
            if beat is not None:
                beat()
    bar.close()
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
                  skip_bad: bool = False, rebuild: bool = False, workers: int = 1,
                  lock_timeout_s: float | None = None) -> Path:
    """Path of the split's cached graphs, building them first when missing (or when
    ``rebuild``). Processes that need the same cache at once (the ranks of a ddp job,
    parallel sweep jobs or evaluations) build it once: the others wait for the builder,
    saying so in one line, and give up when it has shown no progress for
    ``lock_timeout_s`` (None: wait as long as it lives)."""
    path = cache_path(dataset, image_ids, cfg, cache_dir, split, skip_bad)
    lock = path.parent / ".locks" / f"{path.stem}.lock"
    with waiting_lock(lock, f"the {split} graphs ({path.name})", lock_timeout_s):
        if rebuild or not path.exists():
            graphs = build_graphs(dataset, image_ids, cfg, desc=f"building {split} graphs",
                                  progress=progress, skip_bad=skip_bad, workers=workers,
                                  beat=lambda: os.utime(lock))
            atomic_torch_save(pack_graphs(graphs), path)
    return path


@contextlib.contextmanager
def waiting_lock(path: Path, what: str, timeout_s: float | None = None,
                 poll_s: float = 0.2) -> Iterator[None]:
    """:func:`posegnn.io.file_lock`, saying in one line whom it waits for, and giving up
    with :class:`LockTimeout` when the holder has not touched the lock file (its sign of
    progress) for ``timeout_s``. The kernel frees the lock of a process that dies, so a
    crashed builder never blocks the others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            log.info("waiting for %s: %s builds them", what, holder)
            start = time.time()
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    idle = time.time() - max(os.stat(path).st_mtime, start)
                    if timeout_s is not None and idle > timeout_s:
                        raise LockTimeout(f"{path}: waited for {what}, which {holder} builds, "
                                          f"and saw no progress for {timeout_s:g} s; "
                                          "data.lock_timeout_s sets the limit") from None
                    time.sleep(poll_s)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}")
            f.flush()
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def load_cached_graphs(dataset: PoseMapsDataset, image_ids: list[int], cfg: GraphConfig,
                       cache_dir: Path, split: str, progress: bool = True,
                       skip_bad: bool = False, **build) -> list[Data]:
    """The split's graphs from the cache; a cache file that cannot be trusted or read is
    reported and rebuilt. ``build``: ``workers`` and ``lock_timeout_s`` of
    :func:`cached_graphs`."""
    args = (dataset, image_ids, cfg, cache_dir, split, progress, skip_bad)
    path = cached_graphs(*args, **build)
    try:
        return load_graphs(path)
    except CacheError as err:
        log.warning("%s; rebuilding it", err)
        return load_graphs(cached_graphs(*args, rebuild=True, **build))


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
