"""Reuse checkpoints: load a module anywhere, and refuse data built with other settings."""

from __future__ import annotations

from pathlib import Path

from posegnn.models.module import PosegnnModule


def load_module(path: str | Path, map_location: str = "cpu") -> PosegnnModule:
    """Rebuild a trained module from its checkpoint alone, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    module = PosegnnModule.load_from_checkpoint(path, map_location=map_location)
    return module.eval()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_graph_compatible(trained: dict, current: dict, source: str | Path) -> None:
    """Raise if graphs built with ``current`` settings differ from those a checkpoint
    was trained on (features, normalization, candidates, edges)."""
    a, b = _flatten(trained), _flatten(current)
    ignored = {"match_threshold"}  # labels only; the network never sees them
    diff = sorted(k for k in a.keys() | b.keys() if k not in ignored and a.get(k) != b.get(k))
    if diff:
        details = ", ".join(f"graph.{k}: trained {a.get(k)!r}, now {b.get(k)!r}"
                            for k in diff[:6])
        raise ValueError(f"{source}: the checkpoint was trained on graphs built with other "
                         f"settings ({details}); rebuild the data with its settings "
                         "(posegnn-eval and posegnn-predict take them from the checkpoint)")
