"""The entry points run as a user runs them: posegnn-train, -eval, -predict, -generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posegnn.data.maps import PoseMapsDataset
from tests.conftest import tiny_train_overrides

pytestmark = pytest.mark.slow
ENV = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}


def run(script: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(script)
    proc = subprocess.run([str(exe), *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def only_run(root: Path) -> Path:
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny posegnn-train run (2 epochs); returns its run folder."""
    out = tmp_path_factory.mktemp("train")
    proc = run("posegnn-train", *tiny_train_overrides(out), cwd=out)
    assert "| gnn |" in proc.stdout and "| ae |" in proc.stdout and "| oracle |" in proc.stdout
    return only_run(out / "train")


def test_train_writes_checkpoints_metrics_and_results(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("test/gnn/AP", "test/ae/AP50", "test/oracle/AP", "test/gnn/edge_acc",
                "test/gnn/AP75", "val/loss", "train/loss", "test/edge_acc", "val/gnn/AP",
                "val/ae/AP"):
        assert key in metrics, key
    assert metrics["epochs"] == 2
    assert 0 <= metrics["test/gnn/AP"] <= 1 and metrics["test/oracle/AP"] > 0
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert list((trained / "checkpoints").glob("best-*.ckpt"))
    assert (trained / "csv" / "metrics.csv").is_file()
    results = json.loads((trained / "test_gnn_results.json").read_text())
    assert results and {"image_id", "category_id", "keypoints", "score"} <= set(results[0])


def test_eval_from_a_checkpoint_matches_training_test(trained, tmp_path):
    root = trained.parent.parent
    ckpt = next((trained / "checkpoints").glob("best-*.ckpt"))
    args = [*tiny_train_overrides(root)[:4], f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}"]
    proc = run("posegnn-eval", *args, cwd=root)
    assert "| gnn |" in proc.stdout
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("test/gnn/AP", "test/ae/AP", "test/oracle/AP", "test/gnn/edge_acc"):
        assert evaluated[key] == pytest.approx(trained_metrics[key], abs=1e-9), key
    assert (tmp_path / "test_gnn_results.json").is_file()


def test_eval_without_checkpoint_runs_ae_and_oracle(trained, tmp_path):
    root = trained.parent.parent
    args = [*tiny_train_overrides(root)[:4], f"hydra.run.dir={tmp_path}"]
    run("posegnn-eval", *args, cwd=root)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "test/ae/AP" in metrics and "test/oracle/AP" in metrics
    assert not any(k.startswith("test/gnn/") for k in metrics)


def test_predict_writes_coco_results_for_a_dataset_without_annotations(trained, small_dataset,
                                                                       tmp_path):
    data = tmp_path / "unlabeled"
    data.mkdir()
    (data / "maps").symlink_to(small_dataset / "maps")
    ann = json.loads((small_dataset / "annotations.json").read_text())
    ann.pop("annotations")
    (data / "annotations.json").write_text(json.dumps(ann))
    out = tmp_path / "results.json"
    ckpt = trained / "checkpoints" / "last.ckpt"
    run("posegnn-predict", f"ckpt_path={ckpt}", f"input={data}", f"out={out}",
        f"hydra.run.dir={tmp_path / 'run'}", "progress=false", cwd=tmp_path)
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} <= {img["id"] for img in ann["images"]}
    assert all(len(r["keypoints"]) == 42 for r in results)


def test_a_typo_in_an_override_fails_at_start(tmp_path):
    proc = run("posegnn-train", "optimizer.lrr=0.1", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "lrr" in proc.stderr
    proc = run("posegnn-train", "trainer.max_epochs=many", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "max_epochs" in proc.stderr
    proc = run("posegnn-train", "model=edgecon", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "edgecon" in proc.stderr
    assert not (tmp_path / "outputs" / "data").exists()


def test_finetune_refuses_graphs_built_with_other_settings(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    root = trained.parent.parent
    proc = run("posegnn-train", *tiny_train_overrides(root), f"finetune_from={ckpt}",
               "graph.normalization=per_map", f"hydra.run.dir={tmp_path}", cwd=root, check=False)
    assert proc.returncode != 0
    assert "graph.normalization: trained 'none', now 'per_map'" in proc.stderr


def test_finetune_from_checkpoint_on_a_maps_dataset(trained, small_dataset, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    args = ["data=maps", f"data.train={small_dataset}", f"data.test={small_dataset}",
            f"finetune_from={ckpt}", "trainer.max_epochs=1", "progress=false",
            "trainer.enable_progress_bar=false", "callbacks.val_ap_every_n_epochs=0",
            f"paths.output_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]
    run("posegnn-train", *args, cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and "test/gnn/AP" in metrics


def test_generate_writes_a_dataset_the_reader_accepts(tmp_path):
    out = tmp_path / "world"
    run("posegnn-generate", f"out={out}", "num_images=3", "seed=5", "crowd=hard",
        "layout=coco17", "noise.tag_noise=0.3", cwd=tmp_path)
    ds = PoseMapsDataset(out)
    assert len(ds) == 3 and ds.layout.name == "coco17"
    assert ds.load_maps(ds.image_ids[0]).heatmaps.shape == (17, 256, 256)


def test_train_on_a_maps_dataset_without_test_split(small_dataset, tmp_path):
    args = ["data=maps", f"data.train={small_dataset}", "trainer.max_epochs=1", "progress=false",
            "trainer.enable_progress_bar=false", "callbacks.val_ap_every_n_epochs=0",
            f"paths.output_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run("posegnn-train", *args, cwd=tmp_path)
    assert "skipping the test groupings" in proc.stderr + proc.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "val/loss" in metrics and not any(k.startswith("test/") for k in metrics)
