"""The entry points run as a user runs them: posegnn-train, -eval, -predict, -generate."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posegnn.data.maps import PoseMapsDataset
from posegnn.evaluation.coco import evaluate_keypoints
from posegnn.layouts import CROWDPOSE14
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
    (out / "stdout.txt").write_text(proc.stdout)
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


def test_train_logs_ap_of_every_grouping_to_the_csv_logger(trained):
    with open(trained / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    metrics = json.loads((trained / "metrics.json").read_text())
    for grouping in ("gnn", "ae", "oracle"):
        for key in ("AP", "AP50", "AP75"):
            logged = [float(r[f"test/{grouping}/{key}"]) for r in rows
                      if r.get(f"test/{grouping}/{key}")]
            assert logged == [pytest.approx(metrics[f"test/{grouping}/{key}"])], key
    assert any(r.get("test/gnn/AP_hard") for r in rows)
    # val AP of gnn and ae, every epoch (callbacks.val_ap_every_n_epochs=1)
    val_epochs = {r["epoch"] for r in rows if r.get("val/gnn/AP") and r.get("val/ae/AP")}
    assert val_epochs == {"0", "1"}


def test_train_ends_saying_where_things_went(trained):
    out = (trained.parent.parent / "stdout.txt").read_text()
    assert f"run folder:      {trained}" in out
    assert f"last checkpoint: {trained / 'checkpoints' / 'last.ckpt'}" in out
    assert f"metrics:         {trained / 'metrics.json'}" in out
    best = next((trained / "checkpoints").glob("best-*.ckpt"))
    assert f"best checkpoint: {best}" in out


def test_eval_from_a_checkpoint_matches_training_test(trained, tmp_path):
    root = trained.parent.parent
    ckpt = next((trained / "checkpoints").glob("best-*.ckpt"))
    args = [*tiny_train_overrides(root)[:4], f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}"]
    proc = run("posegnn-eval", *args, cwd=root)
    assert "| gnn |" in proc.stdout
    assert f"metrics:    {tmp_path / 'metrics.json'}" in proc.stdout
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("test/gnn/AP", "test/ae/AP", "test/oracle/AP", "test/gnn/edge_acc"):
        assert evaluated[key] == pytest.approx(trained_metrics[key], abs=1e-9), key
    assert (tmp_path / "test_gnn_results.json").is_file()


def test_eval_without_checkpoint_uses_the_shipped_model_or_leaves_gnn_out(trained, tmp_path):
    root = trained.parent.parent
    args = [*tiny_train_overrides(root)[:4], f"hydra.run.dir={tmp_path / 'shipped'}"]
    proc = run("posegnn-eval", *args, cwd=root)
    assert "| gnn |" in proc.stdout
    shipped = json.loads((tmp_path / "shipped" / "metrics.json").read_text())
    assert 0.0 < shipped["test/gnn/AP"] <= 1.0
    run("posegnn-eval", *args[:-1], "grouping.run=[ae,oracle]",
        f"hydra.run.dir={tmp_path / 'plain'}", cwd=root)
    metrics = json.loads((tmp_path / "plain" / "metrics.json").read_text())
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
    images = {img["id"]: img for img in ann["images"]}
    assert {r["image_id"] for r in results} == set(images)  # people in every image
    for r in results:
        assert r["category_id"] == 1 and math.isfinite(r["score"]) and r["score"] > 0
        kps = np.asarray(r["keypoints"], dtype=float).reshape(14, 3)
        found = kps[:, 2] > 0
        assert found.sum() >= 2  # a person is at least a pair of joints
        img = images[r["image_id"]]
        assert np.all((kps[found, 0] >= 0) & (kps[found, 0] <= img["width"]))
        assert np.all((kps[found, 1] >= 0) & (kps[found, 1] <= img["height"]))
    # the people are where the (withheld) annotations put them
    gt = json.loads((small_dataset / "annotations.json").read_text())
    assert evaluate_keypoints(gt, results, CROWDPOSE14.sigma_array)["AP50"] > 0.3


def test_predict_without_checkpoint_uses_the_shipped_model(small_dataset, tmp_path):
    out = tmp_path / "results.json"
    proc = run("posegnn-predict", f"input={small_dataset}", f"out={out}", "progress=false",
               f"paths.output_dir={tmp_path / 'outputs'}", cwd=tmp_path)
    assert "wrote" in proc.stdout and json.loads(out.read_text())


def test_a_failed_command_leaves_no_run_folder(small_dataset, tmp_path):
    for args in (["posegnn-predict", f"input={small_dataset}"],  # no out=
                 ["posegnn-eval", f"data.test={tmp_path / 'nowhere'}"]):
        proc = run(*args, f"paths.output_dir={tmp_path / 'outputs'}", cwd=tmp_path,
                   check=False)
        assert proc.returncode == 1 and "error" in proc.stderr, proc.stderr
    left = [p for p in (tmp_path / "outputs").rglob("*")] if (tmp_path / "outputs").exists() \
        else []
    assert left == []


def test_a_maps_path_without_data_maps_reads_the_maps(small_dataset, tmp_path):
    proc = run("posegnn-eval", f"data.test={small_dataset}", "grouping.run=[ae]",
               "progress=false", f"paths.output_dir={tmp_path}", cwd=tmp_path)
    assert "reading maps folders (data=maps)" in proc.stdout
    assert "test split (8 images)" in proc.stdout  # the folder's 8, not 500 synthetic
    assert not (tmp_path / "data").exists()  # nothing generated
    proc = run("posegnn-eval", "data=crowdpose_poses", "data.poses=x.json",
               f"data.test={small_dataset}", f"paths.output_dir={tmp_path}", cwd=tmp_path,
               check=False)
    assert proc.returncode == 1 and "add data=maps" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_checkpoint_of_another_layout_is_one_line_naming_both(small_dataset, tmp_path):
    from posegnn.pretrained import shipped_checkpoint

    proc = run("posegnn-eval", f"ckpt_path={shipped_checkpoint('coco17')}", "data=maps",
               f"data.test={small_dataset}", f"paths.output_dir={tmp_path}", cwd=tmp_path,
               check=False)
    assert proc.returncode == 1
    assert "a coco17 model, but the data is crowdpose14" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("override, advice", [
    ("data.tset=DIR", "did you mean data.test?"),
    ("grouping.ae.tag_treshold=0.5", "did you mean grouping.ae.tag_threshold?"),
    ("data=mpas", "did you mean maps?"),
    ("trainer.max_epochs=3", "posegnn-eval has no such setting"),  # eval trains nothing
])
def test_a_typo_gets_did_you_mean_and_never_the_plus_advice(tmp_path, override, advice):
    proc = run("posegnn-eval", override, cwd=tmp_path, check=False)
    assert proc.returncode == 1 and advice in proc.stderr, proc.stderr
    assert "+" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("script, used, unused", [
    ("posegnn-eval", ["data", "graph", "grouping"], ["trainer", "optimizer", "model"]),
    ("posegnn-predict", ["grouping"], ["data", "trainer", "model"]),
    ("posegnn-train", ["trainer", "optimizer", "model", "experiment"], []),
])
def test_help_lists_the_groups_the_command_uses_without_importing_torch(script, used,
                                                                         unused, tmp_path):
    module = {"posegnn-eval": "evaluate", "posegnn-predict": "predict",
              "posegnn-train": "train"}[script]
    code = (f"import sys; sys.argv = ['{script}', '--help']; "
            f"from posegnn.cli.{module} import main; main(); "
            "assert 'torch' not in sys.modules, 'help imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    groups = proc.stdout.split("config groups")[1].split("most used settings")[0]
    names = {line.split()[0] for line in groups.splitlines()[1:] if line.strip()}
    assert set(used) <= names and not set(unused) & names, names
    assert "most used settings" in proc.stdout and f"usage: {script}" in proc.stdout


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
    assert [p.name for p in tmp_path.iterdir()] == ["world"]  # nothing else in the cwd
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


def wandb_summary(run_dir: Path) -> dict[str, float]:
    """The run summary an offline W&B run stored in its ``run-<id>.wandb`` log (a
    LevelDB-style log of protobuf records: 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data, pos, block, chunks, records = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if length == 0 and kind == 0:
            pos += block - pos % block
            continue
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            records.append(chunks)
            chunks = b""
    summary = {}
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.summary.update})
    return summary


