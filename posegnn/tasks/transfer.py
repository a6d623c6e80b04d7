"""``posegnn-transfer``: train on one world, test on every other, one matrix.

``mode=cross`` trains a model on each world's train split and tests it on every world's
test split; ``mode=leave_one_out`` trains on a mix of all worlds but one and tests on the
one left out. ``ckpt_path`` adds a row for a given checkpoint (``shipped``: the model
shipped for the layout), tested with no training. Each cell holds the gap closed on AP
and on AP_hard, ``(gnn - ae) / (oracle - ae)``, and the three groupings' AP.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from posegnn.choices import SettingError, one_of
from posegnn.config import EvalConfig, TrainConfig
from posegnn.io import write_json, write_metrics
from posegnn.tasks.worlds import WorldConfig, mixed_dataset, world_split

log = logging.getLogger(__name__)
MODES = ("cross", "leave_one_out")
MIXES = ("equal", "all")
SHIPPED = "shipped"


@dataclass
class TransferConfig(TrainConfig):
    """``posegnn-transfer``: every training setting of ``posegnn-train`` (``model=``,
    ``graph=``, ``trainer.max_epochs=``, ...), applied to each row's training, and the
    worlds. ``ckpt_path`` here is a checkpoint to test as an extra row, not a resume."""

    mode: str = "cross"
    poses: str | None = None  # the real-pose file the worlds of conf/world/ refer to
    worlds: dict[str, WorldConfig] = field(default_factory=dict)
    use: list[str] = field(default_factory=list)  # the worlds of the matrix, in order
    train_on: list[str] = field(default_factory=list)  # rows to train; [] = all of ``use``
    # leave_one_out: ``equal`` takes num_train / k images of each of the k worlds mixed
    # (a mixed run costs what one world's does), ``all`` every training image of each
    mix: str = "equal"
    ckpt_name: str | None = None  # the extra row's name (default: the file's name)

    def __post_init__(self) -> None:
        one_of("mode", self.mode, MODES)
        one_of("mix", self.mix, MIXES)
        for name in [*self.use, *self.train_on]:
            if name not in self.worlds:
                raise SettingError(f"world {name!r} is not defined (worlds: "
                                   f"{', '.join(sorted(self.worlds))})")
        if not self.use:
            raise SettingError("use=[...] names no world")
        if set(self.train_on) - set(self.use):
            raise SettingError(f"train_on={self.train_on}: every row must be a world of "
                               f"use={self.use}")


@dataclass
class Row:
    """One training of the matrix: its name, its checkpoint, the worlds it is tested on."""

    name: str
    ckpt: str
    tests: list[str]


def gap_closed(gnn: float | None, ae: float | None, oracle: float | None) -> float | None:
    """(gnn - ae) / (oracle - ae); None where the oracle does not beat ae."""
    if None in (gnn, ae, oracle) or oracle - ae <= 1e-9:
        return None
    return (gnn - ae) / (oracle - ae)


def _train_config(cfg: TransferConfig, train_dir: Path) -> TrainConfig:
    base = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig)}
    data = replace(cfg.data, kind="maps", train=str(train_dir), val=None, test=None)
    return TrainConfig(**{**base, "data": data, "ckpt_path": None, "test": False})


def _best_checkpoint(run: Path) -> Path:
    best = sorted((run / "checkpoints").glob("best-*.ckpt"))
    return best[-1] if best else run / "checkpoints" / "last.ckpt"


def train_row(cfg: TransferConfig, name: str, train_dir: Path, out_dir: Path) -> str:
    """Train one row's model on ``train_dir`` (in ``out_dir/train/<name>``); its best
    checkpoint. A finished row of an earlier run in the same folder is reused."""
    from posegnn.tasks.train import train

    run = out_dir / "train" / name
    if not (run / "metrics.json").is_file():
        log.info("training row %s on %s", name, train_dir)
        train(_train_config(cfg, train_dir), run, [f"transfer_row={name}"])
    return str(_best_checkpoint(run))


def evaluate_cell(cfg: TransferConfig, test_dir: Path, out: Path, ckpt: str | None,
                  groupings: list[str]) -> dict[str, float]:
    """metrics.json of ``posegnn-eval`` on a test split (kept: a rerun reads it)."""
    import json

    from posegnn.tasks.evaluate import evaluate

    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    data = replace(cfg.data, kind="maps", train=None, val=None, test=str(test_dir))
    ecfg = EvalConfig(paths=cfg.paths, progress=cfg.progress, threads=cfg.threads,
                      seed=cfg.seed, ckpt_path=ckpt, split="test", data=data,
                      graph=cfg.graph, grouping=replace(cfg.grouping, run=groupings))
    out.mkdir(parents=True, exist_ok=True)
    return evaluate(ecfg, out)


def plan_rows(cfg: TransferConfig, splits: dict[str, dict[str, Path]],
              out_dir: Path) -> list[Row]:
    """Train every row of the mode (or reuse it) and say what each is tested on."""
    rows = []
    train_on = cfg.train_on or cfg.use
    for name in train_on:
        if cfg.mode == "cross":
            ckpt = train_row(cfg, name, splits[name]["train"], out_dir)
            rows.append(Row(name, ckpt, list(cfg.use)))
            continue
        others = [w for w in cfg.use if w != name]
        if not others:
            raise SettingError("mode=leave_one_out needs two worlds at least")
        parts = {}
        for w in others:
            n = cfg.worlds[w].num_train
            if cfg.mix == "equal":
                n = math.ceil(sum(cfg.worlds[o].num_train for o in others) / len(others)
                              / len(others))
            parts[w] = (splits[w]["train"], n)
        mix = mixed_dataset(parts, cfg.paths.data_dir)
        ckpt = train_row(cfg, f"all_but_{name}", mix, out_dir)
        rows.append(Row(f"all but {name}", ckpt, [name]))
    if cfg.ckpt_path:
        from posegnn.pretrained import shipped_checkpoint

        layout = cfg.worlds[cfg.use[0]].layout
        ckpt = str(shipped_checkpoint(layout)) if cfg.ckpt_path == SHIPPED else cfg.ckpt_path
        name = cfg.ckpt_name or (f"{SHIPPED} {layout}" if cfg.ckpt_path == SHIPPED
                                 else Path(ckpt).name)
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt}: no such checkpoint")
        rows.append(Row(name, ckpt, list(cfg.use)))
    return rows


def run_transfer(cfg: TransferConfig, out_dir: str | Path) -> dict:
    """The whole job: worlds written, rows trained, every cell tested; writes
    ``transfer.json``, ``transfer.md`` and ``metrics.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {name: {split: world_split(name, cfg.worlds[name], split, cfg.paths.data_dir,
                                        cfg.progress) for split in ("train", "test")}
              for name in cfg.use}
    rows = plan_rows(cfg, splits, out_dir)
    baselines = {w: evaluate_cell(cfg, splits[w]["test"], out_dir / "eval" / "baselines" / w,
                                  None, ["ae", "oracle"]) for w in cfg.use}
    cells: dict[str, dict[str, dict]] = {}
    for row in rows:
        for w in row.tests:
            gnn = evaluate_cell(cfg, splits[w]["test"],
                                out_dir / "eval" / row.name.replace(" ", "_") / w,
                                row.ckpt, ["gnn"])
            cells.setdefault(row.name, {})[w] = cell(gnn, baselines[w])
    result = {"mode": cfg.mode, "worlds": list(cfg.use), "rows": [r.name for r in rows],
              "checkpoints": {r.name: r.ckpt for r in rows}, "cells": cells,
              "splits": {w: {s: str(p) for s, p in d.items()} for w, d in splits.items()}}
    table = format_matrix(result)
    write_json(out_dir / "transfer.json", result)
    (out_dir / "transfer.md").write_text(table + "\n", encoding="utf-8")
    write_metrics(out_dir / "metrics.json", flat_metrics(result))
    print("\n" + table)
    print(f"\nrun folder: {out_dir}\nmatrix:     {out_dir / 'transfer.md'}, "
          f"{out_dir / 'transfer.json'}")
    return result


