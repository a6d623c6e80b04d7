"""What users' data and clusters do to a run: empty and packed images, killed jobs,
failing sweep jobs, typos in configs, and determinism."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch_geometric.data import Batch

import posegnn.tasks.train
from posegnn.callbacks.preemption import Preempted
from posegnn.config import CONF_DIR, register_schemas
from posegnn.data.graph import AddEdges, GraphConfig, build_vertices
from posegnn.data.maps import ImageMaps, PoseMapsDataset
from posegnn.data.synthetic import SyntheticConfig, generate_dataset
from posegnn.evaluation.coco import evaluate_keypoints, people_to_coco_results
from posegnn.evaluation.runner import candidates_of
from posegnn.grouping import build_grouping
from posegnn.layouts import CROWDPOSE14
from posegnn.models.module import PosegnnModule
from posegnn.report import build_report
from posegnn.tasks.train import train
from tests.conftest import tiny_train_overrides

ENV = {**os.environ, "WANDB_MODE": "offline"}
TRAIN = str(Path(sys.executable).with_name("posegnn-train"))
register_schemas()


def _people_of(g, module):
    """People of one graph from every grouping (gnn with an untrained module)."""
    data = AddEdges(CROWDPOSE14, GraphConfig().edges)(g)
    with torch.no_grad():
        prob = module.eval().probabilities(Batch.from_data_list([data]))[0].numpy()
    cands = candidates_of(g)
    return {"gnn": build_grouping("gnn", layout=CROWDPOSE14).group(
                cands, pair_index=data.pair_index.numpy(), prob=prob),
            "ae": build_grouping("ae", layout=CROWDPOSE14).group(cands),
            "oracle": build_grouping("oracle", layout=CROWDPOSE14).group(
                cands, person=g.person.numpy())}, data


def _module(g) -> PosegnnModule:
    """An untrained module for graphs like ``g`` (the default graph settings)."""
    return PosegnnModule(g.x.shape[1], AddEdges(CROWDPOSE14, GraphConfig().edges)(
        g.clone()).edge_attr.shape[1])


def _maps(heat: np.ndarray) -> ImageMaps:
    return ImageMaps(7, heat, np.zeros((14, 128, 128, 1), np.float32),
                     np.array([[2.0, 0, 0], [0, 2.0, 0]]))


@pytest.mark.parametrize("case", ["no people", "nothing above threshold", "one candidate"])
def test_degenerate_images_flow_through_every_stage(case):
    heat = np.zeros((14, 256, 256), np.float32)
    if case == "nothing above threshold":
        heat += 0.05
    if case == "one candidate":
        heat[3, 100, 120] = 0.9
    gt = np.zeros((0, 14, 3)) if case != "one candidate" else np.array(
        [[[240.0, 200.0, 2.0] if j == 3 else [0, 0, 0] for j in range(14)]])
    g = build_vertices(_maps(heat), CROWDPOSE14, GraphConfig(), gt, np.full(len(gt), 900.0))
    assert g.num_nodes == (1 if case == "one candidate" else 0)
    module = _module(g)
    people, data = _people_of(g, module)
    assert data.pair_index.shape[1] == 0
    for name, found in people.items():
        assert len(found) == g.num_nodes, name
    gt_coco = {"images": [{"id": 7, "width": 512, "height": 512, "crowd_index": 0.0}],
               "annotations": [{"id": 1, "image_id": 7, "category_id": 1,
                                "keypoints": gt[0].ravel().tolist(), "area": 900.0,
                                "iscrowd": 0, "bbox": [230, 190, 20, 20]}] if len(gt) else [],
               "categories": [{"id": 1, "keypoints": list(CROWDPOSE14.joints)}]}
    results = people_to_coco_results(7, people["oracle"])
    metrics = evaluate_keypoints(gt_coco, results, CROWDPOSE14.sigma_array)
    # nobody to find scores -1 (pycocotools' "undefined"); the one joint is found exactly
    assert metrics["AP"] == pytest.approx(1.0 if case == "one candidate" else -1.0)


def test_a_packed_image_of_sixty_people_stays_bounded(tmp_path):
    out = generate_dataset(tmp_path / "packed", SyntheticConfig(num_images=1, crowd="packed",
                                                                seed=4), progress=False)
    ds = PoseMapsDataset(out)
    gt, areas = ds.gt_keypoints(1)
    assert len(gt) >= 45
    cfg = GraphConfig()
    g = build_vertices(ds.load_maps(1), ds.layout, cfg, gt, areas)
    # top-k per joint type bounds the candidates, and so the pairs and the memory
    assert g.num_nodes <= 14 * cfg.candidates.top_k
    module = _module(g)
    people, data = _people_of(g, module)
    assert data.pair_index.shape[1] <= g.num_nodes * (g.num_nodes - 1) // 2
    assert len(people["oracle"]) >= 25 and len(people["ae"]) >= 25 and len(people["gnn"])


def _compose(*overrides: str):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _settings(*overrides: str):
    return OmegaConf.to_object(_compose(*overrides))


def _group_options() -> list[tuple[str, str]]:
    root = Path(CONF_DIR)
    # world and transfer are posegnn-transfer's groups (tests/test_transfer.py)
    skip = {"hydra", "experiment", "sweep", "hparams_search", "world", "transfer"}
    return [(d.name, f.stem) for d in sorted(root.iterdir()) if d.is_dir() and d.name not in skip
            for f in sorted(d.glob("*.yaml"))]


@pytest.mark.parametrize("group,option", _group_options())
def test_every_group_option_fits_the_schema_and_rejects_unknown_keys(group, option):
    cfg = _compose(f"{group}={option}")
    assert OmegaConf.to_container(cfg[group])  # the option composes against the schema
    with pytest.raises(Exception, match="bogus"):
        _compose(f"{group}={option}", f"{group}.bogus=1")


def test_a_group_file_with_an_unknown_key_fails_at_start(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("conv: edgeconv\nhiden: 32\n")
    with pytest.raises(Exception, match="hiden"):
        _compose(f"hydra.searchpath=[file://{tmp_path}]", "model=mine")


@pytest.mark.parametrize("override", ["optimizer.lr=fast", "trainer.max_epochs=1.5",
                                      "graph.candidates.top_k=[1]", "model.skip=maybe"])
def test_wrong_types_fail_at_start(override):
    with pytest.raises(Exception, match=override.split("=")[0].rsplit(".", 1)[-1]):
        _compose(override)


@pytest.mark.parametrize("experiment", ["quickstart", "seed_report"])
def test_experiments_compose(experiment):
    cfg = _compose(f"experiment={experiment}")
    assert cfg.trainer.max_epochs > 0


def test_same_config_twice_gives_identical_metrics(tmp_path):
    overrides = [*tiny_train_overrides(tmp_path), "callbacks.figures_every_n_epochs=0"]
    first = train(_settings(*overrides), tmp_path / "a", overrides)
    second = train(_settings(*overrides), tmp_path / "b", overrides)
    keys = [k for k in first if not k.startswith("time/") and "sec_per_image" not in k]
    assert keys and {k: first[k] for k in keys} == {k: second[k] for k in keys}


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path):
    base = [o for o in tiny_train_overrides(tmp_path) if "max_epochs" not in o]
    base += ["test=false", "callbacks.val_ap_every_n_epochs=0", "trainer.max_epochs=6",
             "callbacks.figures_every_n_epochs=0"]
    subprocess.run([TRAIN, *base, f"hydra.run.dir={tmp_path / 'full'}"], env=ENV, check=True,
                   capture_output=True, timeout=600)
    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([TRAIN, *base, f"hydra.run.dir={killed}"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-run, like a preempted cluster job
    proc.wait()
    assert last.exists() and not (killed / "metrics.json").exists()
    subprocess.run([TRAIN, *base, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}"],
                   env=ENV, check=True, capture_output=True, timeout=600)
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert full["epochs"] == 6
    _assert_same_result(resumed, full)


class _SignalsAt(L.Callback):
    """Sends each ``{step: signal}`` to this process after that training batch."""

    def __init__(self, signals: dict[int, int]) -> None:
        self.signals = signals

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step in self.signals:
            os.kill(os.getpid(), self.signals.pop(trainer.global_step))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[list[str], dict]:
    """A 3-epoch run's overrides and metrics, for runs stopped and resumed to compare with."""
    out = tmp_path_factory.mktemp("uninterrupted")
    overrides = [o for o in tiny_train_overrides(out) if "max_epochs" not in o]
    overrides += ["test=false", "callbacks.val_ap_every_n_epochs=0", "trainer.max_epochs=3",
                  "callbacks.figures_every_n_epochs=0", "logger=csv"]
    return overrides, train(_settings(*overrides), out / "full", overrides)


