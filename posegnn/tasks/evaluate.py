"""``posegnn-eval``: the three groupings side by side on one split."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from posegnn.checkpoints import load_module
from posegnn.data.datamodule import PoseGraphDataModule
from posegnn.evaluation.runner import evaluate_groupings, format_table
from posegnn.io import write_metrics

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, out_dir: str | Path) -> dict[str, float]:
    """Evaluate gnn (with ``ckpt_path``), ae and oracle; write ``metrics.json`` and each
    grouping's COCO results into ``out_dir``."""
    out_dir = Path(out_dir)
    graph = OmegaConf.to_container(cfg.graph, resolve=True)
    groupings = OmegaConf.to_container(cfg.grouping, resolve=True)
    module = None
    if cfg.ckpt_path:
        module = load_module(cfg.ckpt_path)
        trained = module.hparams.graph
        if graph != trained:
            log.info("building graphs with the checkpoint's graph settings")
        graph = trained
    elif "gnn" in groupings["run"]:
        log.warning("no ckpt_path: evaluating the ae and oracle groupings only")
        groupings["run"] = [g for g in groupings["run"] if g != "gnn"]
    dm = PoseGraphDataModule(OmegaConf.to_container(cfg.data, resolve=True), graph,
                             progress=cfg.progress)
    dataset = dm.dataset(cfg.split)
    metrics = evaluate_groupings(dm.ground_truth(cfg.split), dm.layout, dataset, groupings,
                                 module=module, prefix=cfg.split, batch_size=dm.cfg.batch_size,
                                 results_dir=out_dir, progress=cfg.progress,
                                 maps=dm.source(cfg.split)[0].load_maps)
    write_metrics(out_dir / "metrics.json", metrics)
    print(f"\n{cfg.split} split ({len(dataset)} images): OKS AP of each grouping\n")
    print(format_table(metrics, cfg.split))
    results = sorted(out_dir.glob(f"{cfg.split}_*_results.json"))
    print(f"\nrun folder: {out_dir}\nmetrics:    {out_dir / 'metrics.json'}\nresults:    "
          + ", ".join(p.name for p in results))
    return metrics
