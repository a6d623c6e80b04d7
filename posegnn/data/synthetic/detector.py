"""A simulated bottom-up network: heatmaps and associative-embedding tag maps.

Given a :class:`~.scene.Scene`, it renders what a HigherHRNet-like network would output:
Gaussian peaks (drawn locally, max-combined) whose height drops with occlusion and small
size, missed joints, jitter, spurious peaks, left/right swaps and merged peaks; and tags
that share a base value per person, with per-joint noise and drift towards the tag of
another person whose body the joint lies on (the crowd failure of associative embedding).
Tags are 1-D by default, D-dimensional vectors with ``tag_dim``: the noise then has the
same root-mean-square length as in 1-D and neighbouring people lie about ``tag_spread``
apart, so tag distances behave alike whatever D.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import ndimage

from posegnn.choices import SettingError, one_of
from posegnn.layouts import Layout

from .scene import Scene, region_distance


@dataclass
class DetectorNoise:
    """Knobs of the simulated detector. Distances in heatmap pixels unless noted."""

    tag_noise: float = 0.12  # per-joint tag noise std
    tag_spread: float = 1.0  # spacing of people's base tags (neighbours differ by ~this)
    crowd_confusion: float = 0.3  # 0..1: how far tags drift towards an overlapping person's
    confusion_range: float = 1.5  # drift decay outside a body region (capsule radii)
    miss_rate: float = 0.04  # missed visible joints
    occluded_miss_rate: float = 0.3  # missed occluded (v=1) joints
    false_positive_rate: float = 0.4  # expected spurious peaks per joint type per image
    false_positive_height: float = 0.4  # spurious peaks' heights are uniform up to this
    jitter: float = 0.01  # position noise std as a fraction of body height (x2 occluded)
    swap_rate: float = 0.03  # left/right swap per person and limb pair (x3 facing away)
    heat_sigma: float = 2.0  # Gaussian peak std
    peak_height: float = 0.85  # mean peak height of a visible joint
    occluded_peak_height: float = 0.45  # mean peak height of an occluded joint
    peak_height_spread: float = 0.12  # heights are uniform within +-this of the mean
    small_person: float = 40.0  # body height below which peaks weaken (down to half)
    merge_distance: float = 2.0  # same-type peaks closer than this become one
    tag_radius: float = 2.0  # disk radius (tag-map pixels) a joint writes its tag in
    tag_background: float = 0.0  # std of smooth background noise in the tag maps
    tag_dim: int = 1  # tag dimension D: 1 writes tags [K, Ht, Wt], more [K, Ht, Wt, D]


# What ``noise_ranges`` may vary per image besides the DetectorNoise fields.
RESOLUTION = "heatmap_size"
# The tag dimension: drawn as a whole number within its range (both ends included).
TAG_DIM = "tag_dim"
# The default training detector's per-image ranges (data.synthetic.noise_ranges): wide, so
# that a model does not learn one detector's habits (RESULTS.md, "Maps from a detector it
# never saw"); the fixed test detector's settings lie inside them.
TRAINING_RANGES = {
    "tag_noise": [0.03, 0.35], "crowd_confusion": [0.0, 0.6], "miss_rate": [0.0, 0.12],
    "jitter": [0.003, 0.025], "false_positive_rate": [0.1, 1.2], "swap_rate": [0.0, 0.08],
    "merge_distance": [0.5, 3.0], "heat_sigma": [1.5, 3.0], "peak_height": [0.6, 0.95],
    RESOLUTION: [160.0, 320.0]}


def check_tag_dim(value: float, where: str) -> None:
    """A tag dimension is a whole number >= 1."""
    if not (float(value).is_integer() and value >= 1):
        raise SettingError(f"{where}={value}: the tag dimension must be a whole number >= 1")


def check_noise_ranges(ranges: dict[str, list[float]]) -> None:
    """Every range names a :class:`DetectorNoise` field (or ``heatmap_size``) and is a
    ``[low, high]`` pair with low <= high."""
    allowed = sorted({f.name for f in fields(DetectorNoise)} | {RESOLUTION})
    for name, bounds in ranges.items():
        one_of("noise_ranges", name, allowed)
        if len(bounds) != 2 or not bounds[0] <= bounds[1]:
            raise SettingError(f"noise_ranges.{name}={list(bounds)}: expected [low, high] with "
                             "low <= high")
        if name == TAG_DIM:
            for value in bounds:
                check_tag_dim(value, f"noise_ranges.{name}")


def draw_noise(noise: DetectorNoise, ranges: dict[str, list[float]],
               rng: np.random.Generator) -> DetectorNoise:
    """``noise`` with each setting named in ``ranges`` drawn uniformly from its range: the
    behaviour of one image's detector, when a model must not learn one detector. The map
    resolution and the tag dimension are drawn apart (:func:`draw_tag_dim`), after it."""
    drawn = {name: float(rng.uniform(*ranges[name])) for name in sorted(ranges)
             if name not in (RESOLUTION, TAG_DIM)}
    return replace(noise, **drawn)


def draw_tag_dim(noise: DetectorNoise, ranges: dict[str, list[float]],
                 rng: np.random.Generator) -> DetectorNoise:
    """``noise`` with its tag dimension drawn from ``ranges`` (each whole number in it alike),
    or unchanged where ``ranges`` does not name it."""
    if TAG_DIM not in ranges:
        return noise
    low, high = (int(v) for v in ranges[TAG_DIM])
    return replace(noise, tag_dim=int(rng.integers(low, high + 1)))


@dataclass
class MapGeometry:
    """Where the image lies in the maps: heatmap = scale * image + offset."""

    scale: float
    offset: tuple[float, float]
    heatmap_size: int
    tag_size: int
    letterboxed: bool

    def to_heatmap(self, xy: np.ndarray) -> np.ndarray:
        return xy * self.scale + np.asarray(self.offset)

    def content(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Corners (min, max) of the image area in heatmap pixels."""
        lo = np.asarray(self.offset)
        return lo, lo + self.scale * np.array([width, height])

    def map_to_image(self) -> np.ndarray | None:
        """The [2, 3] heatmap-to-image affine, or None where the default scaling holds."""
        if not self.letterboxed:
            return None
        inv = 1.0 / self.scale
        ox, oy = self.offset
        return np.array([[inv, 0.0, -ox * inv], [0.0, inv, -oy * inv]], dtype=np.float32)


