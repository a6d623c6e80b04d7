"""Experiment loggers from ``logger=``: CSV, TensorBoard and W&B (offline by default)."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger


def wandb_mode() -> str:
    """``WANDB_MODE`` if the user set it, else online only with a configured account."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file() and (
        "api.wandb.ai" in (Path.home() / ".netrc").read_text(errors="ignore"))
    return "online" if has_key else "offline"


def build_loggers(cfg, out_dir: Path, run_name: str, group: str | None) -> list[Logger]:
    """Loggers writing under ``out_dir``; W&B runs are named by their overrides and
    grouped by sweep."""
    loggers: list[Logger] = []
    if cfg.csv:
        loggers.append(CSVLogger(save_dir=str(out_dir), name="", version="csv"))
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(out_dir), name="", version="tensorboard"))
    if cfg.wandb.enabled:
        from lightning.pytorch.loggers import WandbLogger

        os.environ["WANDB_MODE"] = wandb_mode()
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(
            project=cfg.wandb.project, entity=cfg.wandb.entity, save_dir=str(out_dir),
            name=cfg.wandb.name or run_name, group=cfg.wandb.group or group,
            tags=list(cfg.wandb.tags), log_model=cfg.wandb.log_model))
    return loggers


def finish_wandb(loggers: list[Logger]) -> None:
    """Close the W&B run: Lightning leaves it open, and multirun jobs would bleed into it."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()
