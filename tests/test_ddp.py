"""Two CPU processes (gloo, ``trainer=ddp``) end to end, with every logger: each rank
trains on its own shard, and validation and test metrics are those of the whole split."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from posegnn.checkpoints import load_module
from posegnn.config import CONF_DIR, register_schemas
from posegnn.evaluation.runner import evaluate_groupings
from posegnn.tasks.train import build_datamodule

TRAIN = str(Path(sys.executable).with_name("posegnn-train"))
register_schemas()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("ddp")
    overrides = [f"paths.output_dir={out}", "data.synthetic.num_train=16",
                 "data.synthetic.num_val=8", "data.synthetic.num_test=8", "data.batch_size=4",
                 "trainer.max_epochs=2", "progress=false", "callbacks.figures_every_n_epochs=0"]
    run = subprocess.run(
        [TRAIN, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=many",
         *overrides, "trainer.enable_progress_bar=false", f"hydra.run.dir={out / 'run'}"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert run.returncode == 0, run.stderr[-3000:]
    return out / "run", overrides


def test_every_logger_gets_the_metrics_of_a_two_process_run(ddp_run):
    run, _ = ddp_run
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test/gnn/AP", "test/ae/AP", "test/oracle/AP", "test/gnn/edge_acc",
                "val/gnn/AP", "val/loss"):
        assert math.isfinite(metrics[key]), key
    with open(run / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    assert {"val/gnn/AP", "test/gnn/AP", "test/ae/AP_hard", "train/loss"} <= columns
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run / "wandb").glob("offline-run-*"))


def test_each_rank_trains_on_its_shard_and_metrics_cover_the_whole_split(ddp_run):
    run, overrides = ddp_run
    metrics = json.loads((run / "metrics.json").read_text())
    last = run / "checkpoints" / "last.ckpt"
    # 16 images, 2 ranks, batches of 4: 2 steps an epoch on each rank (4 in one process)
    assert torch.load(last, weights_only=True)["global_step"] == 2 * 2

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("train", overrides=overrides))
    dm = build_datamodule(cfg, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    # val AP: once, over the whole val split, with the best weights and the person scorer
    # fitted on them (reloaded here, in one process: the test split ranks people so too),
    # batched as the run's callback batches (other batch sizes may round the probabilities
    # differently in the last bit, and a decoder decision with them)
    best = load_module(next((run / "checkpoints").glob("best-*.ckpt")))
    assert best.scorer is not None
    grouping = replace(cfg.grouping, run=["gnn"])
    val = evaluate_groupings(dm.ground_truth("val"), dm.layout, dm.dataset("val"), grouping,
                             module=best, prefix="val", batch_size=cfg.data.batch_size,
                             maps=dm.images("val").load_maps)
    assert metrics["val/gnn/AP"] == pytest.approx(val["val/gnn/AP"], rel=1e-6)
    # test edge accuracy: the best weights over the whole test split
    tester = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                       enable_model_summary=False)
    tester.test(best, datamodule=dm, verbose=False)
    assert metrics["test/gnn/edge_acc"] == pytest.approx(
        float(tester.callback_metrics["test/edge_acc"]), abs=1e-6)
