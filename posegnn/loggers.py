"""Experiment loggers from ``logger=``: CSV, TensorBoard and W&B (offline by default)."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from posegnn.io import atomic_write


def wandb_mode() -> str:
    """``WANDB_MODE`` if the user set it, else online only with a configured account."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file() and (
        "api.wandb.ai" in (Path.home() / ".netrc").read_text(errors="ignore"))
    return "online" if has_key else "offline"


class _SharedWriter(ExperimentWriter):
    """Lightning's CSV writer, reading the columns of ``metrics.csv`` from the file before
    it adds rows: the processes of ``ddp_spawn`` (fit in a child, test in the parent) each
    hold a copy of the writer, and one that did not write the file's columns itself would
    rewrite it with its own header and fail."""

    def _record_new_keys(self) -> set[str]:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys.extend(sorted(set(header) - set(self.metrics_keys)))
            self.metrics_keys.sort()
        return super()._record_new_keys()


class _ResumedWriter(_SharedWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; a resumed run keeps the
    rows of the epochs before ``resume_epoch`` and appends to them."""

    def __init__(self, log_dir: str, resume_epoch: int) -> None:
        self._resume_epoch = resume_epoch
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if self._before_resume(r.get("epoch"))]
            keys = list(reader.fieldnames or [])

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(path, lambda f: f.write(text.getvalue().encode()))
        self.metrics_keys = keys

    def _before_resume(self, epoch: str | None) -> bool:
        try:
            return float(epoch) < self._resume_epoch
        except (TypeError, ValueError):
            return True  # rows without an epoch (learning rates) stay


class ResumableCSVLogger(CSVLogger):
    """A CSVLogger that, when ``resume_epoch`` is given, continues the run's own
    ``metrics.csv`` instead of replacing it, and that several processes can share."""

    def __init__(self, *args, resume_epoch: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resume_epoch = resume_epoch

    @property
    def experiment(self):
        if self._experiment is None and rank_zero_only.rank == 0:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = (_SharedWriter(self.log_dir) if self._resume_epoch is None
                                else _ResumedWriter(self.log_dir, self._resume_epoch))
        return super().experiment


def _wandb_run_id(out_dir: Path) -> str | None:
    """The id of the W&B run an earlier job wrote into ``out_dir`` (to resume it)."""
    runs = sorted((out_dir / "wandb").glob("*run-*-*"))
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def build_loggers(cfg, out_dir: Path, run_name: str, group: str | None,
                  resume_epoch: int | None = None) -> list[Logger]:
    """Loggers writing under ``out_dir``; W&B runs are named by their overrides and
    grouped by sweep. ``resume_epoch``: the run continues in ``out_dir`` from that epoch
    (its CSV rows before it are kept, its W&B run id reused)."""
    loggers: list[Logger] = []
    if cfg.csv:
        loggers.append(ResumableCSVLogger(save_dir=str(out_dir), name="", version="csv",
                                          resume_epoch=resume_epoch))
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(out_dir), name="", version="tensorboard"))
    if cfg.wandb.enabled:
        from lightning.pytorch.loggers import WandbLogger

        os.environ["WANDB_MODE"] = wandb_mode()
        os.environ.setdefault("WANDB_SILENT", "true")
        run_id = _wandb_run_id(out_dir) if resume_epoch is not None else None
        loggers.append(WandbLogger(
            project=cfg.wandb.project, entity=cfg.wandb.entity, save_dir=str(out_dir),
            name=cfg.wandb.name or run_name, group=cfg.wandb.group or group,
            tags=list(cfg.wandb.tags), log_model=cfg.wandb.log_model,
            **({"id": run_id, "resume": "allow"} if run_id else {})))
    return loggers


def log_final_metrics(loggers: list[Logger], metrics: dict[str, float], step: int,
                      epoch: int) -> None:
    """Send end-of-run numbers (test AP of every grouping, ...) to every logger: a row of
    ``csv/metrics.csv``, TensorBoard scalars, and W&B history and run summary, so that runs
    sort by them."""
    finite = {k: float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and math.isfinite(v)}
    if not finite:
        return
    for lg in loggers:
        lg.log_metrics({**finite, "epoch": epoch}, step=step)
        if type(lg).__name__ == "WandbLogger":
            lg.experiment.summary.update(finite)
        lg.save()


def wandb_run_dir(loggers: list[Logger]) -> Path | None:
    """The local folder of the W&B run (``<run>/wandb/offline-run-...``), while it is open."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            return Path(lg.experiment.dir).parent
    return None


def finish_wandb(loggers: list[Logger]) -> None:
    """Close the W&B run: Lightning leaves it open, and multirun jobs would bleed into it."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()