def letterbox(width: int, height: int, input_size: int = 512, heatmap_size: int = 256,
              tag_size: int = 128) -> MapGeometry:
    """Fit the image, centred and aspect-preserving, into a square network input."""
    s = input_size / max(width, height)
    f = heatmap_size / input_size
    ox, oy = (input_size - width * s) / 2.0, (input_size - height * s) / 2.0
    return MapGeometry(scale=s * f, offset=(ox * f, oy * f), heatmap_size=heatmap_size,
                       tag_size=tag_size, letterboxed=width != height)


# -- tags -------------------------------------------------------------------------------
def person_tags(rng: np.random.Generator, n: int, spread: float, dim: int = 1) -> np.ndarray:
    """Base tag per person [P, D]: distinct cells, in shuffled order, of a centred grid with
    steps of ``spread`` (in 1-D a ladder), jittered, then turned at random (D > 1)."""
    side = n if dim == 1 else 0
    while side**dim < n:
        side += 1
    cells = rng.permutation(side**dim)[:n]
    grid = np.stack(np.unravel_index(cells, (side,) * dim), axis=1)  # [P, D]
    base = (grid - (side - 1) / 2.0) * spread + rng.uniform(-0.25, 0.25, (n, dim)) * spread
    if dim == 1:
        return base
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return base @ (q * np.sign(np.diag(r)))  # a uniformly random rotation (or reflection)


