"""Groupings: keypoint candidates (+ pair probabilities or ground truth) of one image in,
people out. ``build_grouping(name, settings, layout=...)`` makes one from its config."""

from __future__ import annotations

import dataclasses

from posegnn.grouping.ae import AEGrouping
from posegnn.grouping.base import Grouping
from posegnn.grouping.gnn import GNNGrouping
from posegnn.grouping.oracle import OracleGrouping
from posegnn.layouts import Layout

GROUPINGS: dict[str, type[Grouping]] = {
    "gnn": GNNGrouping,
    "ae": AEGrouping,
    "oracle": OracleGrouping,
}


def build_grouping(name: str, settings=None, *, layout: Layout | str | None = None,
                   num_joints: int | None = None, **extra) -> Grouping:
    """The grouping ``name`` (gnn, ae or oracle) with its settings dataclass
    (``GNNGroupingConfig``, ...; None: the defaults). ``extra`` holds the grouping's own
    arguments (gnn's ``scorer``, ae's ``ae_order``) and settings that replace fields of
    ``settings`` (``decoder="greedy"``), checked as the dataclass checks them."""
    try:
        cls = GROUPINGS[name]
    except KeyError:
        raise ValueError(f"unknown grouping {name!r}; known: {sorted(GROUPINGS)}") from None
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    settings = dataclasses.replace(settings if settings is not None else cls.Config(),
                                   **{k: v for k, v in extra.items() if k in fields})
    own = {k: v for k, v in extra.items() if k not in fields}
    return cls(settings, layout=layout, num_joints=num_joints, **own)


__all__ = ["AEGrouping", "GNNGrouping", "Grouping", "OracleGrouping", "GROUPINGS",
           "build_grouping"]
