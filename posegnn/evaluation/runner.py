"""Run the groupings over a split of graphs and evaluate them side by side."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from posegnn.data.graph import GraphList
from posegnn.data.maps import ImageMaps
from posegnn.evaluation.coco import best_oks, evaluate_keypoints, people_to_coco_results
from posegnn.grouping import build_grouping
from posegnn.grouping.person_features import person_features
from posegnn.io import write_json
from posegnn.layouts import Layout
from posegnn.types import Candidates

# the maps of one image, by image id (e.g. PoseMapsDataset.load_maps)
MapsReader = Callable[[int], ImageMaps]


def candidates_of(graph: Data) -> Candidates:
    """The candidates of one graph as the groupings take them."""
    return Candidates(pos=graph.pos.numpy(), joint=graph.joint.numpy(),
                      score=graph.score.numpy(), tag=graph.tag.numpy())


@dataclass
class EdgeScores:
    """The scored pairs of one graph: indices [2, M], probabilities [M], labels [M], the
    graph's share of the seconds spent building pairs and running the model and, from a
    model with a vertex head, each candidate's probability [N] of belonging to a person."""

    pair_index: np.ndarray
    prob: np.ndarray
    y: np.ndarray
    seconds: float = 0.0
    vertex_prob: np.ndarray | None = None


def edge_probabilities(module, dataset: Sequence[Data], batch_size: int = 8,
                       progress: bool = False) -> list[EdgeScores]:
    """Same-person probability of every scored pair, one entry per graph. The dataset
    builds each graph's pairs on access, so the time per batch counts pair building,
    edge attributes, batching and the model; each graph gets an equal share."""
    module.eval()
    out: list[EdgeScores] = []
    loader = iter(DataLoader(dataset, batch_size=batch_size, shuffle=False))
    with torch.inference_mode(), tqdm(total=len(dataset), desc="edge probabilities",
                                      disable=not progress, leave=False) as bar:
        while True:
            start = time.perf_counter()
            batch = next(loader, None)
            if batch is None:
                break
            prob, vertex = module.probabilities(batch.to(module.device))
            prob, batch = prob.cpu(), batch.cpu()
            owner = batch.batch[batch.pair_index[0]]
            counts = torch.bincount(owner, minlength=batch.num_graphs).tolist()
            local = batch.pair_index - batch.ptr[owner]  # back to each graph's own vertex ids
            share = (time.perf_counter() - start) / batch.num_graphs
            sizes = batch.ptr.diff().tolist()
            vertex = ([None] * batch.num_graphs if vertex is None
                      else [v.numpy() for v in torch.split(vertex.cpu(), sizes)])
            for pairs, p, y, v in zip(torch.split(local, counts, dim=1),
                                      torch.split(prob, counts), torch.split(batch.y, counts),
                                      vertex, strict=True):
                out.append(EdgeScores(pairs.numpy(), p.numpy(), y.numpy(), share, v))
            bar.update(batch.num_graphs)
    return out


def group_images(name: str, settings, layout: Layout, graphs: Sequence[Data],
                 scores: list[EdgeScores] | None = None, progress: bool = False,
                 maps: MapsReader | None = None, scorer=None) -> tuple[list[dict], float]:
    """COCO results of one grouping over every (vertex) graph and its seconds per image;
    see :func:`group_all`."""
    return group_all({name: settings}, layout, graphs, scores, progress, maps, scorer)[name]


def group_all(settings: dict, layout: Layout, graphs: Sequence[Data],
              scores: list[EdgeScores] | None = None, progress: bool = False,
              maps: MapsReader | None = None, scorer=None
              ) -> dict[str, tuple[list[dict], float]]:
    """Per grouping name (its settings dataclass, or None, in ``settings``): COCO results
    over every (vertex) graph, and seconds per image, everything after the candidates, so
    for ``gnn`` its ``scores``' share of pair building and model time plus the decoding.
    ``oracle`` uses the ground truth; ``scorer`` is gnn's person scorer (a module's
    ``scorer``), for ``score=learned``. With ``adjust`` or ``refine`` on, a grouping gets
    the image's maps, read once per image with ``maps`` for all of them (reading is not
    timed; the steps are)."""
    groupings = {name: build_grouping(name, s, layout=layout,
                                      **({"scorer": scorer} if name == "gnn" else {}))
                 for name, s in settings.items()}
    readers = [name for name, grouping in groupings.items() if grouping.needs_maps]
    if readers and maps is None:
        raise ValueError(f"grouping.{readers[0]}.adjust/refine need the images' maps, which "
                         "this run does not read")
    results: dict[str, list[dict]] = {name: [] for name in groupings}
    elapsed = dict.fromkeys(groupings, 0.0)
    for i, g in enumerate(tqdm(graphs, desc=f"grouping {', '.join(groupings)}",
                               disable=not progress, leave=False)):
        cands = candidates_of(g)
        image_maps = maps(int(g.image_id)) if readers else None
        for name, grouping in groupings.items():
            kwargs = {}
            if name == "oracle":
                kwargs = {"person": g.person.numpy()}
            elif name == "gnn":
                kwargs = {"pair_index": scores[i].pair_index, "prob": scores[i].prob,
                          "vertex_prob": scores[i].vertex_prob}
                elapsed[name] += scores[i].seconds
            if grouping.needs_maps:
                kwargs["maps"] = image_maps
            start = time.perf_counter()
            people = grouping.group(cands, **kwargs)
            elapsed[name] += time.perf_counter() - start
            results[name].extend(people_to_coco_results(int(g.image_id), people))
    n = max(len(graphs), 1)
    return {name: (results[name], elapsed[name] / n) for name in groupings}


