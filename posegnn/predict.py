"""``posegnn-predict``: people for every image of a dataset, as COCO results."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from posegnn.checkpoints import load_module
from posegnn.data.cache import build_graphs
from posegnn.data.datamodule import GraphList
from posegnn.data.graph import AddEdges, GraphConfig
from posegnn.data.maps import PoseMapsDataset
from posegnn.evaluation.runner import edge_probabilities, group_images
from posegnn.io import write_json


def predict(cfg: DictConfig) -> int:
    """Write the COCO results of ``cfg.grouping`` for ``cfg.input`` to ``cfg.out``;
    returns the number of people found. Graph settings come from the checkpoint."""
    module = load_module(cfg.ckpt_path) if cfg.ckpt_path else None
    graph = GraphConfig(**module.hparams.graph) if module is not None else GraphConfig()
    ds = PoseMapsDataset(cfg.input, require_annotations=False)
    graphs = build_graphs(ds, ds.image_ids, graph, desc="building graphs", progress=cfg.progress)
    dataset = GraphList(graphs, AddEdges(ds.layout, graph.edges))
    probs = (edge_probabilities(module, dataset, cfg.batch_size, cfg.progress)
             if cfg.grouping == "gnn" else None)
    settings = OmegaConf.to_container(cfg.groupings, resolve=True).get(cfg.grouping) or {}
    results, _ = group_images(cfg.grouping, settings, ds.layout, graphs, probs, cfg.progress)
    write_json(cfg.out, results)
    return len(results)