def joint_tags(scene: Scene, base: np.ndarray, noise: DetectorNoise,
               rng: np.random.Generator) -> np.ndarray:
    """Tag of every joint [P, K, D]: base + noise, drifted towards the person it overlaps.
    The noise has std ``tag_noise / sqrt(D)`` per dimension: ``tag_noise`` in length."""
    p, k = scene.labels.shape
    d = base.shape[1]
    occ = scene.occluded
    tags = base[:, None] + rng.normal(0.0, noise.tag_noise / np.sqrt(d), (p, k, d)) * np.where(
        occ, 1.5, 1.0)[..., None]
    strength = rng.uniform(0.5, 1.0, (p, k))
    if p < 2 or noise.crowd_confusion <= 0:
        return tags
    d = region_distance(scene.joints.reshape(-1, 2), scene.regions).reshape(p, k, p)
    d[np.arange(p), :, np.arange(p)] = np.inf
    excess = np.maximum(d - 1.0, 0.0) / max(noise.confusion_range, 1e-6)
    close = np.exp(-(excess**2))
    other = close.argmax(axis=2)
    weight = noise.crowd_confusion * np.take_along_axis(close, other[..., None], 2)[..., 0]
    weight = np.clip(weight * strength * np.where(occ, 1.5, 1.0), 0.0, 0.95)
    return tags + weight[..., None] * (base[other] - tags)


# -- peaks ------------------------------------------------------------------------------
@dataclass
class Peaks:
    """Detections to draw: position (heatmap px), channel, height and tag."""

    pos: np.ndarray  # [N, 2]
    channel: np.ndarray  # [N]
    height: np.ndarray  # [N]
    tag: np.ndarray  # [N, D]


