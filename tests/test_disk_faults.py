"""Files on disk are not trusted: planted caches, decompression bombs, broken annotations
and writes that fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from posegnn.data import cache as cache_mod
from posegnn.data.datamodule import DataConfig, PoseGraphDataModule
from posegnn.data.graph import GraphConfig
from posegnn.data.maps import DatasetError, PoseMapsDataset, read_maps
from posegnn.io import WriteError, atomic_torch_save
from tests.faults import write_bomb


@pytest.fixture
def dataset_copy(small_dataset, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(small_dataset, dst)
    return dst


def _datamodule(root: Path, cache_dir: Path, **data) -> PoseGraphDataModule:
    cfg = DataConfig(kind="maps", train=str(root), test=str(root), cache_dir=str(cache_dir),
                     **data)
    return PoseGraphDataModule(cfg, GraphConfig(), progress=False)


class _RunsCode:
    """Unpickling this would create ``marker``: what a planted cache file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# -- 1. nothing read from disk runs code ---------------------------------------------------
@pytest.mark.parametrize("fault", ["malicious pickle", "truncated", "foreign format"])
def test_an_untrusted_cache_is_refused_and_rebuilt(small_dataset, tmp_path, fault, caplog):
    ds = PoseMapsDataset(small_dataset)
    args = (ds, ds.image_ids, GraphConfig(), tmp_path / "cache", "test", False)
    path = cache_mod.cached_graphs(*args)
    good = cache_mod.load_graphs(path)
    marker = tmp_path / "code-ran"
    if fault == "malicious pickle":
        torch.save({"format": cache_mod.CACHE_FORMAT, "graphs": _RunsCode(marker)}, path)
    elif fault == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        torch.save({"format": 1, "graphs": []}, path)

    with pytest.raises(cache_mod.CacheError, match=str(path)):
        cache_mod.load_graphs(path)
    with caplog.at_level("WARNING"):
        rebuilt = cache_mod.load_cached_graphs(*args)
    assert not marker.exists()
    assert "rebuilding" in caplog.text and str(path) in caplog.text
    assert len(rebuilt) == len(good)
    for a, b in zip(rebuilt, good, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.person, b.person)
    assert cache_mod.load_graphs(path)  # the file on disk is a good cache again


def test_cache_round_trip_keeps_every_field(small_dataset):
    ds = PoseMapsDataset(small_dataset)
    graphs = cache_mod.build_graphs(ds, ds.image_ids, GraphConfig(), progress=False)
    back = cache_mod.unpack_graphs(cache_mod.pack_graphs(graphs), Path("memory"))
    for a, b in zip(back, graphs, strict=True):
        assert set(a.keys()) == set(b.keys()) and a.num_nodes == b.num_nodes
        for key in set(b.keys()) - {"num_nodes"}:
            assert torch.equal(a[key], b[key]), key


# -- 2. bounded inputs ---------------------------------------------------------------------
def test_a_decompression_bomb_is_refused_from_its_headers(dataset_copy):
    ds = PoseMapsDataset(dataset_copy)
    path = ds.maps_path(ds.image_ids[0])
    write_bomb(path, (14, 4096, 4096), (14, 2048, 2048))
    assert path.stat().st_size < 3 * 2**20  # a few megabytes on disk, 560 MiB decompressed
    tracemalloc.start()
    with pytest.raises(DatasetError, match=r"3.npz|MiB") as err:
        ds.load_maps(ds.image_ids[0])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(path) in str(err.value) and "data.max_map_mib" in str(err.value)
    assert peak < 8 * 2**20  # nothing was decompressed
    # a higher limit is the user's call, and then the file is read as any other
    relaxed = PoseMapsDataset(dataset_copy, max_map_mib=0.5)
    with pytest.raises(DatasetError, match="0.5 MiB"):
        relaxed.load_maps(ds.image_ids[1])


def test_reading_an_accepted_image_takes_a_small_multiple_of_its_size(small_dataset):
    ds = PoseMapsDataset(small_dataset)
    tracemalloc.start()
    maps = ds.load_maps(ds.image_ids[0])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    accepted = maps.heatmaps.nbytes + maps.tags.nbytes  # float32
    assert peak < 2 * accepted


