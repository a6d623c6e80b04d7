"""Keypoint layouts: joint names, OKS sigmas, limbs and left/right pairs.

A layout is recognised from a category's keypoint names; any other layout must come
with its sigmas (see :func:`layout_from_category`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Layout:
    """A keypoint layout. Indices are 0-based, in map (channel) order."""

    name: str
    joints: tuple[str, ...]
    sigmas: tuple[float, ...]
    limbs: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    # Order in which associative-embedding grouping visits joint types.
    ae_order: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        k = len(self.joints)
        if len(self.sigmas) != k:
            raise ValueError(f"layout {self.name!r}: {len(self.sigmas)} sigmas for {k} joints")
        for a, b in self.limbs:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"layout {self.name!r}: limb ({a}, {b}) outside 0..{k - 1}")
        if not self.ae_order:
            object.__setattr__(self, "ae_order", tuple(range(k)))

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def sigma_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    def flip_permutation(self) -> np.ndarray:
        """Channel permutation that swaps left and right joints."""
        perm = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def limb_matrix(self) -> np.ndarray:
        """[K, K] integer matrix: limb index + 1 for joint pairs joined by a limb, else 0."""
        m = np.zeros((self.num_joints, self.num_joints), dtype=np.int64)
        for i, (a, b) in enumerate(self.limbs):
            m[a, b] = m[b, a] = i + 1
        return m


CROWDPOSE14 = Layout(
    name="crowdpose14",
    joints=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
        "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
        "right_ankle", "head", "neck",
    ),
    # crowdposetools' falloff constants
    sigmas=tuple(s / 10.0 for s in (
        0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89, 0.79, 0.79)),
    limbs=(
        (12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7),
        (6, 7), (6, 8), (8, 10), (7, 9), (9, 11), (0, 1),
    ),
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    ae_order=(12, 13, 0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11),
)

COCO17 = Layout(
    name="coco17",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    sigmas=tuple(s / 10.0 for s in (
        0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07,
        0.87, 0.87, 0.89, 0.89)),
    limbs=tuple((a - 1, b - 1) for a, b in (
        (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
        (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # HigherHRNet's HeatmapParser joint order for COCO
    ae_order=(0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16),
)

LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (CROWDPOSE14, COCO17)}


def get_layout(name: str) -> Layout:
    """Return a built-in layout by name."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; known: {sorted(LAYOUTS)}") from None


def layout_from_category(category: dict, sigmas: list[float] | None = None,
                         source: str = "annotations") -> Layout:
    """Recognise the layout of a COCO category from its keypoint names.

    An unknown set of names needs ``sigmas``; its limbs come from the category's
    1-based ``skeleton``.
    """
    names = tuple(category.get("keypoints") or ())
    if not names:
        raise ValueError(f"{source}: category {category.get('id')} has no 'keypoints' names")
    for layout in LAYOUTS.values():
        if names == layout.joints:
            return layout
    if sigmas is None:
        raise ValueError(
            f"{source}: unknown keypoint layout with {len(names)} joints {list(names)[:4]}...; "
            "it is neither crowdpose14 nor coco17, so pass its OKS sigmas")
    skeleton = category.get("skeleton") or []
    limbs = tuple((int(a) - 1, int(b) - 1) for a, b in skeleton)
    return Layout(name="custom", joints=names, sigmas=tuple(float(s) for s in sigmas),
                  limbs=limbs)