def _assert_same_result(resumed: dict, full: dict) -> None:
    assert resumed["epochs"] == full["epochs"]
    for key in ("val/loss", "train/loss", "val/edge_acc", "val/edge_auroc"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-6), key


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_preemption_saves_mid_epoch_and_resumes_to_the_uninterrupted_result(
        tmp_path, monkeypatch, signum, uninterrupted):
    overrides, full = uninterrupted
    stop_at = 4  # 12 images in batches of 4: the second batch of epoch 1
    build = posegnn.tasks.train.build_callbacks
    monkeypatch.setattr(posegnn.tasks.train, "build_callbacks",
                        lambda *a: [*build(*a), _SignalsAt({stop_at: signum})])
    run = tmp_path / "preempted"
    with pytest.raises(Preempted) as stopped:
        train(_settings(*overrides), run, overrides)
    assert stopped.value.code == 143 and stopped.value.checkpoint.is_file()
    assert not (run / "metrics.json").exists()
    state = torch.load(stopped.value.checkpoint, weights_only=True)
    assert state["global_step"] == stop_at and state["epoch"] == 1  # saved mid-epoch
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # no handler left behind
    monkeypatch.setattr(posegnn.tasks.train, "build_callbacks", build)
    resumed_overrides = [*overrides, f"ckpt_path={stopped.value.checkpoint}"]
    _assert_same_result(train(_settings(*resumed_overrides), run, resumed_overrides), full)


