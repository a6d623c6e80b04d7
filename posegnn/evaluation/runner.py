"""Run the groupings over a split of graphs and evaluate them side by side."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from posegnn.evaluation.coco import evaluate_keypoints, people_to_coco_results
from posegnn.grouping import build_grouping
from posegnn.layouts import Layout
from posegnn.types import Candidates


def candidates_of(graph: Data) -> Candidates:
    """The candidates of one graph as the groupings take them."""
    return Candidates(pos=graph.pos.numpy(), joint=graph.joint.numpy(),
                      score=graph.score.numpy(), tag=graph.tag.numpy())


@torch.no_grad()
def edge_probabilities(module, dataset: Sequence[Data], batch_size: int = 8,
                       progress: bool = False) -> list[np.ndarray]:
    """Same-person probability of every scored pair, one array per graph, in pair order."""
    module.eval()
    out: list[np.ndarray] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="edge probabilities", disable=not progress, leave=False):
        batch = batch.to(module.device)
        prob = module.edge_probabilities(batch).cpu()
        owner = batch.batch[batch.pair_index[0]].cpu()
        counts = torch.bincount(owner, minlength=batch.num_graphs).tolist()
        out.extend(p.numpy() for p in torch.split(prob, counts))
    return out


def group_images(name: str, settings: dict, layout: Layout, dataset: Sequence[Data],
                 probs: list[np.ndarray] | None = None, progress: bool = False
                 ) -> tuple[list[dict], float]:
    """COCO results of one grouping over every graph, and its seconds per image."""
    grouping = build_grouping(name, layout=layout, **settings)
    results: list[dict] = []
    elapsed = 0.0
    for i in tqdm(range(len(dataset)), desc=f"grouping {name}", disable=not progress,
                  leave=False):
        g = dataset[i]
        kwargs = {"person": g.person.numpy()} if name == "oracle" else {}
        if name == "gnn":
            kwargs = {"pair_index": g.pair_index.numpy(), "prob": probs[i]}
        start = time.perf_counter()
        people = grouping.group(candidates_of(g), **kwargs)
        elapsed += time.perf_counter() - start
        results.extend(people_to_coco_results(int(g.image_id), people))
    return results, elapsed / max(len(dataset), 1)


def edge_accuracy(dataset: Sequence[Data], probs: list[np.ndarray],
                  threshold: float = 0.5) -> float:
    """Share of scored pairs whose thresholded probability equals the label."""
    y = np.concatenate([dataset[i].y.numpy() for i in range(len(dataset))] or [np.zeros(0)])
    p = np.concatenate(probs or [np.zeros(0)])
    return float(((p >= threshold) == (y > 0.5)).mean()) if len(y) else float("nan")


def evaluate_groupings(gt: dict, layout: Layout, dataset: Sequence[Data],
                       grouping_cfg: dict, module=None, prefix: str = "test",
                       batch_size: int = 8, results_dir: Path | None = None,
                       progress: bool = False) -> dict[str, float]:
    """Flat metrics ``{prefix}/{grouping}/{AP,...}`` of every grouping in
    ``grouping_cfg['run']`` (gnn only with a module), writing each one's COCO results
    to ``results_dir`` when given."""
    names = [n for n in grouping_cfg["run"] if n != "gnn" or module is not None]
    probs = None
    metrics: dict[str, float] = {}
    if "gnn" in names:
        probs = edge_probabilities(module, dataset, batch_size, progress)
        metrics[f"{prefix}/gnn/edge_acc"] = edge_accuracy(dataset, probs)
    for name in names:
        settings = dict(grouping_cfg.get(name) or {})
        results, sec = group_images(name, settings, layout, dataset, probs, progress)
        scores = evaluate_keypoints(gt, results, layout.sigma_array,
                                    max_dets=grouping_cfg.get("max_dets", 20))
        metrics.update({f"{prefix}/{name}/{k}": v for k, v in scores.items()})
        metrics[f"{prefix}/{name}/sec_per_image"] = sec
        if results_dir is not None:
            results_dir.mkdir(parents=True, exist_ok=True)
            (results_dir / f"{prefix}_{name}_results.json").write_text(json.dumps(results))
    return metrics


TABLE_KEYS = ("AP", "AP50", "AP75", "AR", "AP_easy", "AP_medium", "AP_hard")


def format_table(metrics: dict[str, float], prefix: str = "test") -> str:
    """The groupings side by side, one row each, as a markdown table."""
    names = [n for n in ("gnn", "ae", "oracle") if f"{prefix}/{n}/AP" in metrics]
    header = "| grouping | " + " | ".join(TABLE_KEYS) + " | edge acc |"
    lines = [header, "|" + "---|" * (len(TABLE_KEYS) + 2)]
    for n in names:
        cells = [metrics.get(f"{prefix}/{n}/{k}") for k in TABLE_KEYS]
        acc = metrics.get(f"{prefix}/{n}/edge_acc")
        row = [f"{c:.3f}" if c is not None else "-" for c in [*cells, acc]]
        lines.append("| " + " | ".join([n, *row]) + " |")
    return "\n".join(lines)
