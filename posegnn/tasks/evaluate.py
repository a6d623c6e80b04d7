"""``posegnn-eval``: the three groupings side by side on one split."""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from pathlib import Path

from posegnn.checkpoints import load_module
from posegnn.config import EvalConfig
from posegnn.contract import off_image_warning
from posegnn.data.datamodule import PoseGraphDataModule
from posegnn.data.graph import GraphConfig
from posegnn.evaluation.runner import evaluate_groupings, format_table
from posegnn.io import write_metrics
from posegnn.pretrained import shipped_checkpoint

log = logging.getLogger(__name__)


def checkpoint_graph(given: GraphConfig, trained: GraphConfig) -> GraphConfig:
    """The graph settings a checkpoint is evaluated with: its own, which its model reads,
    except ``graph.candidates`` when the command changes them (the peaks of another
    detector's maps). Any other ``graph.*`` the command changes is ignored, with a
    warning that names it."""
    default = GraphConfig()
    ignored = [f"graph.{f.name}" for f in fields(GraphConfig) if f.name != "candidates"
               and getattr(given, f.name) != getattr(default, f.name)
               and getattr(given, f.name) != getattr(trained, f.name)]
    if ignored:
        log.warning("%s: ignored; the checkpoint's graph settings are what its model reads "
                    "(only graph.candidates can change at evaluation)", ", ".join(ignored))
    if given.candidates != default.candidates:
        log.info("candidates from the command line: %s", given.candidates)
        return replace(trained, candidates=given.candidates)
    return trained


def evaluate(cfg: EvalConfig, out_dir: str | Path) -> dict[str, float]:
    """Evaluate gnn (``ckpt_path``, else the model shipped for the data's layout), ae and
    oracle; write ``metrics.json`` and each grouping's COCO results into ``out_dir``."""
    out_dir = Path(out_dir)
    groupings = cfg.grouping
    dm = PoseGraphDataModule(cfg.data, cfg.graph, progress=cfg.progress, splits=(cfg.split,))
    module = None
    if cfg.ckpt_path or "gnn" in groupings.run:
        module = load_module(cfg.ckpt_path or shipped_checkpoint(dm.layout.name),
                             layout=dm.layout.name)
        dm = dm.with_graph(checkpoint_graph(cfg.graph, module.graph_cfg))
    # graphs and refinement share each image's maps, decompressed once
    chunks = dm.evaluation_chunks(cfg.split, 16 * dm.cfg.batch_size)
    metrics = evaluate_groupings(dm.ground_truth(cfg.split), dm.layout, None, groupings,
                                 module=module, prefix=cfg.split, batch_size=dm.cfg.batch_size,
                                 results_dir=out_dir, progress=cfg.progress, chunks=chunks)
    dataset, source = dm.dataset(cfg.split), dm.images(cfg.split)
    warning = off_image_warning(dataset.graphs, source.image, str(source.root))
    if warning:
        log.warning(warning)
    write_metrics(out_dir / "metrics.json", metrics)
    print(f"\n{cfg.split} split ({len(dataset)} images): OKS AP of each grouping\n")
    print(format_table(metrics, cfg.split))
    results = sorted(out_dir.glob(f"{cfg.split}_*_results.json"))
    print(f"\nrun folder: {out_dir}\nmetrics:    {out_dir / 'metrics.json'}\nresults:    "
          + ", ".join(p.name for p in results))
    return metrics
