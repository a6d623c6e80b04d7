"""Figures of the report and of training: examples (predicted people vs ground truth over
the heatmaps), edge-probability histograms and loss curves.

Figures are built with matplotlib's object interface (``Figure`` rendered by the Agg
canvas), never through pyplot: nothing needs a screen, no global figure is left open,
and a callback can draw while another library uses pyplot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import Affine2D

from posegnn.io import atomic_write
from posegnn.layouts import Layout
from posegnn.types import People

LINESTYLES = ("-", "--", ":", "-.")
# predicted people scored below this are left out of example drawings (posegnn-predict's
# draw_min_score takes its default from here)
MIN_SCORE = 0.2


@dataclass
class Example:
    """What one example panel pair needs: the image's heatmaps, its predicted and its
    ground-truth people (all coordinates in image pixels)."""

    image_id: int
    width: float
    height: float
    heat: np.ndarray  # [Hh, Wh] max-projection of the heatmaps
    map_to_image: np.ndarray  # [2, 3] affine from heatmap pixels to image pixels
    predicted: np.ndarray  # [P, K, 3] x, y, score (score 0 = missing joint)
    ground_truth: np.ndarray  # [G, K, 3] x, y, visibility (0 = unlabeled)
    candidates: np.ndarray | None = None  # [N, 2] candidate positions
    assignment: np.ndarray | None = None  # [N] predicted person of each candidate, -1 none
    scores: np.ndarray | None = None  # [P] the predicted people's scores


def make_example(dataset, image_id: int, people: People,
                 candidates: np.ndarray | None = None) -> Example:
    """An :class:`Example` of ``image_id`` of a ``PoseMapsDataset`` with ``people`` found
    by a grouping (``candidates``: the positions the grouping saw, to show the unused)."""
    maps = dataset.load_maps(image_id)
    img = dataset.image(image_id)
    gt, _ = dataset.gt_keypoints(image_id) if dataset.has_annotations else (None, None)
    k = dataset.layout.num_joints
    return Example(
        image_id=int(image_id), width=float(img["width"]), height=float(img["height"]),
        heat=maps.heatmaps.max(axis=0), map_to_image=maps.map_to_image,
        predicted=np.asarray(people.keypoints, dtype=np.float64).reshape(-1, k, 3),
        ground_truth=np.zeros((0, k, 3)) if gt is None else gt,
        candidates=None if candidates is None else np.asarray(candidates).reshape(-1, 2),
        assignment=np.asarray(people.assignment) if candidates is not None else None,
        scores=np.asarray(people.scores, dtype=np.float64).reshape(-1))


def person_colors(n: int) -> list:
    """``n`` distinguishable colours (tab20 order, light shades last)."""
    cmap = matplotlib.colormaps["tab20"]
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [cmap(order[i % 20]) for i in range(n)]


def matched_colors(predicted: np.ndarray, ground_truth: np.ndarray) -> tuple[list, list]:
    """Colours of predicted and ground-truth people such that a prediction matched to a
    ground-truth person (smallest mean distance over their common joints, one to one)
    has that person's colour; unmatched predictions get colours of their own."""
    n_pred, n_gt = len(predicted), len(ground_truth)
    palette = person_colors(n_gt + n_pred)
    gt_colors = palette[:n_gt]
    pred_colors: list = [None] * n_pred
    if n_pred and n_gt:
        from scipy.optimize import linear_sum_assignment

        cost = np.full((n_pred, n_gt), 1e9)
        for i, p in enumerate(predicted):
            for j, g in enumerate(ground_truth):
                common = (p[:, 2] > 0) & (g[:, 2] > 0)
                if common.any():
                    cost[i, j] = np.linalg.norm(p[common, :2] - g[common, :2], axis=1).mean()
        for i, j in zip(*linear_sum_assignment(cost), strict=True):
            if cost[i, j] < 1e9:
                pred_colors[i] = gt_colors[j]
    spare = iter(palette[n_gt:])
    pred_colors = [c if c is not None else next(spare) for c in pred_colors]
    return pred_colors, gt_colors


