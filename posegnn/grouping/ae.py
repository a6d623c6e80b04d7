"""Associative-embedding grouping (Newell et al. 2017; HigherHRNet's ``HeatmapParser``).

Joint types are visited in ``order`` (``layout``: the layout's ``ae_order``;
``higherhrnet``: the first K entries of HigherHRNet's COCO order, as its ``HeatmapParser``
runs on CrowdPose; ``index``: 0..K-1). The candidates of the first type found each
start a person. For every later type, candidates are matched to the existing people by
an optimal assignment on the cost ``round(|tag - mean tag of person|) * 100 - heat``
(or the plain distance when ``use_detection_val`` is off). A matched pair whose tag
distance is not below ``tag_threshold`` is rejected, and every rejected or unmatched
candidate starts a new person. Tags may be D-dimensional (L2 distance).

Like HigherHRNet, only candidates with heat above ``detection_threshold`` are used, at
most ``max_people`` per joint type (the highest), and only the first ``max_people``
people are offered to the assignment; with ``ignore_too_much`` a joint type is skipped
once ``max_people`` people exist. HigherHRNet's two later steps, ``adjust`` (quarter-pixel
positions, off) and ``refine`` (missing joints filled from the maps, on), are settings
shared with the other groupings (:mod:`posegnn.grouping.refine`); they read the image's
maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from posegnn.choices import one_of
from posegnn.grouping.base import Grouping
from posegnn.layouts import Layout
from posegnn.types import Candidates, People

UNMATCHED_COST = 1e10


@dataclass
class AEGroupingConfig:
    """Settings of the associative-embedding baseline (``grouping.ae``), HigherHRNet's
    defaults; the CLI, the Python API and :class:`AEGrouping` all take them from here."""

    tag_threshold: float = 1.0  # largest tag distance to join a person
    order: str = "layout"  # joint types' order: layout | higherhrnet | index (ORDERS)
    max_people: int = 30
    detection_threshold: float = 0.1  # candidates below this heat are ignored
    use_detection_val: bool = True  # matching cost: round(tag distance) * 100 - heat
    ignore_too_much: bool = False  # drop candidates once max_people is reached
    min_keypoints: int = 1
    # HigherHRNet's steps after grouping, which read the maps (posegnn.grouping.refine):
    # quarter-pixel positions instead of the candidates' finer offsets (no gain, RESULTS.md),
    # and missing joints filled from the heatmaps near the person's mean tag (a gain)
    adjust: bool = False
    refine: bool = True

    def __post_init__(self) -> None:
        one_of("grouping.ae.order", self.order, ORDERS)


# HigherHRNet's HeatmapParser visits COCO's joints in this order and, for fewer joints
# (CrowdPose's 14), takes its first K entries
HIGHERHRNET_ORDER = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)
ORDERS = ("layout", "higherhrnet", "index")


def joint_order(order: str, layout: Layout | None, num_joints: int) -> tuple[int, ...]:
    """The joint types' visiting order named by ``order`` (one of :data:`ORDERS`)."""
    one_of("grouping.ae.order", order, ORDERS)
    if order == "higherhrnet":
        if num_joints > len(HIGHERHRNET_ORDER):
            raise ValueError(f"grouping.ae.order=higherhrnet covers at most "
                             f"{len(HIGHERHRNET_ORDER)} joints, the layout has {num_joints}")
        return HIGHERHRNET_ORDER[:num_joints]
    if order == "layout" and layout is not None:
        return tuple(layout.ae_order)
    return tuple(range(num_joints))


class AEGrouping(Grouping):
    """Associative-embedding grouping on candidate tags; needs ``layout`` or ``num_joints``.

    ``ae_order`` (an explicit permutation) overrides ``order``. Person score: mean
    heat over all K joints, missing joints counting 0, taken before ``refine`` fills any
    (as HigherHRNet scores people).
    """

    name = "ae"
    Config = AEGroupingConfig

    def __init__(self, settings: AEGroupingConfig | None = None, *,
                 layout: Layout | str | None = None, num_joints: int | None = None,
                 ae_order: tuple[int, ...] | list[int] | None = None) -> None:
        super().__init__(settings, layout=layout, num_joints=num_joints)
        if ae_order is None:
            ae_order = joint_order(self.settings.order, self.layout, self.num_joints)
        self.ae_order = tuple(int(j) for j in ae_order)
        if sorted(self.ae_order) != list(range(self.num_joints)):
            raise ValueError(
                f"ae_order {self.ae_order} is not a permutation of 0..{self.num_joints - 1}")

    def _group(self, cands: Candidates, *, pair_index: np.ndarray | None,
               prob: np.ndarray | None, person: np.ndarray | None,
               vertex_prob: np.ndarray | None) -> People:
        assignment = np.full(len(cands), -1, np.int64)
        tag_sums: list[np.ndarray] = []  # per person: sum of member tags
        counts: list[int] = []
        for joint in self.ae_order:
            idx = self._joint_candidates(cands, joint)
            if len(idx) == 0:
                continue
            if not tag_sums:
                matched = np.full(len(idx), -1, np.int64)
            elif self.settings.ignore_too_much and len(tag_sums) >= self.settings.max_people:
                continue
            else:
                grouped = min(len(tag_sums), self.settings.max_people)
                means = np.stack(tag_sums[:grouped]) / np.asarray(counts[:grouped])[:, None]
                matched = self._match(cands.tag[idx], cands.score[idx], means)
            for cand, who in zip(idx, matched, strict=True):
                if who < 0:
                    who = len(tag_sums)
                    tag_sums.append(np.zeros(cands.tag.shape[1], np.float64))
                    counts.append(0)
                assignment[cand] = who
                tag_sums[who] += cands.tag[cand]
                counts[who] += 1
        return self._people(cands, assignment)

    def _joint_candidates(self, cands: Candidates, joint: int) -> np.ndarray:
        """Indices of the usable candidates of one joint type, highest heat first."""
        usable = cands.score > self.settings.detection_threshold
        idx = np.flatnonzero((cands.joint == joint) & usable)
        idx = idx[np.argsort(-cands.score[idx], kind="stable")]
        return idx[: self.settings.max_people]

    def _match(self, tags: np.ndarray, heat: np.ndarray, means: np.ndarray) -> np.ndarray:
        """Person index per candidate, -1 where it must start a new person."""
        dist = np.linalg.norm(tags[:, None, :] - means[None, :, :], axis=2)
        cost = (np.round(dist) * 100 - heat[:, None] if self.settings.use_detection_val
                else dist.copy())
        n_cand, n_people = cost.shape
        if n_cand > n_people:  # pad so every candidate gets a column, as HigherHRNet does
            cost = np.hstack([cost, np.full((n_cand, n_cand - n_people), UNMATCHED_COST)])
        rows, cols = linear_sum_assignment(cost)
        matched = np.full(n_cand, -1, np.int64)
        ok = cols < n_people
        rows, cols = rows[ok], cols[ok]
        ok = dist[rows, cols] < self.settings.tag_threshold
        matched[rows[ok]] = cols[ok]
        return matched
