"""The LightningDataModule: datasets in, cached graphs out, PyG loaders on top."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from posegnn.choices import SettingError, one_of
from posegnn.data.cache import (
    cache_path,
    cached_graphs,
    load_cached_graphs,
    pack_graphs,
    vertex_graphs,
)
from posegnn.data.graph import AddEdges, GraphConfig, GraphList, pad_tags
from posegnn.data.maps import MAX_MAP_MIB, DatasetError, ImageMaps, PoseMapsDataset
from posegnn.data.stats import graph_statistics
from posegnn.data.synthetic import DetectorNoise, SyntheticConfig, generate_dataset
from posegnn.data.synthetic.detector import TAG_DIM, TRAINING_RANGES
from posegnn.data.synthetic.scene import CROWDS
from posegnn.io import atomic_torch_save, file_lock
from posegnn.layouts import LAYOUTS

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
DATA_KINDS = ("synthetic", "poses", "maps")


@dataclass
class SyntheticSplits:
    """The synthetic world of ``data=synthetic``: one generated dataset per split."""

    num_train: int = 2000  # a poses file gives what remains after val and test
    num_val: int = 60
    num_test: int = 500
    seed: int = SyntheticConfig.seed
    crowd: str = SyntheticConfig.crowd
    layout: str = SyntheticConfig.layout
    noise: DetectorNoise = field(default_factory=DetectorNoise)
    # the training split's detector varies per image within these ranges (see
    # SyntheticConfig.noise_ranges); validation and test keep ``noise``.
    # vary_detector=false trains on ``noise`` alone.
    vary_detector: bool = True
    noise_ranges: dict[str, list[float]] = field(
        default_factory=lambda: {k: list(v) for k, v in TRAINING_RANGES.items()})
    # share of the training split's synthetic people seen only down to a line across the
    # body (SyntheticConfig.hidden_below); validation, test and pose files keep 0
    hidden_below: float = 0.5

    def __post_init__(self) -> None:
        one_of("data.synthetic.crowd", self.crowd, CROWDS)
        one_of("data.synthetic.layout", self.layout, LAYOUTS)


@dataclass
class DataConfig:
    """Where graphs come from (``kind``), where they are cached, and how they are loaded."""

    kind: str = "synthetic"  # synthetic | poses (synthetic maps over real poses) | maps
    # draw the people from this CrowdPose/COCO keypoint file, split by image, instead of
    # generating them; kind=poses (data=crowdpose_poses) requires it
    poses: str | None = None
    root: str = "outputs/data"  # generated datasets live here
    cache_dir: str = "outputs/cache"
    synthetic: SyntheticSplits = field(default_factory=SyntheticSplits)
    train: str | None = None  # kind=maps: dataset directories
    val: str | None = None
    test: str | None = None
    val_fraction: float = 0.1  # of train, when there is no val dataset
    split_seed: int = 0
    shuffle_seed: int = 0  # training order is a function of (shuffle_seed, epoch)
    sigmas: list[float] | None = None  # for a layout other than crowdpose14 / coco17
    skip_bad_maps: bool = False  # leave out images whose maps are broken (logged), or stop
    skip_bad_annotations: bool = False  # the same for images with broken annotations
    max_map_mib: float = MAX_MAP_MIB  # largest accepted maps of one image, as float32
    batch_size: int = 8
    num_workers: int = 0
    build_workers: int = 1  # processes that build a split's graph cache
    # a process waiting for another to build the same cache gives up when the builder
    # shows no progress for this long (null: waits as long as the builder lives)
    lock_timeout_s: float | None = 600.0
    # the training split's edges are built on first use and kept for the later epochs
    # (about 200 MiB per 1,000 default graphs, in each loader worker that builds its
    # own); false rebuilds them for every batch
    keep_train_edges: bool = True

    def __post_init__(self) -> None:
        one_of("data.kind", self.kind, DATA_KINDS)


class EpochShuffle(Sampler[int]):
    """Shuffles by (seed, epoch) alone, so a resumed run sees the same order as an
    uninterrupted one (Lightning calls ``set_epoch`` each epoch). ``skip`` leaves out the
    first samples of the next pass: those a run stopped mid-epoch had already trained on."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch, self.skip = size, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=gen).tolist()[self.skip:]
        self.skip = 0
        return iter(order)

    def __len__(self) -> int:
        return self.size