@pytest.mark.parametrize("arrays, message", [
    ({"tags": np.zeros((14, 128, 100), np.float16)}, "same field of view"),
    ({"heatmaps": np.zeros((14, 256, 256), np.float64)}, "astype"),
    ({"heatmaps": np.zeros((256, 256, 14), np.float32)}, "channel-last"),
    ({"heatmaps": np.zeros((14, 0, 256), np.float32)}, "empty"),
])
def test_maps_whose_shapes_or_dtypes_disagree_are_refused(dataset_copy, arrays, message):
    ds = PoseMapsDataset(dataset_copy)
    path = ds.maps_path(ds.image_ids[0])
    with np.load(path) as npz:
        current = {k: npz[k] for k in npz.files}
    np.savez(path, **{**current, **arrays})
    with pytest.raises(DatasetError, match=message) as err:
        read_maps(path, ds.image(ds.image_ids[0]), 14)
    assert str(path) in str(err.value)


def test_zero_padded_map_names_get_the_fix(dataset_copy):
    (dataset_copy / "maps" / "1.npz").rename(dataset_copy / "maps" / "000001.npz")
    with pytest.raises(DatasetError, match="000001.npz should be 1.npz"):
        PoseMapsDataset(dataset_copy)


# -- 4. skipping broken annotations --------------------------------------------------------
def _break_annotations(root: Path) -> int:
    """Break one annotation's keypoints and one image's size; return the first image."""
    path = root / "annotations.json"
    data = json.loads(path.read_text())
    broken = data["annotations"][0]
    broken["keypoints"] = broken["keypoints"][:-3]
    data["images"][-1]["width"] = 0
    path.write_text(json.dumps(data))
    return broken["image_id"], data["images"][-1]["id"]


def test_broken_annotations_stop_the_run_or_are_skipped_with_a_count(dataset_copy, tmp_path,
                                                                     caplog):
    bad_ann_image, bad_size_image = _break_annotations(dataset_copy)
    with pytest.raises(DatasetError, match="positive 'width'"):
        _datamodule(dataset_copy, tmp_path).dataset("test")
    with caplog.at_level("WARNING"):
        dm = _datamodule(dataset_copy, tmp_path, skip_bad_annotations=True)
        graphs = dm.dataset("test").graphs
    assert "left out 2 of 8 images with broken annotations" in caplog.text
    assert "keypoint values" in caplog.text and "positive 'width'" in caplog.text
    left_out = {bad_ann_image, bad_size_image}
    assert len(graphs) == 6 and not left_out & {int(g.image_id) for g in graphs}
    gt = dm.ground_truth("test")
    assert not left_out & {img["id"] for img in gt["images"]}
    assert not left_out & {a["image_id"] for a in gt["annotations"]}


# -- 5. writes that fail -------------------------------------------------------------------
_FILE_SIZE_LIMIT = """
import resource, signal, sys, torch
from posegnn.io import WriteError, atomic_torch_save
from tests.faults import write_bomb
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    atomic_torch_save({"weights": torch.zeros(100_000)}, sys.argv[1])
except WriteError as err:
    print(err)
    sys.exit(3)
"""


def test_a_full_disk_keeps_the_previous_file_and_leaves_no_partial_one(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"weights": torch.ones(3)}, path)
    before = path.read_bytes()
    run = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMIT, str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stderr
    assert str(path) in run.stdout and "previous file is kept" in run.stdout
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_an_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "outputs"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(WriteError, match="outputs/cache/x.pt: could not write"):
        atomic_torch_save({"a": torch.ones(1)}, blocker / "cache" / "x.pt")


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_torch_save({"a": torch.ones(1)}, tmp_path / "shared.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_command_that_cannot_write_says_so_in_one_line(small_dataset, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the cache folder should be")
    run = subprocess.run(
        [str(Path(sys.executable).with_name("posegnn-eval")), "grouping.run=[ae,oracle]",
         "data=maps", f"data.test={small_dataset}", f"data.cache_dir={blocker / 'cache'}",
         f"hydra.run.dir={tmp_path / 'run'}", "progress=false"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"})
    assert run.returncode == 1
    assert "posegnn-eval: error:" in run.stderr and "could not write" in run.stderr
    assert str(blocker) in run.stderr and "Traceback" not in run.stderr
