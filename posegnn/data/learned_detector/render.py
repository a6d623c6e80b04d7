"""Rendered images of people for the learned detector: bodies as blurred strokes.

A :class:`~posegnn.data.synthetic.Scene` (synthetic skeletons or real poses) becomes a
small square image, letterboxed as a bottom-up network's input is. Each body is the
union of its limb capsules, drawn back to front, so people in front hide those behind.
Appearance gives no identity away: an image's people share a small palette (neighbours
often look alike), textures and noise are random, and occluders cover parts of bodies.
People facing the camera carry a face mark on the head, a cue that a mirror keeps (so
the flip test holds): with it, left and right follow from the body's geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from posegnn.data.synthetic import Scene
from posegnn.layouts import Layout

CHANNELS = 3
THICKNESS = 0.55  # capsule radii, as a share of the body regions' radii
JOINT_MARK = 0.5  # joints show as darker spots of this share of their limb's radius
HEAD = 0.06  # head radius, share of body height


@dataclass
class InputGeometry:
    """The square image region a network input shows: centre and side, image pixels."""

    center: tuple[float, float]
    side: float
    size: int  # input pixels

    @property
    def scale(self) -> float:
        """Input pixels per image pixel."""
        return self.size / self.side

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        origin = np.asarray(self.center) - self.side / 2.0
        return (xy - origin) * self.scale


def letterbox_geometry(width: int, height: int, size: int, zoom: float = 1.0,
                       shift: tuple[float, float] = (0.0, 0.0)) -> InputGeometry:
    """The whole image, centred in the square input; ``zoom`` > 1 crops in, ``shift``
    moves the centre (fractions of the side): training augmentations."""
    side = max(width, height) / zoom
    return InputGeometry(center=(width / 2.0 + shift[0] * side, height / 2.0 + shift[1] * side),
                         side=side, size=size)


def _face_joint(layout: Layout) -> int | None:
    """The joint a face mark sits on: the head (crowdpose14) or the nose (coco17)."""
    for name in ("head", "nose"):
        if name in layout.joints:
            return layout.joints.index(name)
    return None


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random texture [C, S, S] plus fine grain."""
    coarse = rng.uniform(0.0, 0.6, (CHANNELS, 6, 6))
    bg = ndimage.zoom(coarse, (1, size / 6, size / 6), order=1)[:, :size, :size]
    return bg + rng.normal(0.0, 0.04, (CHANNELS, size, size))


def _capsule_shade(a: np.ndarray, b: np.ndarray, r: float, box: tuple[int, int, int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and cylinder shading (bright on the axis, dark at the rim) of the capsule
    a-b of radius r over the pixels of ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1]
    px, py = xs + 0.5 - a[0], ys + 0.5 - a[1]
    ab = b - a
    t = np.clip((px * ab[0] + py * ab[1]) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    d = np.hypot(px - t * ab[0], py - t * ab[1])
    cover = np.clip(r + 0.5 - d, 0.0, 1.0)
    shade = 0.55 + 0.45 * np.sqrt(np.clip(1.0 - (d / max(r, 1e-6)) ** 2, 0.0, 1.0))
    return cover, shade


def _paint_capsule(img: np.ndarray, a: np.ndarray, b: np.ndarray, r: float,
                   colour: np.ndarray) -> None:
    """Composite one shaded capsule of ``colour`` [C] over ``img`` [C, S, S] in place."""
    s = img.shape[-1]
    lo = np.floor(np.minimum(a, b) - r - 1).astype(int).clip(0, s)
    hi = np.ceil(np.maximum(a, b) + r + 1).astype(int).clip(0, s)
    if (hi <= lo).any():
        return
    cover, shade = _capsule_shade(a, b, r, (lo[0], lo[1], hi[0], hi[1]))
    view = img[:, lo[1]:hi[1], lo[0]:hi[0]]
    view *= 1.0 - cover[None]
    view += cover[None] * shade[None] * colour[:, None, None]


def render_scene(scene: Scene, layout: Layout, geom: InputGeometry,
                 rng: np.random.Generator) -> np.ndarray:
    """The input image [C, S, S] float32 of a scene, seen through ``geom``."""
    s = geom.size
    img = _background(rng, s)
    w, h = scene.image["width"], scene.image["height"]
    reg = scene.regions
    p = len(scene.joints)
    if p:
        palette = rng.uniform(0.2, 1.0, (int(rng.integers(1, 4)), CHANNELS))
        colour = palette[rng.integers(len(palette), size=p)] * rng.uniform(0.9, 1.1, (p, 1))
        face = _face_joint(layout)
        order = np.argsort(~reg.torso, kind="stable")  # the trunk first, limbs over it
        bottom = np.where(scene.labels > 0, scene.joints[..., 1], -np.inf).max(axis=1)
        for i in np.argsort(bottom):  # farthest (highest feet) first
            a, b = geom.to_input(reg.a[i]), geom.to_input(reg.b[i])
            r = np.maximum(THICKNESS * reg.radius[i] * geom.scale, 0.7)
            limb_colour = colour[i] * rng.uniform(0.85, 1.15, (len(r), CHANNELS))
            for c in order:
                if reg.valid[i, c]:
                    _paint_capsule(img, a[c], b[c], float(r[c]), limb_colour[c])
            ends = geom.to_input(scene.joints[i])
            for j in np.flatnonzero(scene.labels[i] > 0):  # where limbs bend
                _paint_capsule(img, ends[j], ends[j], JOINT_MARK * float(r.min()),
                               0.6 * colour[i])
            if face is not None and scene.labels[i, face] > 0:
                at = geom.to_input(scene.joints[i, face])
                head_r = max(HEAD * scene.height[i] * geom.scale, 0.8)
                _paint_capsule(img, at, at, head_r, colour[i])
                if not scene.facing_back[i]:  # a face: the person looks at the camera
                    _paint_capsule(img, at, at, 0.45 * head_r, 0.3 * colour[i])
    img = _occluders(img, rng, s)
    img = ndimage.gaussian_filter(img, (0, 0.6, 0.6)) + rng.normal(0.0, 0.03, img.shape)
    lo = np.floor(geom.to_input(np.zeros(2))).astype(int).clip(0, s)
    hi = np.ceil(geom.to_input(np.array([w, h], float))).astype(int).clip(0, s)
    out = np.zeros_like(img, dtype=np.float32)  # the padding of a letterboxed input
    out[:, lo[1]:hi[1], lo[0]:hi[0]] = img[:, lo[1]:hi[1], lo[0]:hi[0]]
    return out


def _occluders(img: np.ndarray, rng: np.random.Generator, s: int) -> np.ndarray:
    """A few random textured boxes over the image (things in front of people)."""
    for _ in range(int(rng.poisson(0.8))):
        w, h = rng.uniform(0.05, 0.25, 2) * s
        x, y = rng.uniform(0, s - w), rng.uniform(0, s - h)
        x0, y0, x1, y1 = int(x), int(y), int(x + w), int(y + h)
        tone = rng.uniform(0.0, 1.0, CHANNELS)[:, None, None]
        img[:, y0:y1, x0:x1] = tone + rng.normal(0.0, 0.05, (CHANNELS, y1 - y0, x1 - x0))
    return img