class KeptEdges(GraphList):
    """A :class:`GraphList` that builds each graph's edges on its first access and keeps
    them: the same graphs, edges derived once instead of once per epoch. The attributes
    of a pair's two directions are kept as views of ``edge_attr`` (their concatenation),
    not twice."""

    def __init__(self, graphs: list[Data], transform: AddEdges) -> None:
        super().__init__(graphs, transform)
        self.kept: list[Data | None] = [None] * len(graphs)

    def __getitem__(self, i: int) -> Data:
        data = self.kept[i]
        if data is None:
            data = super().__getitem__(i)
            m = data.pair_index.shape[1]
            data.pair_attr, data.pair_attr_rev = data.edge_attr[:m], data.edge_attr[m:]
            self.kept[i] = data
        return data


class ResumableLoader(DataLoader):
    """The training loader, with its place in the epoch saved in Lightning checkpoints:
    a run stopped mid-epoch (preemption) resumes with the batches it had not seen, and so
    ends exactly where an uninterrupted run does. ``progress`` gives the batches trained
    so far in the current epoch."""

    def __init__(self, *args, progress: Callable[[], int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        return {"samples_done": self.progress() * self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if hasattr(self.sampler, "skip"):
            self.sampler.skip = state["samples_done"]


def _split_ids(ids: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split image ids into (kept, held out) deterministically."""
    order = np.random.default_rng(seed).permutation(len(ids))
    n_out = max(1, round(fraction * len(ids))) if len(ids) > 1 else 0
    held = sorted(ids[i] for i in order[:n_out])
    held_set = set(held)
    return [i for i in ids if i not in held_set], held


class PoseGraphDataModule(L.LightningDataModule):
    """Graphs of keypoint candidates for training and evaluating edge classifiers.

    ``data.kind=synthetic`` generates train/val/test datasets under ``data.root`` when
    missing (``kind=poses``: over the people of ``data.poses``); ``data.kind=maps`` reads
    the ``data.train/val/test`` directories (val split off train when absent).
    ``prepare_data`` builds and caches graphs; ``setup`` loads them and computes the
    training split's feature statistics. ``splits`` limits it to the splits a job uses
    (an evaluation: its one split), so that nothing else is generated or opened.
    """

    def __init__(self, data: DataConfig, graph: GraphConfig, progress: bool = True,
                 splits: tuple[str, ...] = SPLITS) -> None:
        super().__init__()
        self.cfg, self.graph_cfg = data, graph
        self.progress = progress
        self.splits = tuple(splits)
        self._sources: dict[str, tuple[PoseMapsDataset, list[int]]] = {}
        self.graphs: dict[str, list[Data]] = {}
        self.feature_mean: torch.Tensor | None = None
        self.feature_std: torch.Tensor | None = None
        self._train_kept: KeptEdges | None = None

    # -- where each split comes from ------------------------------------------------------
    def _synthetic_dir(self, split: str) -> Path:
        syn = self.cfg.synthetic
        n = {"train": syn.num_train, "val": syn.num_val, "test": syn.num_test}[split]
        offset = SPLITS.index(split)
        spec = SyntheticConfig(num_images=n, seed=syn.seed * 1000 + offset, crowd=syn.crowd,
                               layout=syn.layout, poses=self.cfg.poses, noise=syn.noise,
                               noise_ranges=syn.noise_ranges
                               if split == "train" and syn.vary_detector else {},
                               hidden_below=syn.hidden_below
                               if split == "train" and not self.cfg.poses else 0.0)
        dims = spec.noise_ranges.get(TAG_DIM, [0, 0])
        if dims[0] != dims[1] and not self.graph_cfg.dimension_free:
            raise SettingError(f"data.synthetic.noise_ranges.{TAG_DIM}={list(dims)} varies the "
                               "tag dimension, but the graph's widths depend on it "
                               "(graph=raw_tags): use the default graph settings")
        if self.cfg.kind == "poses" and not self.cfg.poses:
            raise DatasetError("data=crowdpose_poses draws its people from a CrowdPose or COCO "
                               "keypoint file: add data.poses=/path/to/crowdpose_val.json")
        ids = self._pose_file_split(split) if self.cfg.poses else None
        if ids is not None:
            spec.seed = syn.seed  # one detector world; the images differ per split
        named = asdict(spec)
        if not spec.hidden_below:  # worlds written before the setting keep their names
            del named["hidden_below"]
        key = hashlib.sha256(json.dumps([named, ids], sort_keys=True, default=str)
                             .encode()).hexdigest()[:12]
        out = Path(self.cfg.root) / f"synthetic-{split}-{key}"
        with file_lock(out.parent / ".locks" / f"{out.name}.lock"):
            if not out.exists():
                log.info("generating the synthetic %s split in %s", split, out)
                generate_dataset(out, spec, progress=self.progress, image_ids=ids)
        return out

    def _pose_file_split(self, split: str) -> list[int]:
        """Image ids of a split of the poses file: test first, then val, then train."""
        syn = self.cfg.synthetic
        if not Path(self.cfg.poses).is_file():
            raise DatasetError(f"data.poses={self.cfg.poses}: no such file (give a CrowdPose "
                               "or COCO keypoint annotation file)")
        with open(self.cfg.poses, encoding="utf-8") as f:
            ids = [int(img["id"]) for img in json.load(f)["images"]]
        order = [ids[i] for i in np.random.default_rng(self.cfg.split_seed).permutation(len(ids))]
        bounds = {"test": (0, syn.num_test), "val": (syn.num_test, syn.num_test + syn.num_val),
                  "train": (syn.num_test + syn.num_val,
                            syn.num_test + syn.num_val + syn.num_train)}[split]
        chosen = order[bounds[0]:bounds[1]]
        if not chosen:
            raise ValueError(f"{self.cfg.poses}: {len(ids)} images leave none for the {split} "
                             "split")
        return sorted(chosen)

    def source(self, split: str) -> tuple[PoseMapsDataset, list[int]]:
        """The dataset and image ids of a split."""
        if split in self._sources:
            return self._sources[split]
        if self.cfg.kind in ("synthetic", "poses"):
            ds = self._open(self._synthetic_dir(split))
            self._sources[split] = (ds, list(ds.image_ids))
        else:  # maps
            self._sources[split] = self._maps_source(split)
        ds = self._sources[split][0]
        if split != "train" and ds.heat_floor is not None:
            log.warning("%s: a training dump (heat below %g stored as 0) as the %s split: "
                        "refinement and the ae baseline read the pixels it dropped; "
                        "validate and test on full maps", ds.root, ds.heat_floor, split)
        return self._sources[split]

    def _maps_source(self, split: str) -> tuple[PoseMapsDataset, list[int]]:
        path = getattr(self.cfg, split)
        if split == "val" and path is None and self.cfg.train is not None:
            ds = self._open(self.cfg.train)
            return ds, _split_ids(ds.image_ids, self.cfg.val_fraction, self.cfg.split_seed)[1]
        if path is None:
            raise ValueError(f"data.{split} is not set: give a pose-maps dataset directory "
                             f"(data=maps data.{split}=DIR)")
        ds = self._open(path)
        ids = list(ds.image_ids)
        if split == "train" and self.cfg.val is None:
            ids = _split_ids(ids, self.cfg.val_fraction, self.cfg.split_seed)[0]
        return ds, ids

    def _open(self, path: str | Path) -> PoseMapsDataset:
        return PoseMapsDataset(path, sigmas=self.cfg.sigmas, max_map_mib=self.cfg.max_map_mib,
                               skip_bad_annotations=self.cfg.skip_bad_annotations)

    # -- Lightning hooks ------------------------------------------------------------------
    def _cache_args(self, split: str) -> tuple:
        ds, ids = self.source(split)
        return ds, ids, self.graph_cfg, Path(self.cfg.cache_dir), split, self.progress, \
            self.cfg.skip_bad_maps

    def available_splits(self) -> tuple[str, ...]:
        """The splits of ``splits`` this configuration has data for."""
        if self.cfg.kind == "maps":
            return tuple(s for s in self.splits if getattr(self.cfg, s) is not None
                         or (s == "val" and self.cfg.train is not None))
        return self.splits

    def with_graph(self, graph: GraphConfig) -> PoseGraphDataModule:
        """The same data (the splits already opened included) with other graph settings,
        e.g. those a checkpoint was trained on."""
        other = PoseGraphDataModule(self.cfg, graph, self.progress, self.splits)
        other._sources = self._sources
        return other

    def _build_args(self) -> dict:
        return {"workers": self.cfg.build_workers, "lock_timeout_s": self.cfg.lock_timeout_s}

    def prepare_data(self) -> None:
        for split in self.available_splits():
            cached_graphs(*self._cache_args(split), **self._build_args())

    def _load(self, split: str) -> list[Data]:
        if split not in self.graphs:
            self.graphs[split] = load_cached_graphs(*self._cache_args(split),
                                                    **self._build_args())
        return self.graphs[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in wanted.get(stage, SPLITS):
            if split in self.available_splits():
                self._load(split)
        if "train" in self.graphs and self.feature_mean is None:
            x = torch.cat([g.x for g in self.graphs["train"]])
            if len(x) == 0:
                raise ValueError("the training split has no keypoint candidates at all; "
                                 "lower graph.candidates.threshold")
            self.feature_mean, self.feature_std = x.mean(0), x.std(0).clamp(min=1e-6)

    @property
    def layout(self):
        """The keypoint layout, from a split already opened, else from the first of the
        job's splits."""
        opened = next(iter(self._sources.values()), None)
        return (opened or self.source(self.available_splits()[0]))[0].layout

    @property
    def edges(self) -> AddEdges:
        return AddEdges(self.layout, self.graph_cfg.edges)

    def dims(self) -> tuple[int, int]:
        """(vertex feature width, edge attribute width) of the built graphs."""
        split = next(iter(self.graphs))
        sample = self.edges(self.graphs[split][0])
        return sample.x.shape[1], sample.edge_attr.shape[1]

    def dataset(self, split: str, limit: int | None = None) -> GraphList:
        """The split's graphs (the first ``limit``), with edges added on access."""
        return GraphList(self._load(split)[:limit], self.edges)

    def images(self, split: str) -> PoseMapsDataset:
        """The pose-maps dataset a split's images come from."""
        return self.source(split)[0]

    def maps_reader(self, split: str) -> Callable[[int], ImageMaps]:
        """The maps of one image of the split, by image id (what refinement reads)."""
        return self.images(split).load_maps

    def _loader(self, split: str | GraphList, loader: type[DataLoader] = DataLoader,
                **kwargs) -> DataLoader:
        dataset = self.dataset(split) if isinstance(split, str) else split
        return loader(dataset, batch_size=self.cfg.batch_size,
                      num_workers=self.cfg.num_workers,
                      persistent_workers=self.cfg.num_workers > 0, **kwargs)

    def _batches_done(self) -> int:
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataset(self) -> GraphList:
        """The training split as the training loader reads it: with ``keep_train_edges``
        one :class:`KeptEdges` for the datamodule's life, so epochs after the first reuse
        the edges."""
        if not self.cfg.keep_train_edges:
            return self.dataset("train")
        if self._train_kept is None:
            self._train_kept = KeptEdges(self._load("train"), self.edges)
        return self._train_kept

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()
        shuffle = EpochShuffle(len(dataset), self.cfg.shuffle_seed)
        return self._loader(dataset, ResumableLoader, sampler=shuffle,
                            progress=self._batches_done)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def ground_truth(self, split: str, limit: int | None = None) -> dict:
        """COCO ground truth of the images the split's graphs (the first ``limit``) were
        built from (every image of the split unless ``skip_bad_maps`` leaves some out)."""
        if split in self.graphs or self.cfg.skip_bad_maps:
            ids = [int(g.image_id) for g in self._load(split)[:limit]]
        else:
            ids = self.source(split)[1][:limit]
        return self.images(split).coco_dict(ids)

    def evaluation_chunks(self, split: str, size: int
                          ) -> Iterator[tuple[GraphList, Callable[[int], ImageMaps]]]:
        """The split's graphs in consecutive chunks of ``size``, each with a reader of its
        images' maps. Cached graphs come with :meth:`maps_reader`; without a cache the
        graphs are built chunk by chunk from maps decompressed once and kept for the
        chunk's refinement, then cached (with ``skip_bad_maps``: built first, as before)."""
        ds, ids = self.source(split)
        path = cache_path(ds, ids, self.graph_cfg, Path(self.cfg.cache_dir), split)
        if split in self.graphs or self.cfg.skip_bad_maps or path.exists():
            graphs = self._load(split)
            for start in range(0, len(graphs), size):
                yield GraphList(graphs[start:start + size], self.edges), self.maps_reader(split)
            return
        built, stream = [], vertex_graphs(ds, ids, self.graph_cfg)
        while chunk := list(islice(stream, size)):
            maps = {int(m.image_id): m for _, m in chunk}
            graphs = pad_tags([g for g, _ in chunk])
            built += graphs
            yield GraphList(graphs, self.edges), maps.__getitem__
        self.graphs[split] = pad_tags(built)
        atomic_torch_save(pack_graphs(self.graphs[split]), path)

    def statistics(self, split: str = "train") -> dict[str, float]:
        """Candidates and pairs per image, label balance and ground-truth coverage (on
        the training split, this pass builds the edges the training loader then keeps)."""
        dataset = self.train_dataset() if split == "train" else self.dataset(split)
        return graph_statistics(dataset, self.source(split)[0])
