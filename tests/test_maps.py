"""The dataset reader: the contract accepted, every break of it reported by file."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posegnn.data.maps import DatasetError, PoseMapsDataset


@pytest.fixture
def dataset_copy(small_dataset, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(small_dataset, dst)
    return dst


def _edit_annotations(root: Path, edit) -> None:
    path = root / "annotations.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _rewrite_maps(root: Path, image_id: int, **arrays) -> Path:
    path = root / "maps" / f"{image_id}.npz"
    with np.load(path) as npz:
        current = {k: npz[k] for k in npz.files}
    current.update(arrays)
    current = {k: v for k, v in current.items() if v is not None}
    np.savez(path, **current)
    return path


def test_reads_the_generated_dataset(small_dataset):
    ds = PoseMapsDataset(small_dataset)
    assert ds.layout.name == "crowdpose14" and len(ds) == 8
    maps = ds.load_maps(ds.image_ids[0])
    assert maps.heatmaps.shape == (14, 256, 256) and maps.tags.shape == (14, 128, 128, 1)
    assert maps.tag_stride == (2.0, 2.0)
    kps, areas = ds.gt_keypoints(ds.image_ids[0])
    assert kps.shape[1:] == (14, 3) and len(areas) == len(kps)


def test_heatmap_to_image_follows_the_affine(small_dataset):
    ds = PoseMapsDataset(small_dataset)
    img = ds.images[0]
    maps = ds.load_maps(img["id"])
    corner = maps.heatmap_to_image(np.array([[256.0, 256.0]]))[0]
    # the heatmap covers the whole image (possibly with letterbox padding around it)
    assert corner[0] >= img["width"] - 1 and corner[1] >= img["height"] - 1


def test_real_crowdpose_file_loads_with_its_quirks(tmp_path, dev_poses):
    (tmp_path / "annotations.json").symlink_to(dev_poses)
    with pytest.warns(UserWarning, match="skeleton"):
        ds = PoseMapsDataset(tmp_path, check_maps=False)
    assert len(ds) == 1500 and ds.layout.name == "crowdpose14"
    assert all("crowd_index" in img for img in ds.images)  # from crowdIndex
    assert all(a["area"] > 0 or a["iscrowd"] for a in ds.annotations)  # 0.53 * box


CASES = {
    "missing annotations": (lambda r: (r / "annotations.json").unlink(), "annotations.json"),
    "malformed json": (lambda r: (r / "annotations.json").write_text("{\"images\": [1,"),
                       "not valid JSON"),
    "K disagrees with keypoints": (
        lambda r: _edit_annotations(r, lambda d: d["annotations"][0].update(
            keypoints=d["annotations"][0]["keypoints"][:-3])), "keypoint values"),
    "image without maps": (lambda r: (r / "maps" / "1.npz").unlink(), "no maps"),
    "maps without image": (lambda r: shutil.copy(r / "maps" / "1.npz", r / "maps" / "999.npz"),
                           "999.npz"),
    "duplicate image ids": (
        lambda r: _edit_annotations(r, lambda d: d["images"].append(dict(d["images"][0]))),
        "duplicate images id"),
    "duplicate annotation ids": (
        lambda r: _edit_annotations(r, lambda d: d["annotations"].append(
            dict(d["annotations"][0]))), "duplicate annotations id"),
    "visibility outside 0..2": (
        lambda r: _edit_annotations(r, lambda d: d["annotations"][0]["keypoints"].__setitem__(
            2, 3)), "visibility"),
    "negative coordinates": (
        lambda r: _edit_annotations(r, lambda d: d["annotations"][0].update(
            keypoints=[-500 if i % 3 == 0 else (2 if i % 3 == 2 else 10)
                       for i in range(42)])), "outside image"),
    "unknown layout without sigmas": (
        lambda r: _edit_annotations(r, lambda d: d["categories"][0].update(
            keypoints=[f"j{i}" for i in range(14)])), "sigmas"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_annotations_name_the_file(dataset_copy, case):
    breaker, message = CASES[case]
    breaker(dataset_copy)
    with pytest.raises(DatasetError, match=message) as err:
        PoseMapsDataset(dataset_copy)
    assert str(dataset_copy) in str(err.value)


MAP_CASES = {
    "nan in heatmaps": ({"heatmaps": np.full((14, 256, 256), np.nan, np.float32)}, "NaN"),
    "inf in tags": ({"tags": np.full((14, 128, 128), np.inf, np.float16)}, "NaN or inf"),
    "wrong K": ({"heatmaps": np.zeros((17, 256, 256), np.float32)}, "17 maps, the layout has 14"),
    "wrong rank": ({"heatmaps": np.zeros((256, 256), np.float32)}, "rank 2"),
    "wrong dtype": ({"heatmaps": np.zeros((14, 256, 256), np.int32)}, "dtype int32"),
    "missing tags": ({"tags": None}, "missing \\['tags'\\]"),
    "extra array": ({"offsets": np.zeros(3)}, "unexpected \\['offsets'\\]"),
    "bad affine": ({"map_to_image": np.zeros((3, 3))}, "map_to_image"),
}


@pytest.mark.parametrize("case", sorted(MAP_CASES))
def test_broken_maps_name_the_file(dataset_copy, case):
    arrays, message = MAP_CASES[case]
    path = _rewrite_maps(dataset_copy, 1, **arrays)
    ds = PoseMapsDataset(dataset_copy)
    with pytest.raises(DatasetError, match=message) as err:
        ds.load_maps(1)
    assert str(path) in str(err.value)


def test_truncated_npz_is_reported(dataset_copy):
    path = dataset_copy / "maps" / "2.npz"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match="unreadable npz") as err:
        PoseMapsDataset(dataset_copy).load_maps(2)
    assert "2.npz" in str(err.value)


def test_prediction_dataset_without_annotations(dataset_copy):
    _edit_annotations(dataset_copy, lambda d: d.pop("annotations"))
    with pytest.raises(DatasetError, match="no 'annotations'"):
        PoseMapsDataset(dataset_copy)
    ds = PoseMapsDataset(dataset_copy, require_annotations=False)
    assert not ds.has_annotations and ds.gt_keypoints(1)[0].shape == (0, 14, 3)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=8)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["images", "annotations", "categories", "id", "keypoints",
                              "width", "bbox", "image_id"]), value=_json_values)
def test_malformed_annotations_never_crash_uncleanly(dataset_copy, field, value):
    """Whatever garbage a field holds, the reader accepts it or raises DatasetError."""
    original = (dataset_copy / "annotations.json").read_text()
    data = json.loads(original)
    if field in data:
        data[field] = value
    elif field in ("id", "width"):
        data["images"][0][field] = value
    else:
        data["annotations"][0][field] = value
    (dataset_copy / "annotations.json").write_text(json.dumps(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            PoseMapsDataset(dataset_copy)
    except DatasetError as e:
        assert "annotations.json" in str(e)
    finally:
        (dataset_copy / "annotations.json").write_text(original)


def test_broken_maps_can_be_skipped_with_a_logged_count(dataset_copy, tmp_path, caplog):
    from posegnn.data.datamodule import DataConfig, PoseGraphDataModule
    from posegnn.data.graph import GraphConfig

    (dataset_copy / "maps" / "3.npz").write_bytes(b"not a zip")
    data = DataConfig(kind="maps", train=str(dataset_copy), test=str(dataset_copy),
                      cache_dir=str(tmp_path))
    with pytest.raises(DatasetError, match="3.npz"):
        PoseGraphDataModule(data, GraphConfig(), progress=False).dataset("test")
    data.skip_bad_maps = True
    dm = PoseGraphDataModule(data, GraphConfig(), progress=False)
    with caplog.at_level("WARNING"):
        graphs = dm.dataset("test").graphs
    assert len(graphs) == 7 and "skipped 1 of 8 images" in caplog.text and "3.npz" in caplog.text
    assert 3 not in {img["id"] for img in dm.ground_truth("test")["images"]}
