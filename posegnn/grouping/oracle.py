"""Oracle grouping: candidates assigned by ground truth, the ceiling these detections allow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posegnn.grouping.base import Grouping
from posegnn.types import Candidates, People


@dataclass
class OracleGroupingConfig:
    """Settings of the oracle (``grouping.oracle``): HigherHRNet's steps after grouping,
    so that the ceiling is measured with the same refinement as ae and gnn."""

    min_keypoints: int = 1
    adjust: bool = False
    refine: bool = True


class OracleGrouping(Grouping):
    """Each candidate joins the ground-truth person it matches (``person``, -1 for none).

    Per person and joint type only the highest-heat candidate is kept. The person score
    is the mean heat over all joints (missing joints count 0), as for the other groupings.
    """

    name = "oracle"
    Config = OracleGroupingConfig

    def _group(self, cands: Candidates, *, pair_index: np.ndarray | None,
               prob: np.ndarray | None, person: np.ndarray | None,
               vertex_prob: np.ndarray | None) -> People:
        if person is None:
            raise ValueError("OracleGrouping needs `person`, the ground-truth person per candidate")
        assignment = np.full(len(cands), -1, np.int64)
        idx = np.flatnonzero(person >= 0)
        # best candidate per (person, joint): sort by slot, then by descending score
        slot = person[idx] * self.num_joints + cands.joint[idx]
        order = np.lexsort((-cands.score[idx], slot))
        first = np.ones(len(order), bool)
        first[1:] = slot[order][1:] != slot[order][:-1]
        best = idx[order[first]]
        assignment[best] = person[best]
        return self._people(cands, assignment)
