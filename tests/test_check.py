"""posegnn-check: a summary of a good dataset, every problem of a broken one with its fix;
the Hydra entry points report a data error as one message without a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posegnn.cli.check import main
from posegnn.tasks.check import check_dataset


@pytest.fixture
def broken(small_dataset, tmp_path) -> Path:
    """small_dataset with the mistakes users make when they dump their own maps."""
    root = tmp_path / "broken"
    shutil.copytree(small_dataset, root)
    maps = root / "maps"

    def rewrite(image_id: int, **changes) -> None:
        arrays = dict(np.load(maps / f"{image_id}.npz"))
        arrays.update(changes)
        np.savez(maps / f"{image_id}.npz", **{k: v for k, v in arrays.items() if v is not None})

    heat = dict(np.load(maps / "1.npz"))["heatmaps"]
    rewrite(1, heatmaps=heat.transpose(1, 2, 0))  # channel-last
    rewrite(2, heatmaps=dict(np.load(maps / "2.npz"))["heatmaps"].astype(np.float64))
    (maps / "3.npz").rename(maps / "000003.npz")  # zero-padded name
    (maps / "4.npz").write_bytes((maps / "4.npz").read_bytes()[:300])  # truncated
    ann = json.loads((root / "annotations.json").read_text())
    last = ann["annotations"][-1]  # an image whose maps are fine
    last["keypoints"] = last["keypoints"][:-3]
    (root / "annotations.json").write_text(json.dumps(ann))
    return root


def test_a_good_dataset_passes_with_its_summary(small_dataset, capsys):
    assert main([str(small_dataset)]) == 0
    out = capsys.readouterr().out
    for line in ("crowdpose14 (14 keypoints)", "maps read", "8 of 8 images",
                 "14x256x256 (8)", "14x128x128 (8)", "tag stride", "2 x 2 (8)",
                 "crowd levels", "map_to_image", "OK: posegnn can read this dataset"):
        assert line in out, line


def test_every_problem_is_listed_with_its_fix(broken, small_dataset, capsys):
    assert main([str(broken)]) == 1
    out = capsys.readouterr().out
    result = check_dataset(broken)
    by_file = {Path(p.where).name: p for p in result.problems}
    assert "channel-last" in by_file["1.npz"].what
    assert "transpose(2, 0, 1)" in by_file["1.npz"].fix
    assert "float64" in by_file["2.npz"].what and "astype(np.float32)" in by_file["2.npz"].fix
    assert "name files by id: 3.npz" in by_file["000003.npz"].what
    assert "unreadable npz" in by_file["4.npz"].what
    assert "data.skip_bad_maps=true" in by_file["4.npz"].fix
    (bad_ann,) = [p for p in result.problems if p.where.endswith("annotations.json")]
    assert "keypoint values" in bad_ann.what and "skip_bad_annotations" in bad_ann.fix
    assert len(result.problems) == 5
    assert out.count("  fix: ") == 5 and "NOT OK" in out


def test_an_affine_given_backwards_is_flagged(small_dataset, tmp_path):
    root = tmp_path / "inverse"
    shutil.copytree(small_dataset, root)
    path = root / "maps" / "1.npz"
    arrays = dict(np.load(path))
    forward = np.vstack([arrays["map_to_image"], [0, 0, 1]]) if "map_to_image" in arrays \
        else np.diag([2.0, 2.0, 1.0])
    arrays["map_to_image"] = np.linalg.inv(forward)[:2].astype(np.float32)
    np.savez(path, **arrays)
    result = check_dataset(root)
    assert not result.ok  # every candidate would land off the image
    (problem,) = result.problems
    assert "inverse affine" in problem.fix and problem.where.endswith("1.npz")


def test_an_affine_in_higherhrnets_scale_units_fails_with_the_hint(small_dataset, tmp_path):
    from posegnn.writer import affine_from_center_scale

    root = tmp_path / "units"
    shutil.copytree(small_dataset, root)
    info = {i["id"]: i for i in json.loads((root / "annotations.json").read_text())["images"]}
    for path in sorted((root / "maps").glob("*.npz")):
        arrays = dict(np.load(path))
        img = info[int(path.stem)]
        side = max(img["width"], img["height"]) / 200  # HigherHRNet's scale, 200-pixel units
        arrays["map_to_image"] = affine_from_center_scale(
            (img["width"] / 2, img["height"] / 2), side, arrays["heatmaps"].shape[:0:-1]
        ).astype(np.float32)
        np.savez(path, **arrays)
    result = check_dataset(root)
    assert main([str(root)]) == 1
    (problem,) = result.problems
    assert "off by 200x" in problem.what and "multiply scale by 200" in problem.fix
    assert "more images like it" in problem.what


def test_padded_maps_without_an_affine_get_a_warning(small_dataset, tmp_path):
    root = tmp_path / "padded"
    shutil.copytree(small_dataset, root)
    doc = json.loads((root / "annotations.json").read_text())
    for img in doc["images"]:  # 640x480, maps of a 704x512 input padded to 64 (352x256)
        img["width"], img["height"] = 640, 480
    doc["annotations"] = []
    (root / "annotations.json").write_text(json.dumps(doc))
    for path in sorted((root / "maps").glob("*.npz")):
        np.savez(path, heatmaps=np.zeros((14, 256, 352), np.float32),
                 tags=np.zeros((14, 128, 176), np.float32))
    result = check_dataset(root)
    assert any("stretched" in w.what and "multiple of 64" in w.what for w in result.warnings)


@pytest.mark.slow
def test_entry_points_report_a_data_error_in_one_message(broken, tmp_path):
    exe = Path(sys.executable).with_name("posegnn-eval")
    args = [str(exe), "data=maps", f"data.test={broken}", "grouping.run=[ae]",
            f"hydra.run.dir={tmp_path / 'run'}", "progress=false",
            f"paths.output_dir={tmp_path}"]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("posegnn-eval: error: ") and "annotations.json" in proc.stderr
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600,
                          env={**env, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr


@pytest.mark.parametrize(("make", "what", "fix"), [
    (lambda d: None, "not a directory", "dataset's folder"),
    (lambda d: d.mkdir(), "missing (a pose-maps dataset needs annotations.json)",
     "COCO keypoints format"),
    (lambda d: (d.mkdir(), (d / "annotations.json").write_text("{")), "not valid JSON",
     "rewrite the file"),
])
def test_a_folder_that_is_no_dataset_says_what_to_do(tmp_path, capsys, make, what, fix):
    make(tmp_path / "d")
    assert main([str(tmp_path / "d")]) == 1
    out = capsys.readouterr().out
    assert what in out and "fix: " in out and fix in out


def test_eval_warns_in_one_line_when_most_candidates_fall_off_their_image():
    from types import SimpleNamespace

    from posegnn.contract import off_image_warning

    images = {1: {"width": 100, "height": 100}, 2: {"width": 100, "height": 100}}
    inside = SimpleNamespace(image_id=1, pos=np.array([[10.0, 10.0], [50.0, 90.0]]))
    outside = SimpleNamespace(image_id=2, pos=np.array([[2000.0, 10.0], [50.0, -900.0],
                                                        [400.0, 400.0]]))
    assert off_image_warning([inside], images.get) is None
    warning = off_image_warning([inside, outside], images.get, "DIR")
    assert warning.startswith("DIR: 3 of 5 candidates (60%) fall outside their image")
    assert "\n" not in warning and "200 pixels" in warning
