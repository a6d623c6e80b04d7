"""``posegnn-predict``: people for every image of a dataset, as COCO results, and
optionally drawn over the heatmaps or the images."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from posegnn.checkpoints import load_module
from posegnn.config import PredictConfig
from posegnn.contract import off_image_warning
from posegnn.data.cache import build_graphs
from posegnn.data.graph import AddEdges, GraphConfig, GraphList
from posegnn.data.maps import DatasetError, PoseMapsDataset
from posegnn.evaluation.runner import edge_probabilities, group_images
from posegnn.figures import MIN_SCORE, above_score, draw_people, save_figure
from posegnn.io import write_json
from posegnn.pretrained import shipped_checkpoint

log = logging.getLogger(__name__)


def predict(cfg: PredictConfig, out_dir: str | Path | None = None) -> int:
    """Write the COCO results of the grouping ``cfg.grouping.run[0]`` (gnn or ae) for
    ``cfg.input`` to ``cfg.out``; returns the number of people found. gnn takes
    ``cfg.ckpt_path``, else the model shipped for the layout; graph settings come from the
    checkpoint. ``cfg.draw > 0`` also draws that many images' people into
    ``<out_dir>/figures/``."""
    name = cfg.grouping.run[0]
    ds = PoseMapsDataset(cfg.input, require_annotations=False)
    module = None
    if cfg.ckpt_path or name == "gnn":
        module = load_module(cfg.ckpt_path or shipped_checkpoint(ds.layout.name),
                             layout=ds.layout.name)
    graph = module.graph_cfg if module is not None else GraphConfig()
    graphs = build_graphs(ds, ds.image_ids, graph, desc="building graphs", progress=cfg.progress)
    warning = off_image_warning(graphs, ds.image, str(ds.root))
    if warning:
        log.warning(warning)
    dataset = GraphList(graphs, AddEdges(ds.layout, graph.edges))
    probs = (edge_probabilities(module, dataset, cfg.batch_size, cfg.progress)
             if name == "gnn" else None)
    settings = getattr(cfg.grouping, name)
    results, _ = group_images(name, settings, ds.layout, graphs, probs, cfg.progress,
                              ds.load_maps, scorer=module.scorer if module is not None else None)
    write_json(cfg.out, results)
    if cfg.draw > 0:
        figures = Path(out_dir if out_dir is not None else Path(cfg.out).parent) / "figures"
        paths = draw_predictions(ds, results, figures, cfg.draw, cfg.images,
                                 cfg.draw_min_score)
        log.info("drew %d images into %s", len(paths), figures)
        print(f"drew the people of {len(paths)} images into {figures}")
    return len(results)


def draw_predictions(ds: PoseMapsDataset, results: list[dict], out: Path, count: int,
                     images: str | None = None, min_score: float = MIN_SCORE) -> list[Path]:
    """``predict_<image id>.png`` for the first ``count`` images: the people of
    ``results`` (COCO keypoint results) scored at least ``min_score``, each with its
    score, over the image from the ``images`` folder (its ``file_name``) or over the
    max-projection of its heatmaps."""
    k = ds.layout.num_joints
    by_image: dict[int, list[dict]] = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)
    paths = []
    for image_id in ds.image_ids[:count]:
        info = ds.image(image_id)
        found = by_image.get(image_id, [])
        people = np.asarray([r["keypoints"] for r in found], np.float64).reshape(-1, k, 3)
        people, scores, left_out = above_score(
            people, np.asarray([r["score"] for r in found], np.float64), min_score)
        title = f"image {image_id}: {len(people)} people scored >= {min_score:g}" + (
            f" ({left_out} below)" if left_out else "")
        if images is not None:
            picture = _read_image(Path(images) / info["file_name"], info)
            fig = draw_people(people, ds.layout, info["width"], info["height"], image=picture,
                              title=title, scores=scores)
        else:
            maps = ds.load_maps(image_id)
            fig = draw_people(people, ds.layout, info["width"], info["height"],
                              heat=maps.heatmaps.max(axis=0), map_to_image=maps.map_to_image,
                              title=title + " (over the heatmaps)", scores=scores)
        paths.append(save_figure(fig, out / f"predict_{image_id}.png"))
    return paths


def _read_image(path: Path, info: dict) -> np.ndarray:
    """An image file as an array, checked against the size annotations.json gives."""
    from matplotlib.image import imread

    if not path.is_file():
        raise DatasetError(f"{path}: missing (image {info['id']}'s file_name in the images "
                           "folder)")
    try:
        picture = imread(path)
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    h, w = picture.shape[:2]
    if (w, h) != (info["width"], info["height"]):
        raise DatasetError(f"{path}: {w}x{h} pixels, but annotations.json says image "
                           f"{info['id']} is {info['width']}x{info['height']}")
    return picture