def test_under_slurm_the_warning_signal_saves_and_requeues_and_the_job_resumes(
        tmp_path, monkeypatch, caplog, uninterrupted):
    overrides, full = uninterrupted
    bin_dir = tmp_path / "bin"  # a stand-in scontrol that records the requeue
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'requeued'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for key, value in (("SLURM_NTASKS", "1"), ("SLURM_JOB_ID", "4242"),
                       ("SLURM_JOB_NAME", "posegnn"), ("SLURM_NODELIST", "node1"),
                       ("SLURM_PROCID", "0"), ("SLURM_LOCALID", "0")):
        monkeypatch.setenv(key, value)
    build = posegnn.tasks.train.build_callbacks
    # SLURM warns (SIGUSR1) during epoch 1, then stops the job (SIGTERM) a batch later
    monkeypatch.setattr(posegnn.tasks.train, "build_callbacks", lambda *a: [
        *build(*a), _SignalsAt({4: signal.SIGUSR1, 5: signal.SIGTERM})])
    run = tmp_path / "job-4242"
    with pytest.raises(Preempted):
        train(_settings(*overrides), run, overrides)
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    assert (run / "hpc_ckpt_1.ckpt").is_file()
    monkeypatch.setattr(posegnn.tasks.train, "build_callbacks", build)
    with caplog.at_level("INFO"):
        requeued = train(_settings(*overrides), run, overrides)  # same folder, no ckpt_path
    assert f"Restoring states from the checkpoint path at {run / 'hpc_ckpt_1.ckpt'}" \
        in caplog.text
    _assert_same_result(requeued, full)


