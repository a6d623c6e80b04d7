"""Groupings: keypoint candidates (+ pair probabilities or ground truth) of one image in,
people out. ``build_grouping(name, settings, **kwargs)`` makes one from its config."""

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


def build_grouping(name: str, settings=None, **kwargs) -> Grouping:
    """Make the grouping ``name`` (gnn, ae or oracle) from its settings dataclass
    (``GNNGroupingConfig``, ``AEGroupingConfig``; None: the defaults) and constructor
    kwargs (``layout=``, or settings of its own)."""
    try:
        cls = GROUPINGS[name]
    except KeyError:
        raise ValueError(f"unknown grouping {name!r}; known: {sorted(GROUPINGS)}") from None
    return cls(**(vars(settings) if settings is not None else {}), **kwargs)


__all__ = ["AEGrouping", "GNNGrouping", "Grouping", "OracleGrouping", "GROUPINGS",
           "build_grouping"]
