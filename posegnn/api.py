"""The Python API, for notebooks: what ``posegnn-train`` and ``posegnn-predict`` do, with
the same defaults (read from the config schemas and ``conf/``, never restated here).

Group one image's maps with a checkpoint::

    grouper = load_grouper("outputs/train/<run>/checkpoints/last.ckpt")
    people = grouper(heatmaps, tags, width=640, height=480)  # People: keypoints [P, K, 3]

Build graphs and train::

    dm = datamodule(["data=maps", "data.train=DIR"])    # prepared and set up
    run = train(["trainer.max_epochs=5"])                # a posegnn-train run
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch_geometric.data import Batch

from posegnn.checkpoints import load_module
from posegnn.config import AEGroupingConfig, GNNGroupingConfig
from posegnn.contract import ImageMaps, image_maps
from posegnn.data.datamodule import PoseGraphDataModule
from posegnn.data.graph import AddEdges, GraphConfig, build_vertices
from posegnn.data.maps import PoseMapsDataset
from posegnn.evaluation.runner import candidates_of
from posegnn.grouping import build_grouping
from posegnn.layouts import Layout, get_layout
from posegnn.pretrained import shipped_checkpoint
from posegnn.types import People

__all__ = ["Grouper", "RunResult", "compose", "datamodule", "load_grouper", "read_dataset",
           "settings", "train"]


def compose(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """The config a command line would compose (``train``, ``eval``, ``predict``), with
    Hydra's override syntax: ``compose("train", ["optimizer=sgd", "trainer.max_epochs=5"])``.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from posegnn.cli.common import CONF_DIR  # registers the schemas and resolvers

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def settings(config_name: str = "train", overrides: Sequence[str] = ()):
    """The composed config as its schema dataclasses (``TrainConfig``, ``EvalConfig``,
    ...), every setting checked: what the command line hands its job."""
    from posegnn.cli.common import select_maps_source

    cfg = compose(config_name, overrides)
    select_maps_source(cfg, "posegnn.api")
    return OmegaConf.to_object(cfg)


def read_dataset(path: str | Path, **kwargs) -> PoseMapsDataset:
    """A validated pose-maps dataset folder; ``.load_maps(image_id)`` gives one image's
    maps, ``.gt_keypoints(image_id)`` its people."""
    return PoseMapsDataset(path, **kwargs)


def datamodule(overrides: Sequence[str] = (), progress: bool = False) -> PoseGraphDataModule:
    """The DataModule ``posegnn-train`` would build with these overrides, with its graphs
    built (or read from the cache) and loaded: ``dm.dataset("train")[0]`` is one graph."""
    from posegnn.tasks.train import build_datamodule

    dm = build_datamodule(settings("train", overrides), progress=progress)
    dm.prepare_data()
    dm.setup()
    return dm


@dataclass
class RunResult:
    """What a training run left behind."""

    out_dir: Path
    metrics: dict[str, float]
    best_checkpoint: Path | None
    last_checkpoint: Path | None


def train(overrides: Sequence[str] = (), out_dir: str | Path | None = None) -> RunResult:
    """Run ``posegnn-train`` with these overrides in this process. ``out_dir`` defaults to
    ``<paths.output_dir>/train/<time>``, as on the command line."""
    from posegnn.tasks.train import train as train_job

    cfg = settings("train", overrides)
    if out_dir is None:
        stamp = Path(cfg.paths.output_dir) / "train" / time.strftime("%Y-%m-%d_%H-%M-%S")
        out_dir, n = stamp, 0
        while out_dir.exists():  # two runs within a second get folders of their own
            n += 1
            out_dir = stamp.with_name(f"{stamp.name}_{n}")
    out_dir = Path(out_dir).resolve()  # as Hydra's run folders are
    metrics = train_job(cfg, out_dir, list(overrides))
    ckpts = out_dir / "checkpoints"
    best = sorted(ckpts.glob("best-*.ckpt"))
    last = ckpts / "last.ckpt"
    return RunResult(out_dir, metrics, best[-1] if best else None,
                     last if last.is_file() else None)


