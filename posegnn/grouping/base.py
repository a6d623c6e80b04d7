"""The interface shared by every grouping, and helpers to turn an assignment into people.

A grouping takes the candidates of one image (plus, depending on the method, pair
probabilities or ground-truth persons) and returns :class:`~posegnn.types.People`.

Every grouping works on the candidates in a canonical order (by joint type, position,
score, tag), so that the input order of the candidates never changes the people found.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from posegnn.data.maps import ImageMaps
from posegnn.grouping.refine import refine_people
from posegnn.layouts import Layout, get_layout
from posegnn.types import Candidates, People


def resolve_layout(layout: Layout | str | None,
                   num_joints: int | None) -> tuple[Layout | None, int]:
    """Return ``(layout, num_joints)`` from either argument; one of them is required."""
    if isinstance(layout, str):
        layout = get_layout(layout)
    if layout is not None:
        if num_joints is not None and num_joints != layout.num_joints:
            raise ValueError(f"num_joints={num_joints} disagrees with layout {layout.name!r} "
                             f"({layout.num_joints} joints)")
        return layout, layout.num_joints
    if num_joints is None or int(num_joints) < 1:
        raise ValueError("a grouping needs `layout` (a name or Layout) or `num_joints` >= 1")
    return None, int(num_joints)


def canonical_order(cands: Candidates) -> np.ndarray:
    """Permutation sorting candidates by joint type, then x, y, score and tag values."""
    keys = [cands.tag[:, d] for d in range(cands.tag.shape[1] - 1, -1, -1)]
    keys += [cands.score, cands.pos[:, 1], cands.pos[:, 0], cands.joint]
    return np.lexsort(keys) if len(cands) else np.zeros(0, np.int64)


def subset(cands: Candidates, order: np.ndarray) -> Candidates:
    """The candidates taken in ``order`` (a permutation or a selection)."""
    return Candidates(cands.pos[order], cands.joint[order], cands.score[order], cands.tag[order])


def heat_score(keypoints: np.ndarray) -> np.ndarray:
    """Mean heat over all K joints, missing joints counting 0 (HigherHRNet's person score)."""
    return keypoints[:, :, 2].mean(axis=1) if len(keypoints) else np.zeros(0, np.float32)


def people_from_assignment(cands: Candidates, assignment: np.ndarray, num_joints: int,
                           min_keypoints: int = 1) -> People:
    """Build people from a per-candidate person id (-1 for none).

    Person ids are renumbered 0..P-1 in order of first appearance; people with fewer than
    ``min_keypoints`` candidates are dropped (their candidates become -1). Each person must
    hold at most one candidate per joint type. Scores are :func:`heat_score`.
    """
    assignment = np.asarray(assignment, dtype=np.int64).copy()
    ids, first, counts = np.unique(assignment, return_index=True, return_counts=True)
    keep = (ids >= 0) & (counts >= max(int(min_keypoints), 1))
    kept = ids[keep][np.argsort(first[keep], kind="stable")]
    new_id = np.full(int(ids.max(initial=-1)) + 2, -1, np.int64)
    new_id[kept] = np.arange(len(kept))
    assignment = np.where(assignment >= 0, new_id[np.maximum(assignment, 0)], -1)
    keypoints = np.zeros((len(kept), num_joints, 3), np.float32)
    members = np.flatnonzero(assignment >= 0)
    slots = assignment[members] * num_joints + cands.joint[members]
    if len(np.unique(slots)) != len(slots):
        raise ValueError("a person holds two candidates of one joint type")
    flat = keypoints.reshape(-1, 3)
    flat[slots, :2] = cands.pos[members]
    flat[slots, 2] = cands.score[members]
    return People(keypoints, heat_score(keypoints).astype(np.float32), assignment)


def sort_people(people: People) -> People:
    """People by descending score (ties by keypoints), with the assignment renumbered."""
    if len(people) == 0:
        return people
    flat = people.keypoints.reshape(len(people), -1)
    keys = [flat[:, c] for c in range(flat.shape[1] - 1, -1, -1)] + [-people.scores]
    order = np.lexsort(keys)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    a = people.assignment
    assignment = np.where(a >= 0, rank[np.maximum(a, 0)], -1)
    return People(people.keypoints[order], people.scores[order], assignment)


def _per_candidate(name: str, values: np.ndarray | None, dtype, order: np.ndarray
                   ) -> np.ndarray | None:
    """One value per candidate, taken in the canonical ``order`` (None stays None)."""
    if values is None:
        return None
    values = np.asarray(values, dtype=dtype).reshape(-1)
    if len(values) != len(order):
        raise ValueError(f"`{name}` has {len(values)} entries for {len(order)} candidates")
    return values[order]


class Grouping(ABC):
    """Candidates (+ pair probabilities, + ground truth) of one image in, people out.

    A grouping holds its settings dataclass (``Config``) as ``settings``. Subclasses
    implement :meth:`_group` on candidates given in canonical order; this class handles
    the reordering, applies HigherHRNet's ``adjust`` and ``refine`` when they are on and
    the image's ``maps`` are given (:mod:`posegnn.grouping.refine`), and returns people
    sorted by descending score.
    """

    name = "base"
    Config: type

    def __init__(self, settings=None, *, layout: Layout | str | None = None,
                 num_joints: int | None = None) -> None:
        self.layout, self.num_joints = resolve_layout(layout, num_joints)
        self.settings = self.Config() if settings is None else settings
        if not isinstance(self.settings, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, "
                            f"not {type(self.settings).__name__}")

    @property
    def needs_maps(self) -> bool:
        """Whether :meth:`group` reads the image's maps (``adjust`` or ``refine`` is on)."""
        return self.settings.adjust or self.settings.refine

    def group(self, cands: Candidates, *, pair_index: np.ndarray | None = None,
              prob: np.ndarray | None = None, person: np.ndarray | None = None,
              vertex_prob: np.ndarray | None = None, maps: ImageMaps | None = None
              ) -> People:
        """Assemble people from ``cands``; see the subclass for which inputs it needs.
        ``maps`` (the image's heatmaps and tags) is what ``adjust`` and ``refine`` read:
        without it they are left out (the evaluation runner always passes it)."""
        n = len(cands)
        if n == 0:
            return People.empty(self.num_joints, 0)
        if cands.joint.min() < 0 or cands.joint.max() >= self.num_joints:
            raise ValueError(f"candidate joint types outside 0..{self.num_joints - 1}")
        order = canonical_order(cands)
        rank = np.empty_like(order)
        rank[order] = np.arange(n)
        if pair_index is not None:
            pair_index = np.asarray(pair_index, dtype=np.int64).reshape(2, -1)
            if pair_index.size and (pair_index.min() < 0 or pair_index.max() >= n):
                raise ValueError(f"pair_index outside 0..{n - 1}")
            pair_index = rank[pair_index]
        person = _per_candidate("person", person, np.int64, order)
        vertex_prob = _per_candidate("vertex_prob", vertex_prob, np.float64, order)
        people = self._group(subset(cands, order), pair_index=pair_index, prob=prob,
                             person=person, vertex_prob=vertex_prob)
        assignment = np.full(n, -1, np.int64)
        assignment[order] = people.assignment
        people = People(people.keypoints, people.scores, assignment)
        if self.needs_maps and maps is not None:
            people = refine_people(people, cands, maps, adjust=self.settings.adjust,
                                   refine=self.settings.refine)
        return sort_people(people)

    __call__ = group

    def _people(self, cands: Candidates, assignment: np.ndarray) -> People:
        """:func:`people_from_assignment` with this grouping's ``min_keypoints``."""
        return people_from_assignment(cands, assignment, self.num_joints,
                                      self.settings.min_keypoints)

    @abstractmethod
    def _group(self, cands: Candidates, *, pair_index: np.ndarray | None,
               prob: np.ndarray | None, person: np.ndarray | None,
               vertex_prob: np.ndarray | None) -> People:
        """Group candidates given in canonical order."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r}, num_joints={self.num_joints})"
