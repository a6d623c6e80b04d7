"""Read a multirun folder: every job's status, overrides, resolved config, metrics and
per-epoch curves."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from omegaconf import OmegaConf

from posegnn.callbacks.job_status import STATUS_FILE


@dataclass
class Job:
    """One job folder of a sweep, as far as it got."""

    name: str
    path: Path
    status: str  # completed | failed | unknown
    error: str | None = None
    overrides: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)  # flat: "optimizer.lr" -> 0.001
    metrics: dict = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)  # "epoch", "val/loss", ...

    @property
    def ok(self) -> bool:
        return self.status == "completed" and bool(self.metrics)

    def metric(self, key: str) -> float | None:
        return _finite(self.metrics.get(key))

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of a per-epoch series, where it was logged."""
        epoch = np.asarray(self.curves.get("epoch", []), dtype=np.float64)
        y = np.asarray(self.curves.get(key, [np.nan] * len(epoch)), dtype=np.float64)
        keep = np.isfinite(y)
        return epoch[keep], y[keep]

    # summary numbers of the jobs table -------------------------------------------------
    def best_val_loss(self) -> tuple[float | None, int | None]:
        epoch, y = self.curve("val/loss")
        if len(y):
            i = int(np.argmin(y))
            return float(y[i]), int(epoch[i])
        return self.metric("val/loss"), None

    def last(self, key: str) -> float | None:
        _, y = self.curve(key)
        return float(y[-1]) if len(y) else self.metric(key)

    def epochs(self) -> int | None:
        value = self.metric("epochs")
        if value is not None:
            return int(value)
        epoch, _ = self.curve("train/loss")
        return int(epoch.max()) + 1 if len(epoch) else None


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _flatten(tree, prefix: str = "") -> dict:
    out: dict = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(tree, list):
        out[prefix[:-1]] = json.dumps(tree)
    else:
        out[prefix[:-1]] = tree
    return out


def _read_config(path: Path) -> dict:
    """The job's composed config, flattened, interpolations resolved where they can be."""
    if not path.is_file():
        return {}
    cfg = OmegaConf.load(path)
    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. a resolver (${now:...}) this process does not know
        tree = OmegaConf.to_container(cfg, resolve=False)
    return _flatten(tree)


def _read_curves(job_dir: Path) -> dict[str, list[float]]:
    """Per-epoch train/ and val/ series from Lightning's CSVLogger file (rows merged by
    epoch; the learning-rate rows without an epoch and the test row are left out)."""
    path = job_dir / "csv" / "metrics.csv"
    if not path.is_file():
        found = sorted(p for p in job_dir.rglob("metrics.csv") if "wandb" not in p.parts)
        if not found:
            return {}
        path = found[0]
    by_epoch: dict[int, dict[str, float]] = defaultdict(dict)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(float(row.get("epoch") or ""))
            except ValueError:
                continue
            for key, value in row.items():
                if key and key.startswith(("train/", "val/")) and value not in ("", None):
                    number = _finite(value)
                    if number is not None:
                        by_epoch[epoch][key] = number
    epochs = sorted(e for e, values in by_epoch.items() if values)
    keys = sorted({k for e in epochs for k in by_epoch[e]})
    curves: dict[str, list[float]] = {"epoch": [float(e) for e in epochs]}
    for key in keys:
        curves[key] = [by_epoch[e].get(key, math.nan) for e in epochs]
    return curves


def _read_overrides(job_dir: Path, status: dict) -> list[str]:
    if status.get("overrides") is not None:
        return [str(o) for o in status["overrides"]]
    path = job_dir / ".hydra" / "overrides.yaml"
    if path.is_file():
        return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]
    return []


def _read_json(path: Path, notes: list[str]) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as e:
        notes.append(f"{path}: unreadable ({e})")
        return {}


def load_job(job_dir: str | Path) -> Job:
    """Everything a job folder holds; a missing or broken file makes a note, not a crash."""
    job_dir = Path(job_dir)
    notes: list[str] = []
    status = _read_json(job_dir / STATUS_FILE, notes)
    metrics = _read_json(job_dir / "metrics.json", notes)
    state = status.get("status")
    if state not in ("completed", "failed"):
        state = "completed" if metrics else "unknown"
        if not metrics:
            notes.append("no job_status.json and no metrics.json: the job was killed, "
                         "is still running, or never started")
    elif state == "completed" and not metrics:
        notes.append("completed, but metrics.json is missing")
    error = status.get("error")
    if notes:
        error = "; ".join([error, *notes] if error else notes)
    return Job(name=job_dir.name, path=job_dir, status=state, error=error,
               overrides=_read_overrides(job_dir, status),
               config=_read_config(job_dir / ".hydra" / "config.yaml"), metrics=metrics,
               curves=_read_curves(job_dir))


def _is_job_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in
                                 (STATUS_FILE, "metrics.json", ".hydra"))


def _job_order(path: Path) -> tuple[int, int | str]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def load_sweep(sweep_dir: str | Path) -> list[Job]:
    """The jobs of a multirun folder, by job number (a single run folder is one job)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: not a directory (expected a multirun folder)")
    dirs = sorted((p for p in sweep_dir.iterdir() if _is_job_dir(p)), key=_job_order)
    if not dirs and _is_job_dir(sweep_dir):
        dirs = [sweep_dir]
    if not dirs:
        raise FileNotFoundError(f"{sweep_dir}: no job folders (none holds {STATUS_FILE}, "
                                "metrics.json or .hydra/)")
    return [load_job(d) for d in dirs]