class Grouper:
    """Maps of one image in, people out, with a trained checkpoint (``gnn``) or the
    associative-embedding baseline (``ae``, no checkpoint). Graphs are built with the
    checkpoint's own graph settings; grouping settings default to the CLI's."""

    def __init__(self, module=None, layout: Layout | str | None = None,
                 grouping: str = "gnn", **settings) -> None:
        if grouping == "gnn" and module is None:
            raise ValueError("the gnn grouping needs a trained module: use load_grouper(ckpt)")
        if grouping not in ("gnn", "ae"):
            raise ValueError(f"grouping must be 'gnn' or 'ae', got {grouping!r}")
        self.module = module.eval() if module is not None else None
        if layout is None:
            layout = module.hparams.layout if module is not None else "crowdpose14"
        self.layout = get_layout(layout) if isinstance(layout, str) else layout
        self.graph_cfg = module.graph_cfg if module is not None else GraphConfig()
        self.edges = AddEdges(self.layout, self.graph_cfg.edges)
        defaults = asdict(GNNGroupingConfig() if grouping == "gnn" else AEGroupingConfig())
        self.settings = {**defaults, **settings}
        self.name = grouping
        scorer = {"scorer": module.scorer} if grouping == "gnn" else {}
        self.grouping = build_grouping(grouping, layout=self.layout, **self.settings, **scorer)

    def maps(self, heatmaps, tags, width: float | None = None, height: float | None = None,
             map_to_image=None) -> ImageMaps:
        """Check one image's arrays against the layout and wrap them as ``ImageMaps``."""
        if map_to_image is None and (width is None or height is None):
            raise ValueError("give the image's width and height, or map_to_image")
        return image_maps(0, heatmaps, tags, width, height, map_to_image,
                          self.layout.num_joints, self.layout.name, where="maps")

    @torch.no_grad()
    def __call__(self, heatmaps, tags=None, width: float | None = None,
                 height: float | None = None, map_to_image=None) -> People:
        """People of one image: ``keypoints`` [P, K, 3] (x, y in image pixels, score),
        ``scores`` [P], best first."""
        maps = heatmaps if isinstance(heatmaps, ImageMaps) else \
            self.maps(heatmaps, tags, width, height, map_to_image)
        graph = self.edges(build_vertices(maps, self.layout, self.graph_cfg))
        cands = candidates_of(graph)
        if self.name == "ae":
            return self.grouping.group(cands, maps=maps)
        batch = Batch.from_data_list([graph]).to(self.module.device)
        prob, vertex = self.module.probabilities(batch)
        return self.grouping.group(cands, pair_index=graph.pair_index.numpy(),
                                   prob=prob.cpu().numpy(), maps=maps,
                                   vertex_prob=None if vertex is None else vertex.cpu().numpy())

    def __repr__(self) -> str:
        return f"Grouper({self.name}, layout={self.layout.name}, {self.settings})"


def load_grouper(ckpt_path: str | Path | None = None, grouping: str = "gnn",
                 map_location: str = "cpu", **settings) -> Grouper:
    """A :class:`Grouper` from a checkpoint (model in eval mode; without one, gnn takes
    the model shipped for ``layout=``, crowdpose14 by default), with the CLI's grouping
    settings unless ``settings`` (``threshold=``, ``decoder=``, ...) say otherwise.
    ``grouping="ae"`` needs no checkpoint (pass ``layout=`` for coco17)."""
    if ckpt_path is None and grouping == "gnn":
        layout = settings.get("layout") or "crowdpose14"
        ckpt_path = shipped_checkpoint(layout if isinstance(layout, str) else layout.name)
    module = load_module(ckpt_path, map_location) if ckpt_path is not None else None
    return Grouper(module, grouping=grouping, **settings)