def _show_heat(ax, heat: np.ndarray, affine: np.ndarray, width: float, height: float) -> None:
    """The heatmap drawn in image coordinates through the dataset's affine."""
    hh, wh = heat.shape
    matrix = np.eye(3)
    matrix[:2] = affine
    im = ax.imshow(heat, cmap="gray", vmin=0.0, vmax=max(float(heat.max()), 1e-6),
                   extent=(-0.5, wh - 0.5, hh - 0.5, -0.5), interpolation="bilinear")
    im.set_transform(Affine2D(matrix) + ax.transData)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_skeletons(ax, keypoints: np.ndarray, layout: Layout, colors: Sequence | None = None,
                   linewidth: float = 1.8, markersize: float = 3.5,
                   scores: np.ndarray | None = None) -> None:
    """People [P, K, 3] (third value > 0 where the joint exists) as limbs and joints,
    one colour per person; ``scores`` [P] are written above each person."""
    colors = list(colors) if colors is not None else person_colors(len(keypoints))
    for p, kps in enumerate(keypoints):
        present = kps[:, 2] > 0
        color = colors[p % len(colors)]
        for a, b in layout.limbs:
            if present[a] and present[b]:
                ax.plot(kps[[a, b], 0], kps[[a, b], 1], color=color, lw=linewidth,
                        solid_capstyle="round")
        ax.plot(kps[present, 0], kps[present, 1], "o", color=color, ms=markersize,
                mec="white", mew=0.5)
        if scores is not None and present.any():
            top = kps[present][np.argmin(kps[present, 1])]
            ax.text(top[0], top[1] - 4, f"{scores[p]:.2f}", color="white", fontsize=6,
                    ha="center", va="bottom",
                    bbox={"facecolor": color, "edgecolor": "none", "pad": 1.0, "alpha": 0.85})


