"""Every default is written once: a group file in conf/ holds only what differs from its
schema (the dataclasses in posegnn/), never a copy of a schema default that could drift,
and the classes the settings reach take their defaults from the same schema."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from posegnn.config import CONF_DIR, TrainConfig
from posegnn.grouping.ae import AEGrouping, AEGroupingConfig
from posegnn.grouping.gnn import GNNGrouping, GNNGroupingConfig
from posegnn.grouping.oracle import OracleGrouping, OracleGroupingConfig

GROUPS = ("data", "graph", "model", "optimizer", "scheduler", "trainer", "logger",
          "callbacks", "grouping", "paths")


def _leaves(node: DictConfig, prefix: str = ""):
    for key in node:
        if OmegaConf.is_interpolation(node, key):
            continue  # wiring to another setting, not a default
        value = node[key]
        if isinstance(value, DictConfig):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _composed(path: Path) -> DictConfig:
    """A group file merged over the files of its own group that it lists as defaults."""
    own = OmegaConf.load(path)
    merged = OmegaConf.create()
    for parent in own.pop("defaults", None) or []:
        if isinstance(parent, str) and parent != "_self_":
            merged = OmegaConf.merge(merged, _composed(path.parent / f"{parent}.yaml"))
    return OmegaConf.merge(merged, own)


@pytest.mark.parametrize("path", [p for g in GROUPS for p in sorted((Path(CONF_DIR) / g).glob(
    "*.yaml"))], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_group_file_repeats_no_schema_default(path):
    """What a file sets differs from what it would get without it: the schema's default,
    merged with the files of its own group it builds on (``defaults: [edgeconv]``)."""
    own = OmegaConf.load(path)
    base = OmegaConf.structured(TrainConfig)[path.parent.name]
    for parent in own.pop("defaults", None) or []:
        if isinstance(parent, str) and parent != "_self_":
            base = OmegaConf.merge(base, _composed(path.parent / f"{parent}.yaml"))
    repeats = [f"{key}: {value}" for key, value in _leaves(own)
               if OmegaConf.select(base, key, default=object()) == value]
    assert not repeats, (f"{path} repeats its schema's defaults ({', '.join(repeats)}): "
                         "keep them in the dataclass only")


@pytest.mark.parametrize("cls, schema", [(GNNGrouping, GNNGroupingConfig),
                                         (AEGrouping, AEGroupingConfig),
                                         (OracleGrouping, OracleGroupingConfig)])
def test_groupings_take_every_setting_and_default_from_their_schema(cls, schema):
    """A grouping takes its settings dataclass whole: no setting is listed again as a
    parameter, so a new setting is one line of the schema."""
    params = set(inspect.signature(cls).parameters)
    assert cls.Config is schema and not params & {f.name for f in fields(schema)}
    assert cls(num_joints=14).settings == schema()
    assert cls(schema(min_keypoints=3), num_joints=14).settings.min_keypoints == 3