def test_a_failing_sweep_job_keeps_the_others_results(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *tiny_train_overrides(tmp_path), "callbacks.val_ap_every_n_epochs=0",
            "callbacks.figures_every_n_epochs=0", "trainer.max_epochs=1",
            f"hydra.sweep.dir={sweep}", "model=gatv2", "model.hidden=16,15"]
    proc = subprocess.run([TRAIN, *args], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0  # hydra reports the failure ...
    assert (sweep / "0" / "metrics.json").is_file()  # ... and the good job's results remain
    status = json.loads((sweep / "1" / "job_status.json").read_text())
    assert status["status"] == "failed" and "divisible" in status["error"]
    report = build_report(sweep).read_text()
    assert "FAILED" in report and "divisible" in report


@pytest.mark.parametrize("overrides", [["hydra/launcher=slurm"], ["hparams_search=optuna_lr"],
                                       ["sweep=seed_questions"]])
def test_cluster_and_search_configs_compose(overrides):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    hydra_cfg = cfg.hydra
    if "hydra/launcher=slurm" in overrides:
        assert hydra_cfg.launcher.gpus_per_node == 1 and "submitit" in hydra_cfg.launcher._target_
    if "hparams_search=optuna_lr" in overrides:
        assert "optuna" in hydra_cfg.sweeper._target_.lower()
        assert "optimizer.lr" in hydra_cfg.sweeper.params
    if "sweep=seed_questions" in overrides:
        assert set(hydra_cfg.sweeper.params) == {"graph.normalization", "model", "optimizer",
                                                 "optimizer.lr"}
        assert "joblib" in hydra_cfg.launcher._target_.lower()


def test_checkpoints_can_monitor_validation_ap(tmp_path):
    """With ``callbacks.monitor=val/gnn/AP``, the best checkpoint is the epoch whose logged
    val AP is highest, not the last one: in this world (whole bodies in training) a
    learning rate this high makes the second epoch worse than the first."""

    overrides = [*tiny_train_overrides(tmp_path), "callbacks.monitor=val/gnn/AP",
                 "callbacks.mode=max", "callbacks.val_ap_every_n_epochs=5", "test=false",
                 "callbacks.figures_every_n_epochs=0", "scheduler=none", "optimizer.lr=0.05",
                 "data.synthetic.hidden_below=0"]
    metrics = train(_settings(*overrides), tmp_path / "run", overrides)
    with open(tmp_path / "run" / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the monitor's values: val AP at each validation (rows with val/loss); the run's last
    # row holds the val AP recomputed with the fitted person scorer, as metrics.json does
    logged = {int(r["epoch"]): float(r["val/gnn/AP"]) for r in rows
              if r.get("val/gnn/AP") and r["val/loss"]}
    assert sorted(logged) == [0, 1]  # every epoch, though val_ap_every_n_epochs=5
    assert logged[1] < logged[0]  # the premise: the last epoch is the worse one
    checkpoints = tmp_path / "run" / "checkpoints"
    (best,) = checkpoints.glob("best-*.ckpt")
    assert best.name == "best-000.ckpt"
    kept, last = (torch.load(p, map_location="cpu", weights_only=True)
                  for p in (best, checkpoints / "last.ckpt"))
    assert (kept["epoch"], last["epoch"]) == (0, 1)
    (state,) = [v for k, v in kept["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert float(state["best_model_score"]) == pytest.approx(logged[0])
    assert metrics["best_model_score"] == pytest.approx(logged[0])
    assert float(rows[-1]["val/gnn/AP"]) == pytest.approx(metrics["val/gnn/AP"])
    assert any(not torch.equal(kept["state_dict"][k], last["state_dict"][k])
               for k in kept["state_dict"])