def above_score(people: np.ndarray, scores: np.ndarray | None,
                min_score: float) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The people scored at least ``min_score`` (all without scores), their scores, and
    how many were left out."""
    if scores is None:
        return people, None, 0
    scores = np.asarray(scores, np.float64).reshape(-1)
    keep = scores >= min_score
    return people[keep], scores[keep], int((~keep).sum())


def draw_examples(examples: Sequence[Example], layout: Layout,
                  titles: tuple[str, str] = ("prediction", "ground truth"),
                  panel_size: float = 4.0, min_score: float = MIN_SCORE) -> Figure:
    """The "Examples" slide: one row per image, predicted people scored at least
    ``min_score`` (left, each with its score) and ground truth (right) drawn over the
    max-projection of the image's heatmaps, one colour per person. Candidates the
    grouping left unassigned show as small crosses."""
    rows = max(len(examples), 1)
    fig = _figure(figsize=(2 * panel_size, panel_size * rows))
    axes = fig.subplots(rows, 2, squeeze=False)
    for row, ex in zip(axes, examples, strict=False):
        predicted, scores, left_out = above_score(ex.predicted, ex.scores, min_score)
        pred_colors, gt_colors = matched_colors(predicted, ex.ground_truth)
        for ax, people, title, colors, shown in zip(
                row, (predicted, ex.ground_truth), titles, (pred_colors, gt_colors),
                (scores, None), strict=True):
            _show_heat(ax, ex.heat, ex.map_to_image, ex.width, ex.height)
            draw_skeletons(ax, people, layout, colors, scores=shown)
            below = f", {left_out} below {min_score:g}" if shown is not None and left_out \
                else ""
            ax.set_title(f"image {ex.image_id}: {title} ({len(people)} people{below})",
                         fontsize=9)
        if ex.candidates is not None and ex.assignment is not None:
            free = ex.candidates[np.asarray(ex.assignment) < 0]
            row[0].plot(free[:, 0], free[:, 1], "x", color="0.75", ms=4, mew=0.8,
                        label="unassigned candidate")
    for ax in axes.flat[2 * len(examples):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def edge_probability_histogram(probs: np.ndarray, labels: np.ndarray, bins: int = 20,
                               threshold: float | None = None, title: str | None = None
                               ) -> Figure:
    """Histogram of predicted same-person probabilities, same-person pairs (label 1) and
    different-person pairs (label 0) apart."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1) > 0.5
    if probs.shape != labels.shape:
        raise ValueError(f"{len(probs)} probabilities for {len(labels)} labels")
    fig = _figure(figsize=(6, 3.6))
    ax = fig.subplots()
    edges = np.linspace(0.0, 1.0, bins + 1)
    ax.hist(probs[~labels], bins=edges, alpha=0.6, color="tab:red",
            label=f"different people ({int((~labels).sum())})")
    ax.hist(probs[labels], bins=edges, alpha=0.6, color="tab:blue",
            label=f"same person ({int(labels.sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="0.3", ls="--", lw=1)
    ax.set_yscale("log" if len(probs) and _skewed(probs, edges) else "linear")
    ax.set_xlabel("predicted same-person probability")
    ax.set_ylabel("pairs")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _skewed(values: np.ndarray, edges: np.ndarray) -> bool:
    counts, _ = np.histogram(values, bins=edges)
    nonzero = counts[counts > 0]
    return len(nonzero) > 1 and nonzero.max() > 30 * nonzero.min()


def loss_curves(curves: Mapping[str, Mapping[str, Sequence[float]]],
                groups: Mapping[str, object] | None = None, group_name: str | None = None,
                keys: Sequence[str] = ("train/loss", "val/loss"),
                title: str | None = None) -> Figure:
    """Per-epoch curves of every run overlaid, one panel per key (train and val loss).

    ``curves`` maps a run's label to ``{"epoch": [...], key: [...]}`` (NaN where a key was
    not logged). With ``groups`` (label -> value of the swept variable) runs are coloured
    by their group and told apart within it by line style; otherwise each run has its own
    colour."""
    labels = list(curves)
    if groups:
        values = sorted({str(groups[lb]) for lb in labels})
        palette = dict(zip(values, person_colors(len(values)), strict=True))
        seen: dict[str, int] = {}
        style = {}
        for lb in labels:
            g = str(groups[lb])
            style[lb] = (palette[g], LINESTYLES[seen.get(g, 0) % len(LINESTYLES)])
            seen[g] = seen.get(g, 0) + 1
    else:
        style = {lb: (c, "-") for lb, c in zip(labels, person_colors(len(labels)),
                                                            strict=True)}
    fig = _figure(figsize=(5.5 * len(keys), 4))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for lb in labels:
            epoch = np.asarray(curves[lb].get("epoch", []), dtype=np.float64)
            y = np.asarray(curves[lb].get(key, [np.nan] * len(epoch)), dtype=np.float64)
            ok = np.isfinite(y)
            if ok.any():
                color, ls = style[lb]
                ax.plot(epoch[ok], y[ok], ls, color=color, marker=".", ms=4, lw=1.3,
                        alpha=0.9, label=lb if not groups else None)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss" if all("loss" in k for k in keys) else "value")
    if groups:
        handles = [Line2D([], [], color=palette[v], lw=2) for v in values]
        by_group = axes[0][-1].legend(handles, values, title=group_name, fontsize=8,
                                      title_fontsize=8)
        axes[0][-1].add_artist(by_group)  # and every run by its line, beside the panels
        runs = [Line2D([], [], color=style[lb][0], ls=style[lb][1], lw=1.3) for lb in labels]
        axes[0][-1].legend(runs, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                           fontsize=7, ncol=1 if len(labels) <= 18 else 2, frameon=False)
    elif labels:
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7,
                           ncol=1 if len(labels) <= 18 else 2, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def bar_chart(values: Mapping[str, Mapping[str, float | None]], ylabel: str,
              title: str | None = None) -> Figure:
    """Grouped bars: ``values[run][series]`` (e.g. AP of gnn, ae and oracle per job)."""
    runs = list(values)
    series = sorted({s for v in values.values() for s in v}, key=_series_order)
    fig = _figure(figsize=(max(6.0, 0.7 * len(runs) * max(len(series), 1)), 4))
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(runs))
    for i, (s, color) in enumerate(zip(series, person_colors(len(series)),
                                                       strict=True)):
        ys = [values[r].get(s) for r in runs]
        ax.bar(x + (i - (len(series) - 1) / 2) * width,
               [np.nan if y is None else y for y in ys], width, label=s, color=color)
    ax.set_xticks(x)
    ax.set_xticklabels(runs, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _series_order(name: str) -> tuple[int, str]:
    order = {"gnn": 0, "ae": 1, "oracle": 2}
    return order.get(name, 3), name


def _figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG (atomically: a failed write leaves no half file)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi,
                                                    bbox_inches="tight"))


def draw_people(people: np.ndarray, layout: Layout, width: float, height: float,
                image: np.ndarray | None = None, heat: np.ndarray | None = None,
                map_to_image: np.ndarray | None = None, title: str = "",
                panel_size: float = 6.0, scores: np.ndarray | None = None) -> Figure:
    """One image's people [P, K, 3] (each with its score from ``scores`` [P]) over the
    image itself (``image``, [H, W] or [H, W, 3|4]) or, without it, over the
    max-projection of its heatmaps placed through ``map_to_image``."""
    aspect = height / max(width, 1e-6)
    fig = _figure(figsize=(panel_size, max(panel_size * aspect, 2.0)))
    ax = fig.subplots()
    if image is not None:
        ax.imshow(image, extent=(0, width, height, 0), interpolation="bilinear")
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        _show_heat(ax, heat, map_to_image, width, height)
    draw_skeletons(ax, people, layout, scores=scores)
    ax.set_title(title or f"{len(people)} people", fontsize=9)
    fig.tight_layout()
    return fig
