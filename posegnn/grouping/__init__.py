"""Groupings: keypoint candidates (+ pair probabilities or ground truth) of one image in,
people out. ``build_grouping(name, **kwargs)`` makes one from a config."""

from __future__ import annotations

from posegnn.grouping.ae import AEGrouping
from posegnn.grouping.base import Grouping
from posegnn.grouping.gnn import GNNGrouping
from posegnn.grouping.oracle import OracleGrouping

GROUPINGS: dict[str, type[Grouping]] = {
    "gnn": GNNGrouping,
    "ae": AEGrouping,
    "oracle": OracleGrouping,
}


def build_grouping(name: str, **kwargs) -> Grouping:
    """Make the grouping ``name`` (gnn, ae or oracle) with its constructor kwargs."""
    try:
        cls = GROUPINGS[name]
    except KeyError:
        raise ValueError(f"unknown grouping {name!r}; known: {sorted(GROUPINGS)}") from None
    return cls(**kwargs)


__all__ = ["AEGrouping", "GNNGrouping", "Grouping", "OracleGrouping", "GROUPINGS",
           "build_grouping"]