def tensorboard_scalars(run_dir: Path) -> dict[str, float]:
    """The last value of every scalar in a TensorBoard log folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


def test_wandb_and_tensorboard_hold_ap_and_the_sync_command_is_printed(tmp_path):
    """W&B offline (and TensorBoard where installed: pip install -e ".[tensorboard]")."""
    try:
        import tensorboard  # noqa: F401

        logger = "many"  # csv, tensorboard and wandb
    except ImportError:
        logger = "wandb"
    args = [*tiny_train_overrides(tmp_path), f"logger={logger}", "trainer.max_epochs=1",
            "callbacks.val_ap_every_n_epochs=0", "callbacks.figures_every_n_epochs=0"]
    proc = run("posegnn-train", *args, cwd=tmp_path)
    run_dir = only_run(tmp_path / "train")
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    assert f"wandb sync {wandb_dir}" in proc.stdout
    summary = wandb_summary(wandb_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    keys = ("test/gnn/AP", "test/ae/AP", "test/oracle/AP", "test/gnn/AP75", "test/ae/AP50",
            "val/gnn/AP", "val/ae/AP")
    for key in keys:
        assert summary[key] == pytest.approx(metrics[key]), key
    if logger == "many":
        scalars = tensorboard_scalars(run_dir / "tensorboard")
        for key in keys:
            assert scalars[key] == pytest.approx(metrics[key], rel=1e-6), key


def test_resume_continues_in_the_run_folder(trained, tmp_path):
    root = trained.parent.parent
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    last = copy / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    overrides = (copy / ".hydra" / "overrides.yaml").read_text()
    args = [*tiny_train_overrides(root), "trainer.max_epochs=3", f"ckpt_path={last}"]
    proc = run("posegnn-train", *args, cwd=root)
    assert f"run folder:      {copy}" in proc.stdout
    assert not (tmp_path / "train").exists() and only_run(root / "train") == trained
    assert last.read_bytes() != before
    assert json.loads((copy / "metrics.json").read_text())["epochs"] == 3
    with open(copy / "csv" / "metrics.csv", newline="") as f:
        epochs = {r["epoch"] for r in csv.DictReader(f) if r.get("train/loss")}
    assert epochs == {"0", "1", "2"}  # the first two epochs' rows are kept
    assert (copy / ".hydra" / "overrides.yaml").read_text() == overrides
    assert list((copy / ".hydra").glob("resume-*/overrides.yaml"))


def test_resume_refuses_other_data_naming_the_keys(trained, tmp_path):
    root = trained.parent.parent
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    status = (copy / "job_status.json").read_text()
    args = [*tiny_train_overrides(root), "trainer.max_epochs=3", "data.synthetic.seed=1",
            "graph.normalization=per_map", f"ckpt_path={copy / 'checkpoints' / 'last.ckpt'}"]
    proc = run("posegnn-train", *args, cwd=root, check=False)
    assert proc.returncode == 1
    assert "data.synthetic.seed: trained 0, now 1" in proc.stderr
    assert "graph.normalization: trained 'none', now 'per_map'" in proc.stderr
    assert "resume_allow_changes=true" in proc.stderr and "Traceback" not in proc.stderr
    assert (copy / "job_status.json").read_text() == status  # the run is not marked failed