def swapped_channels(layout: Layout, facing_back: np.ndarray, rate: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Channel of every joint [P, K], with left/right pairs swapped at random."""
    p, k = len(facing_back), layout.num_joints
    channel = np.tile(np.arange(k), (p, 1))
    pairs = np.array(layout.flip_pairs, dtype=np.int64).reshape(-1, 2)
    prob = np.minimum(rate * np.where(facing_back, 3.0, 1.0), 1.0)
    swap = rng.random((p, len(pairs))) < prob[:, None]
    for j, (a, b) in enumerate(pairs):
        channel[swap[:, j], a], channel[swap[:, j], b] = b, a
    return channel


def joint_peaks(scene: Scene, layout: Layout, geom: MapGeometry, tags: np.ndarray,
                noise: DetectorNoise, rng: np.random.Generator) -> Peaks:
    """Peaks of the people's joints: missed, weakened, jittered and swapped."""
    p, k = scene.labels.shape
    occ = scene.occluded
    pos = geom.to_heatmap(scene.joints)
    size = scene.height * geom.scale  # body height in heatmap pixels
    weak = np.clip(size / max(noise.small_person, 1e-6), 0.5, 1.0)[:, None]
    miss = np.where(occ, noise.occluded_miss_rate, noise.miss_rate)
    miss = np.minimum(miss / weak, 1.0)  # small people are missed up to twice as often
    height = np.where(occ, noise.occluded_peak_height, noise.peak_height)
    height = (height + rng.uniform(-1, 1, (p, k)) * noise.peak_height_spread) * weak
    std = noise.jitter * size[:, None] * np.where(occ, 2.0, 1.0)
    pos = pos + rng.normal(0.0, 1.0, (p, k, 2)) * std[..., None]
    channel = swapped_channels(layout, scene.facing_back, noise.swap_rate, rng)
    lo, hi = geom.content(scene.image["width"], scene.image["height"])
    inside = ((pos >= lo) & (pos < hi - 1e-3)).all(axis=2)
    keep = (scene.labels > 0) & inside & (rng.random((p, k)) >= miss)
    return Peaks(pos=pos[keep], channel=channel[keep],
                 height=np.clip(height[keep], 0.05, 0.99), tag=tags[keep])


def false_peaks(scene: Scene, geom: MapGeometry, tags: np.ndarray, base: np.ndarray,
                noise: DetectorNoise, rng: np.random.Generator) -> Peaks:
    """Spurious peaks: half on people (with their tags), half anywhere in the image."""
    k = scene.labels.shape[1]
    counts = rng.poisson(max(noise.false_positive_rate, 0.0), k)
    channel = np.repeat(np.arange(k), counts)
    n = len(channel)
    lo, hi = geom.content(scene.image["width"], scene.image["height"])
    pos = lo + rng.random((n, 2)) * (hi - lo - 1e-3)
    d = base.shape[1]
    lo_tag = base.min(axis=0) - 0.5 if len(base) else np.full(d, -1.0)
    hi_tag = base.max(axis=0) + 0.5 if len(base) else np.full(d, 1.0)
    tag = rng.uniform(lo_tag, hi_tag, (n, d))  # anywhere in the people's tag box
    labeled = np.argwhere(scene.labels > 0)
    on_person = rng.random(n) < 0.5
    if len(labeled):
        pick = labeled[rng.integers(len(labeled), size=n)]
        size = scene.height[pick[:, 0]] * geom.scale
        near = geom.to_heatmap(scene.joints[pick[:, 0], pick[:, 1]])
        near = near + rng.normal(0.0, 1.0, (n, 2)) * 0.06 * size[:, None]
        pos = np.where(on_person[:, None], np.clip(near, lo, hi - 1e-3), pos)
        near_tag = tags[pick[:, 0], pick[:, 1]] + rng.normal(0.0, noise.tag_noise / np.sqrt(d),
                                                             (n, d))
        tag = np.where(on_person[:, None], near_tag, tag)
    height = rng.uniform(0.08, max(noise.false_positive_height, 0.08), n)
    return Peaks(pos=pos, channel=channel, height=height, tag=tag)


def merge_peaks(peaks: Peaks, distance: float) -> Peaks:
    """Same-type peaks closer than ``distance`` merge into the strongest one."""
    n = len(peaks.channel)
    if n < 2 or distance <= 0:
        return peaks
    d = np.linalg.norm(peaks.pos[:, None] - peaks.pos[None], axis=2)
    close = (d < distance) & (peaks.channel[:, None] == peaks.channel[None])
    np.fill_diagonal(close, False)
    if not close.any():
        return peaks
    pos, alive = peaks.pos.copy(), np.ones(n, dtype=bool)
    for i in np.argsort(-peaks.height, kind="stable"):
        group = np.flatnonzero(close[i] & alive)
        if not alive[i] or len(group) == 0:
            continue
        members = np.concatenate([[i], group])
        w = peaks.height[members]
        pos[i] = (w[:, None] * peaks.pos[members]).sum(0) / w.sum()
        alive[group] = False
    return Peaks(pos=pos[alive], channel=peaks.channel[alive], height=peaks.height[alive],
                 tag=peaks.tag[alive])


def concat_peaks(*parts: Peaks) -> Peaks:
    return Peaks(*(np.concatenate([getattr(p, f) for p in parts])
                   for f in ("pos", "channel", "height", "tag")))


# -- rendering --------------------------------------------------------------------------
def render_heatmaps(peaks: Peaks, k: int, size: int, sigma: float) -> np.ndarray:
    """Max-combined Gaussians [K, size, size], each drawn in a window of +-3 sigma."""
    heat = np.zeros((k, size, size), dtype=np.float32)
    if len(peaks.channel) == 0:
        return heat
    r = max(int(np.ceil(3 * sigma)), 1)
    offs = np.arange(-r, r + 1)
    centre = np.round(peaks.pos).astype(np.int64)
    xs, ys = centre[:, :1] + offs, centre[:, 1:] + offs  # [N, W]
    gx = np.exp(-((xs - peaks.pos[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((ys - peaks.pos[:, 1:]) ** 2) / (2 * sigma**2))
    val = peaks.height[:, None, None] * gy[:, :, None] * gx[:, None, :]
    ok = ((ys >= 0) & (ys < size))[:, :, None] & ((xs >= 0) & (xs < size))[:, None, :]
    flat = (peaks.channel[:, None, None] * size + ys[:, :, None]) * size + xs[:, None, :]
    np.maximum.at(heat.reshape(-1), flat[ok], val[ok].astype(np.float32))
    return heat


def disk_offsets(radius: float) -> np.ndarray:
    """Integer offsets [M, 2] (dx, dy) within a disk."""
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    inside = dx**2 + dy**2 <= radius**2 + 1e-9
    return np.stack([dx[inside], dy[inside]], axis=1)


def render_tags(peaks: Peaks, k: int, heatmap_size: int, tag_size: int, radius: float,
                background: np.ndarray) -> np.ndarray:
    """Each peak writes its tag in a disk of its channel of ``background`` [K, T, T, D];
    stronger peaks win overlaps."""
    tags = background
    if len(peaks.channel) == 0:
        return tags
    order = np.argsort(peaks.height, kind="stable")  # weakest first, strongest last
    centre = np.round(peaks.pos[order] * (tag_size / heatmap_size)).astype(np.int64)
    pts = centre[:, None, :] + disk_offsets(radius)[None]  # [N, M, 2]
    ok = ((pts >= 0) & (pts < tag_size)).all(axis=2)
    flat = (peaks.channel[order][:, None] * tag_size + pts[..., 1]) * tag_size + pts[..., 0]
    val = np.broadcast_to(peaks.tag[order][:, None], (*flat.shape, tags.shape[-1]))
    flat, val = flat[ok][::-1], val[ok][::-1]  # the last writer comes first
    uniq, first = np.unique(flat, return_index=True)
    tags.reshape(-1, tags.shape[-1])[uniq] = val[first]
    return tags


def tag_background(rng: np.random.Generator, k: int, size: int, std: float,
                   dim: int = 1) -> np.ndarray:
    """Smooth low-amplitude noise [K, size, size, D] (bilinear upsampling of a coarse grid;
    ``std`` in length, as the tag noise), or zeros."""
    if std <= 0:
        return np.zeros((k, size, size, dim), dtype=np.float32)
    coarse = rng.normal(0.0, std / np.sqrt(dim), (k, 9, 9, dim))
    fine = ndimage.zoom(coarse, (1, size / 9, size / 9, 1), order=1)
    return fine[:, :size, :size].astype(np.float32)


def render_maps(scene: Scene, layout: Layout, geom: MapGeometry, noise: DetectorNoise,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Heatmaps [K, Hh, Wh] and tags (float16) for one scene: [K, Ht, Wt] for 1-D tags,
    [K, Ht, Wt, D] for ``noise.tag_dim`` = D > 1."""
    k = layout.num_joints
    base = person_tags(rng, len(scene.joints), noise.tag_spread, noise.tag_dim)
    tags = joint_tags(scene, base, noise, rng)
    peaks = concat_peaks(joint_peaks(scene, layout, geom, tags, noise, rng),
                         false_peaks(scene, geom, tags, base, noise, rng))
    peaks = merge_peaks(peaks, noise.merge_distance)
    heat = render_heatmaps(peaks, k, geom.heatmap_size, noise.heat_sigma)
    back = tag_background(rng, k, geom.tag_size, noise.tag_background, noise.tag_dim)
    tag_map = render_tags(peaks, k, geom.heatmap_size, geom.tag_size, noise.tag_radius, back)
    if noise.tag_dim == 1:
        tag_map = tag_map[..., 0]  # the contract's 1-D layout
    out = {"heatmaps": np.clip(heat, 0.0, 1.0).astype(np.float16),
           "tags": np.clip(tag_map, -1e4, 1e4).astype(np.float16)}
    m2i = geom.map_to_image()
    if m2i is not None:
        out["map_to_image"] = m2i
    return out
