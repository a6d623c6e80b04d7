"""What every Hydra entry point shares: schemas, the config folder, run information."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from posegnn.config import CONF_DIR, register_schemas

register_schemas()
__all__ = ["CONF_DIR", "hydra_run_info", "prepare_runtime"]


def hydra_run_info() -> tuple[Path, list[str], str | None]:
    """(output folder, command-line overrides, sweep name or None) of the current job."""
    hc = HydraConfig.get()
    sweep = None
    if hc.mode is not None and hc.mode.name == "MULTIRUN":
        sweep = Path(hc.sweep.dir).name
    return Path(hc.runtime.output_dir), list(hc.overrides.task), sweep


def prepare_runtime(cfg) -> None:
    """Set torch's CPU threads from ``cfg.threads`` and silence warnings that say
    nothing actionable on a CPU-only machine."""
    import torch

    torch.set_num_threads(max(int(cfg.threads), 1))
    os.environ.setdefault("WANDB_SILENT", "true")
    for pattern in (".*does not have many workers.*", ".*GPU available but not used.*",
                    ".*tensorboardX.*", ".*LeafSpec.*", ".*isinstance.*treespec.*"):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