def fit_person_scorer(module, dataset: GraphList, gt: dict, layout: Layout, settings,
                      batch_size: int = 8, progress: bool = False) -> dict[str, float]:
    """Fit ``module.person_scorer`` on the people the gnn grouping (``settings``, scored
    by heat) assembles from ``dataset`` with ``module``'s probabilities, each labelled
    with its OKS to the best person of ``gt`` (a COCO keypoints dict)."""
    scores = edge_probabilities(module, dataset, batch_size, progress)
    grouping = build_grouping("gnn", settings, layout=layout)
    people_of: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        people_of.setdefault(int(a["image_id"]), []).append(a)
    features, targets = [], []
    for graph, s in zip(dataset.graphs, scores, strict=True):
        people = grouping.group(candidates_of(graph), pair_index=s.pair_index, prob=s.prob,
                                vertex_prob=s.vertex_prob)
        features.append(person_features(people, s.pair_index, s.prob))
        targets.append(best_oks(people.keypoints, people_of.get(int(graph.image_id), []),
                                layout.sigma_array))
    x, y = np.concatenate(features), np.concatenate(targets)
    loss = module.person_scorer.fit(x, y)
    return {"people": float(len(y)), "mean_oks": float(y.mean()), "mse": loss}


def edge_accuracy(scores: list[EdgeScores], threshold: float = 0.5) -> float:
    """Share of scored pairs whose thresholded probability equals the label."""
    p = np.concatenate([s.prob for s in scores] or [np.zeros(0)])
    y = np.concatenate([s.y for s in scores] or [np.zeros(0)])
    return float(((p >= threshold) == (y > 0.5)).mean()) if len(y) else float("nan")


def evaluate_groupings(gt: dict, layout: Layout, dataset: GraphList | None, grouping_cfg,
                       module=None, prefix: str = "test", batch_size: int = 8,
                       results_dir: Path | None = None, progress: bool = False,
                       maps: MapsReader | None = None,
                       chunks: Iterable[tuple[GraphList, MapsReader]] | None = None
                       ) -> dict[str, float]:
    """Flat metrics ``{prefix}/{grouping}/{AP,...}`` of every grouping in
    ``grouping_cfg.run`` (a ``GroupingConfig``; gnn only with a module), writing each
    one's COCO results to ``results_dir`` when given. ``maps`` reads an image's maps, once
    for all the groupings with ``adjust`` or ``refine`` on (only they need them).
    ``chunks`` replaces ``dataset`` and ``maps``: consecutive parts of the split, each
    with its maps (``PoseGraphDataModule.evaluation_chunks``)."""
    names = [n for n in grouping_cfg.run if n != "gnn" or module is not None]
    settings = {name: getattr(grouping_cfg, name, None) for name in names}
    scorer = module.scorer if module is not None else None
    results: dict[str, list[dict]] = {name: [] for name in names}
    seconds, count, scores = dict.fromkeys(names, 0.0), 0, []
    for part, reader in (chunks if chunks is not None else [(dataset, maps)]):
        part_scores = (edge_probabilities(module, part, batch_size, progress)
                       if "gnn" in names else None)
        scores += part_scores or []
        for name, (found, sec) in group_all(settings, layout, part.graphs, part_scores,
                                            progress, reader, scorer).items():
            results[name] += found
            seconds[name] += sec * len(part)
        count += len(part)
    metrics: dict[str, float] = {}
    if "gnn" in names:
        metrics[f"{prefix}/gnn/edge_acc"] = edge_accuracy(scores)
    for name in names:
        results_of, sec = results[name], seconds[name] / max(count, 1)
        found = evaluate_keypoints(gt, results_of, layout.sigma_array,
                                   max_dets=grouping_cfg.max_dets)
        metrics.update({f"{prefix}/{name}/{k}": v for k, v in found.items()})
        metrics[f"{prefix}/{name}/sec_per_image"] = sec
        if results_dir is not None:
            write_json(Path(results_dir) / f"{prefix}_{name}_results.json", results_of)
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