def cell(gnn: dict, base: dict) -> dict[str, float | None]:
    """A matrix cell: gap closed on AP and AP_hard, and each grouping's AP."""
    get = {g: {k: (gnn if g == "gnn" else base).get(f"test/{g}/{k}") for k in ("AP", "AP_hard")}
           for g in ("gnn", "ae", "oracle")}
    return {"gap_AP": gap_closed(get["gnn"]["AP"], get["ae"]["AP"], get["oracle"]["AP"]),
            "gap_AP_hard": gap_closed(get["gnn"]["AP_hard"], get["ae"]["AP_hard"],
                                      get["oracle"]["AP_hard"]),
            **{f"{g}_{k}": v for g, d in get.items() for k, v in d.items()}}


def flat_metrics(result: dict) -> dict[str, float | None]:
    """``transfer/<row>/<test world>/<key>`` for every cell (metrics.json)."""
    return {f"transfer/{row.replace(' ', '_')}/{w}/{k}": v
            for row, by_world in result["cells"].items() for w, c in by_world.items()
            for k, v in c.items()}


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"


def format_matrix(result: dict) -> str:
    """Rows the training worlds, columns the test worlds; each cell ``gap AP / gap
    AP_hard (gnn / ae / oracle AP)``."""
    worlds = result["worlds"]
    lines = ["| trained on \\ tested on | " + " | ".join(worlds) + " |",
             "|---" * (len(worlds) + 1) + "|"]
    for row in result["rows"]:
        out = []
        for w in worlds:
            c = result["cells"].get(row, {}).get(w)
            if c is None:
                out.append("")
                continue
            out.append(f"**{_num(c['gap_AP'])}** / {_num(c['gap_AP_hard'])} "
                       f"({c['gnn_AP']:.3f} / {c['ae_AP']:.3f} / {c['oracle_AP']:.3f})")
        lines.append(f"| {row} | " + " | ".join(out) + " |")
    lines.append("")
    lines.append("Cells: gap closed on AP / on AP_hard, (gnn - ae) / (oracle - ae), then "
                 "(gnn / ae / oracle AP) on the column's test split.")
    return "\n".join(lines)
