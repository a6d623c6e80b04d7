"""Reuse checkpoints: load a module anywhere, and refuse data built with other settings."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from posegnn.data.graph import GraphConfig, stored_graph
from posegnn.io import atomic_torch_save
from posegnn.models.module import PosegnnModule

if TYPE_CHECKING:
    from posegnn.data.datamodule import DataConfig

RUN_SETTINGS = "posegnn_run"  # the checkpoint entry of the run's data and graph settings
# Data settings that say where files live or how they are read, not what the data is.
DATA_KEYS_IGNORED = {"root", "cache_dir", "num_workers"}
GRAPH_KEYS_IGNORED = {"match_threshold"}  # labels only; the network never sees them


class SettingsMismatch(ValueError):
    """A checkpoint was trained with other data or graph settings than the run's."""


def load_module(path: str | Path, map_location: str = "cpu",
                layout: str | None = None) -> PosegnnModule:
    """Rebuild a trained module from its checkpoint alone, in eval mode; ``layout``: the
    data's keypoint layout, which must be the checkpoint's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    module = PosegnnModule.load_from_checkpoint(path, map_location=map_location)
    trained = module.hparams.get("layout")
    if layout is not None and trained is not None and trained != layout:
        raise SettingsMismatch(f"{path}: a {trained} model, but the data is {layout}; give a "
                               f"{layout} checkpoint, or leave ckpt_path out for the shipped "
                               f"{layout} model")
    return module.eval()


def store_person_scorer(path: str | Path, module: PosegnnModule) -> None:
    """Write ``module``'s fitted person scorer into the checkpoint at ``path`` (in
    place, atomically); everything else in the file stays as it was."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["state_dict"].update({f"person_scorer.{k}": v.cpu() for k, v in
                               module.person_scorer.state_dict().items()})
    atomic_torch_save(ckpt, path)


def run_folder(ckpt_path: str | Path) -> Path | None:
    """The run folder a ``<run>/checkpoints/*.ckpt`` belongs to, or None when the
    checkpoint lives elsewhere (a copy, a download)."""
    ckpt = Path(ckpt_path)
    run = ckpt.parent.parent
    if ckpt.parent.name == "checkpoints" and (run / ".hydra").is_dir():
        return run
    return None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differing_keys(trained: dict, current: dict, group: str,
                   ignored: set[str] = frozenset(), defaults: dict | None = None) -> list[str]:
    """``group.key: trained X, now Y`` for every setting that differs. A setting the
    checkpoint does not hold (it predates it) counts as its default from ``defaults``."""
    a, b = _flatten(trained), _flatten(current)
    for k, v in _flatten(defaults or {}).items():
        a.setdefault(k, v)
    keys = sorted(k for k in a.keys() | b.keys()
                  if k.split(".")[0] not in ignored and a.get(k) != b.get(k))
    return [f"{group}.{k}: trained {a.get(k)!r}, now {b.get(k)!r}" for k in keys]


def check_graph_compatible(trained: GraphConfig, current: GraphConfig,
                           source: str | Path) -> None:
    """Raise if graphs built with ``current`` settings differ from those a checkpoint
    was trained on (features, normalization, candidates, edges)."""
    diff = differing_keys(asdict(trained), asdict(current), "graph", GRAPH_KEYS_IGNORED)
    if diff:
        raise SettingsMismatch(
            f"{source}: the checkpoint was trained on graphs built with other settings "
            f"({', '.join(diff[:6])}); rebuild the data with its settings "
            "(posegnn-eval and posegnn-predict take them from the checkpoint)")


def resume_state(ckpt_path: str | Path) -> dict:
    """What a resume needs from a checkpoint: its epoch, graph settings and, for
    checkpoints written since they were stored, its data settings."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    stored = ckpt.get(RUN_SETTINGS) or {}
    # epochs whose training finished: a checkpoint written at an epoch's end resumes at
    # the next one, one written mid-epoch (a preempted job) within it
    progress = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    done = progress.get("current", {}).get("processed")
    return {"epoch": int(done if done is not None else ckpt.get("epoch", -1) + 1),
            "graph": ckpt.get("hyper_parameters", {}).get("graph") or stored.get("graph"),
            "data": stored.get("data")}


def check_resume(ckpt_path: str | Path, data: DataConfig, graph: GraphConfig,
                 allow: bool) -> list[str]:
    """Refuse to resume ``ckpt_path`` with other data or graph settings (naming every key
    that differs) unless ``allow``; returns the differences (logged when allowed)."""
    state = resume_state(ckpt_path)
    diff = []
    if state["data"] is not None:
        diff += differing_keys(state["data"], asdict(data), "data", DATA_KEYS_IGNORED,
                               asdict(type(data)()))
    if state["graph"] is not None:
        diff += differing_keys(stored_graph(state["graph"]), asdict(graph), "graph",
                               GRAPH_KEYS_IGNORED,
                               asdict(GraphConfig()))
    if diff and not allow:
        raise SettingsMismatch(
            f"{ckpt_path}: refusing to resume with other data or graph settings than the "
            f"checkpoint's:\n  " + "\n  ".join(diff) + "\nresume with the checkpoint's "
            "settings, start a new run with finetune_from=, or set resume_allow_changes=true "
            "to resume anyway")
    return diff
