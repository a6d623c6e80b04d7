"""HigherHRNet's two steps after grouping, which read the image's maps (its
``HeatmapParser.adjust`` and ``HeatmapParser.refine``), for any grouping's people.

``adjust``: each grouped keypoint goes to its integer heatmap peak, shifted a quarter
pixel along each axis toward the higher of the two neighbouring heat values (toward the
lower side when they are equal, as HigherHRNet does). It replaces the candidates' own
sub-pixel offset.

``refine``: for each joint type a person lacks, the pixel maximizing
``heat - round(|tag - mean tag of the person|)`` over the whole heatmap of that joint
type fills it (with its heat as the keypoint's score, a quarter-pixel shift as above),
when its heat is positive. The person's mean tag is the mean of its candidates' tags;
tag maps are sampled at every heatmap pixel (bilinear, as the candidates' tags are). The
filled point need not be a detected peak and may be another person's keypoint, as in
HigherHRNet. Person scores are left as they were: HigherHRNet scores people before it
refines them.

The search is compiled (:func:`posegnn.kernels.refine_argmax`); the numpy search below
(:func:`best_pixels`) is its reference, and both pick the same pixels.

Positions follow the dataset contract: heatmap pixel (u, v) is image point
``map_to_image @ [u, v, 1]`` (HigherHRNet's extra half pixel is its own convention).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from posegnn.data.maps import ImageMaps
from posegnn.kernels import refine_argmax
from posegnn.types import Candidates, People

QUARTER = 0.25
# refine searches these hottest pixels of a heatmap first, and the rest only when needed
TOP_PIXELS = 1024
# the compiled search bounds blocks of this many pixels square
REFINE_BLOCK = 16


def image_to_heatmap(maps: ImageMaps, xy: np.ndarray) -> np.ndarray:
    """Image pixels [N, 2] to heatmap pixel coordinates (the inverse of the maps' affine)."""
    a = maps.map_to_image
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return np.linalg.solve(a[:, :2], (xy - a[:, 2]).T).T


def quarter_shift(heat: np.ndarray, col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """HigherHRNet's quarter-pixel offsets [N, 2] (du, dv) at integer pixels of one
    heatmap [H, W]: +1/4 toward a strictly higher right (lower) neighbour, else -1/4."""
    h, w = heat.shape
    right = heat[row, np.minimum(col + 1, w - 1)] > heat[row, np.maximum(col - 1, 0)]
    down = heat[np.minimum(row + 1, h - 1), col] > heat[np.maximum(row - 1, 0), col]
    return np.column_stack([np.where(right, QUARTER, -QUARTER),
                            np.where(down, QUARTER, -QUARTER)])


def peak_pixel(heat: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The integer pixel (col, row) each sub-pixel point [N, 2] came from: the hottest of
    the four pixels around it (a candidate's offset from its peak is at most half a
    pixel, and the peak is hotter than its neighbours)."""
    h, w = heat.shape
    c0 = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, w - 1)
    r0 = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, h - 1)
    options_c = np.stack([c0, np.minimum(c0 + 1, w - 1), c0, np.minimum(c0 + 1, w - 1)], 1)
    options_r = np.stack([r0, r0, np.minimum(r0 + 1, h - 1), np.minimum(r0 + 1, h - 1)], 1)
    best = heat[options_r, options_c].argmax(axis=1)
    pick = np.arange(len(uv))
    return options_c[pick, best], options_r[pick, best]


def adjust_keypoints(keypoints: np.ndarray, present: np.ndarray,
                     maps: ImageMaps) -> np.ndarray:
    """``keypoints`` [P, K, 3] with every ``present`` [P, K] one moved to its integer
    peak plus HigherHRNet's quarter-pixel shift."""
    out = keypoints.copy()
    for joint in np.flatnonzero(present.any(axis=0)):
        who = np.flatnonzero(present[:, joint])
        heat = maps.heatmaps[joint]
        col, row = peak_pixel(heat, image_to_heatmap(maps, keypoints[who, joint, :2]))
        uv = np.column_stack([col, row]) + quarter_shift(heat, col, row)
        out[who, joint, :2] = maps.heatmap_to_image(uv)
    return out


def axis_weights(size: int, tag_size: int,
                 stride: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation of a tag-map axis at heatmap pixels ``i / stride`` (those of
    :func:`posegnn.data.candidates.bilinear`): lower and upper index and the upper's
    weight, each [size]."""
    t = np.clip(np.arange(size) / stride, 0, tag_size - 1)
    lo = np.minimum(np.floor(t).astype(np.int64), max(tag_size - 2, 0))
    return lo, np.minimum(lo + 1, tag_size - 1), (t - lo).astype(np.float32)


def interpolation_matrix(size: int, tag_size: int, stride: float) -> np.ndarray:
    """[size, tag_size]: :func:`axis_weights` as a matrix."""
    lo, hi, frac = axis_weights(size, tag_size, stride)
    out = np.zeros((size, tag_size), np.float32)
    np.add.at(out, (np.arange(size), lo), 1 - frac)
    np.add.at(out, (np.arange(size), hi), frac)
    return out


def tag_grid(maps: ImageMaps, joint: int) -> np.ndarray:
    """The tag map of one joint type at every heatmap pixel: [H * W, D] (bilinear)."""
    h, w = maps.heatmaps.shape[1:]
    _, th, tw, d = maps.tags.shape
    sx, sy = maps.tag_stride
    rows = torch.from_numpy(interpolation_matrix(h, th, sy))
    cols = torch.from_numpy(interpolation_matrix(w, tw, sx).T.copy())
    tags = torch.from_numpy(np.ascontiguousarray(maps.tags[joint].transpose(2, 0, 1)))
    return (rows @ tags @ cols).permute(1, 2, 0).reshape(h * w, d).numpy()


def tags_at_pixels(maps: ImageMaps, joint: int, flat: np.ndarray) -> np.ndarray:
    """The tags [M, D] of one joint type at heatmap pixels given by flat index [M]
    (row * W + col), bilinear as in :func:`tag_grid`."""
    h, w = maps.heatmaps.shape[1:]
    _, th, tw, _ = maps.tags.shape
    sx, sy = maps.tag_stride
    r0, r1, fr = (a[flat // w] for a in axis_weights(h, th, sy))
    c0, c1, fc = (a[flat % w] for a in axis_weights(w, tw, sx))
    tags = maps.tags[joint]
    fr, fc = fr[:, None], fc[:, None]
    top = tags[r0, c0] * (1 - fc) + tags[r0, c1] * fc
    bottom = tags[r1, c0] * (1 - fc) + tags[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def tag_distance(means: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """L2 distances [n, M] between mean tags [n, D] and tags [M, D]."""
    if tags.shape[1] == 1:  # scalar tags, the common case: no squares and roots
        return np.abs(tags[None, :, 0] - means[:, :1])
    return np.sqrt(((tags[None] - means[:, None]) ** 2).sum(axis=2))


def hottest_pixels(heat: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    """About ``count`` of the hottest pixels of a flattened heatmap (ascending flat
    indices) and a bound no pixel left out exceeds. The threshold comes from every 16th
    pixel, so one pass over the map replaces a partition of it; where the sample
    misleads (more than 4 x ``count`` pixels above it), the exact top ``count``."""
    sample = heat[::16]
    rank = max(count // 16, 1)
    if len(sample) > rank:
        bound = float(np.partition(sample, len(sample) - rank)[len(sample) - rank])
        idx = np.flatnonzero(heat > bound)
        if 0 < len(idx) <= 4 * count:
            return idx, bound
    part = np.argpartition(-heat, count)
    return np.sort(part[:count]), float(heat[part[count]])


def best_pixels(heat: np.ndarray, means: np.ndarray,
                tags_at: Callable[[np.ndarray], np.ndarray],
                all_tags: Callable[[], np.ndarray]) -> np.ndarray:
    """Per mean tag [n, D], the flat index of the first pixel maximizing
    ``heat - round(|tag - mean|)`` over a flattened heatmap [H * W]; ``tags_at`` gives
    the tags [M, D] at flat indices, ``all_tags`` those of every pixel [H * W, D]. The
    search looks at about the ``TOP_PIXELS`` hottest pixels first (:func:`hottest_pixels`)
    and at all of them only for a person whose best value there does not beat the heat of
    every other pixel (the rounded distance is never negative, so no other pixel could
    win)."""
    if heat.size > TOP_PIXELS:
        idx, bound = hottest_pixels(heat, TOP_PIXELS)
        tags = tags_at(idx)
    else:
        idx, bound, tags = np.arange(heat.size), -np.inf, all_tags()

    gain = heat[idx][None] - np.round(tag_distance(means, tags))
    pick = gain.argmax(axis=1)
    best, value = idx[pick], gain[np.arange(len(means)), pick]
    redo = np.flatnonzero(value <= bound)
    if len(redo):
        best[redo] = whole_map_argmax(heat, means[redo], all_tags())
    return best


def whole_map_argmax(heat: np.ndarray, means: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """Per mean tag [n, D], the first pixel maximizing ``heat - round(|tag - mean|)``
    over a flattened heatmap [H * W] with tags [H * W, D]: one person at a time through
    one buffer that stays in cache (the whole [n, H * W] array at once was 6-10x
    slower)."""
    out = np.empty(len(means), np.int64)
    buf = np.empty(len(heat), np.float32)
    for k, mean in enumerate(means):
        if tags.shape[1] == 1:
            np.abs(np.subtract(tags[:, 0], mean[0], out=buf), out=buf)
        else:
            np.sqrt(((tags - mean) ** 2).sum(axis=1), out=buf)
        np.subtract(heat, np.round(buf, out=buf), out=buf)
        out[k] = buf.argmax()
    return out


def missing_pixels(present: np.ndarray, mean_tags: np.ndarray, maps: ImageMaps,
                   reference: bool = False) -> np.ndarray:
    """Flat heatmap index [P, K] of the pixel refine picks for each missing (not
    ``present``) joint of a person whose mean tag [P, D] is known; -1 elsewhere. The
    compiled search (:func:`posegnn.kernels.refine_argmax`) by default, ``reference``:
    the numpy one (:func:`best_pixels`), which tests compare it with."""
    need = ~present & np.isfinite(mean_tags).all(axis=1)[:, None]
    means = np.ascontiguousarray(mean_tags, dtype=np.float32)
    if not reference:
        h, w = maps.heatmaps.shape[1:]
        _, th, tw, _ = maps.tags.shape
        sx, sy = maps.tag_stride
        return refine_argmax(maps.heatmaps, maps.tags, *axis_weights(h, th, sy),
                             *axis_weights(w, tw, sx), means, need, REFINE_BLOCK)
    best = np.full(need.shape, -1, np.int64)
    for joint in np.flatnonzero(need.any(axis=0)):
        who = np.flatnonzero(need[:, joint])
        best[who, joint] = best_pixels(maps.heatmaps[joint].reshape(-1), means[who],
                                       lambda flat, j=joint: tags_at_pixels(maps, j, flat),
                                       lambda j=joint: tag_grid(maps, j))
    return best


def fill_missing(keypoints: np.ndarray, present: np.ndarray, mean_tags: np.ndarray,
                 maps: ImageMaps, reference: bool = False) -> np.ndarray:
    """``keypoints`` [P, K, 3] with each missing (not ``present``) joint filled from the
    heatmaps by HigherHRNet's refine, for people whose mean tag [P, D] is known
    (``reference``: through the numpy search)."""
    out = keypoints.copy()
    best = missing_pixels(present, mean_tags, maps, reference)
    w = maps.heatmaps.shape[2]
    for joint in np.flatnonzero((best >= 0).any(axis=0)):
        who = np.flatnonzero(best[:, joint] >= 0)
        heat = maps.heatmaps[joint]
        row, col = best[who, joint] // w, best[who, joint] % w
        value = heat[row, col]
        fill = value > 0
        who, row, col, value = who[fill], row[fill], col[fill], value[fill]
        uv = np.column_stack([col, row]) + quarter_shift(heat, col, row)
        out[who, joint, :2] = maps.heatmap_to_image(uv)
        out[who, joint, 2] = value
    return out


def person_mean_tags(people: People, cands: Candidates) -> np.ndarray:
    """Mean tag [P, D] of each person's candidates (NaN for a person with none)."""
    n_people, d = len(people), cands.tag.shape[1]
    sums = np.zeros((n_people, d), np.float64)
    counts = np.zeros(n_people, np.float64)
    member = people.assignment >= 0
    np.add.at(sums, people.assignment[member], cands.tag[member])
    np.add.at(counts, people.assignment[member], 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def present_joints(people: People, cands: Candidates, num_joints: int) -> np.ndarray:
    """[P, K]: whether the person holds a candidate of that joint type."""
    present = np.zeros((len(people), num_joints), bool)
    member = people.assignment >= 0
    present[people.assignment[member], cands.joint[member]] = True
    return present


def refine_people(people: People, cands: Candidates, maps: ImageMaps, *, adjust: bool,
                  refine: bool, reference: bool = False) -> People:
    """``people`` (grouped from ``cands``, the assignment in their order) after
    HigherHRNet's ``adjust`` and then ``refine``, as asked; scores and assignment unchanged."""
    if len(people) == 0 or not (adjust or refine):
        return people
    k = people.keypoints.shape[1]
    if maps.heatmaps.shape[0] != k:
        raise ValueError(f"maps of image {maps.image_id} hold {maps.heatmaps.shape[0]} "
                         f"heatmaps for people of {k} joints")
    present = present_joints(people, cands, k)
    keypoints = people.keypoints
    if adjust:
        keypoints = adjust_keypoints(keypoints, present, maps)
    if refine:
        keypoints = fill_missing(keypoints, present, person_mean_tags(people, cands), maps,
                                 reference)
    return People(keypoints.astype(np.float32), people.scores, people.assignment)
