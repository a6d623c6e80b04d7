"""What sweepers optimize, and what the plateau scheduler watches, are settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from posegnn.config import CONF_DIR, register_schemas
from posegnn.tasks.train import train
from tests.conftest import tiny_train_overrides

TRAIN = str(Path(sys.executable).with_name("posegnn-train"))
register_schemas()


def _optuna(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TRAIN, "-m", "hparams_search=optuna_lr", "hydra.sweeper.n_trials=2",
         *tiny_train_overrides(tmp_path), "trainer.max_epochs=1", "test=false",
         "callbacks.figures_every_n_epochs=0", f"hydra.sweep.dir={tmp_path / 'sweep'}",
         *overrides],
        capture_output=True, text=True, timeout=600, env={**os.environ, "WANDB_MODE": "disabled"})


def test_optuna_optimizes_the_named_metric(tmp_path):
    run = _optuna(tmp_path, "optimized_metric=val/gnn/AP")
    assert run.returncode == 0, run.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert 0.0 <= best["best_value"] <= 1.0 and "optimizer.lr" in best["best_params"]


def test_a_sweep_whose_runs_lack_the_metric_fails_naming_the_ones_they_have(tmp_path):
    run = _optuna(tmp_path)  # test=false: no test/gnn/AP
    assert run.returncode != 0
    assert "optimized_metric=test/gnn/AP is not among this run's metrics" in run.stderr
    assert "val/gnn/AP" in run.stderr


@pytest.mark.parametrize("monitor, works", [("val/gnn/AP", True), ("val/gnn/APx", False)])
def test_the_plateau_scheduler_watches_the_configured_metric(tmp_path, monitor, works):
    overrides = [*tiny_train_overrides(tmp_path), "test=false", "scheduler=plateau",
                 f"scheduler.monitor={monitor}", "scheduler.mode=max",
                 "callbacks.figures_every_n_epochs=0", "logger=none"]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("train", overrides=overrides))
    if works:
        assert train(cfg, tmp_path / "run", overrides)["epochs"] == 2
    else:
        with pytest.raises(Exception, match="val/gnn/APx"):
            train(cfg, tmp_path / "run", overrides)
