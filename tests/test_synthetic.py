"""The synthetic pose-maps world: contract, determinism, realism and atomic writes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from posegnn.choices import typed
from posegnn.data.synthetic import DetectorNoise, SyntheticConfig, generate_dataset
from posegnn.data.synthetic import writer as writer_mod
from posegnn.data.synthetic.detector import Peaks, merge_peaks, render_heatmaps, swapped_channels
from posegnn.layouts import get_layout

QUIET = DetectorNoise(tag_noise=0.02, crowd_confusion=0.0, miss_rate=0.0,
                      occluded_miss_rate=0.0, false_positive_rate=0.0, jitter=0.0,
                      swap_rate=0.0, merge_distance=0.0)


# -- an independent reader ----------------------------------------------------------------
def read_dataset(root: Path) -> tuple[dict, dict[int, dict[str, np.ndarray]]]:
    """Plain json + numpy reading of a dataset directory."""
    with open(root / "annotations.json", encoding="utf-8") as f:
        data = json.load(f)
    maps = {}
    for path in sorted((root / "maps").iterdir()):
        with np.load(path, allow_pickle=False) as z:
            maps[int(path.stem)] = {k: z[k] for k in z.files}
    return data, maps


def map_to_image(img: dict, arrays: dict, size: int = 256) -> np.ndarray:
    """The [2, 3] heatmap-to-image affine, defaulting to plain scaling."""
    if "map_to_image" in arrays:
        return arrays["map_to_image"].astype(np.float64)
    return np.array([[img["width"] / size, 0, 0], [0, img["height"] / size, 0]])


def ref_crowd_index(anns: list[dict]) -> float:
    """CrowdPose crowd index, written out loop by loop."""
    ratios = []
    for a in anns:
        kp = np.array(a["keypoints"]).reshape(-1, 3)
        own = int((kp[:, 2] > 0).sum())
        if own == 0:
            continue
        x, y, w, h = a["bbox"]
        others = 0
        for b in anns:
            if b is a:
                continue
            for px, py, v in np.array(b["keypoints"]).reshape(-1, 3):
                others += v > 0 and x <= px <= x + w and y <= py <= y + h
        ratios.append(others / own)
    return float(np.mean(ratios)) if ratios else 0.0


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def gen(tmp_path: Path, name: str, **kw) -> tuple[Path, SyntheticConfig]:
    image_ids = kw.pop("image_ids", None)
    cfg = SyntheticConfig(**{"num_images": 6, **kw})
    return generate_dataset(tmp_path / name, cfg, progress=False, image_ids=image_ids), cfg


# -- contract -----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["crowdpose14", "coco17"])
def test_contract(tmp_path, layout):
    root, _ = gen(tmp_path, "ds", layout=layout, num_images=8, seed=3)
    data, maps = read_dataset(root)
    lay = get_layout(layout)
    k = lay.num_joints
    (cat,) = data["categories"]
    assert cat["keypoints"] == list(lay.joints)
    assert all(1 <= a <= k and 1 <= b <= k for a, b in cat["skeleton"])
    ids = [img["id"] for img in data["images"]]
    assert len(set(ids)) == len(ids) == 8 and set(ids) == set(maps)
    letterboxed = 0
    for img in data["images"]:
        arr = maps[img["id"]]
        assert set(arr) <= {"heatmaps", "tags", "map_to_image"}
        assert arr["heatmaps"].shape == (k, 256, 256) and arr["heatmaps"].dtype == np.float16
        assert arr["tags"].shape == (k, 128, 128) and arr["tags"].dtype == np.float16
        assert np.isfinite(arr["heatmaps"]).all() and np.isfinite(arr["tags"]).all()
        assert 0 <= arr["heatmaps"].min() and arr["heatmaps"].max() < 1
        square = img["width"] == img["height"]
        assert ("map_to_image" in arr) == (not square)
        if not square:
            letterboxed += 1
            assert arr["map_to_image"].shape == (2, 3)
            assert arr["map_to_image"].dtype == np.float32
        anns = [a for a in data["annotations"] if a["image_id"] == img["id"]]
        assert img["crowd_index"] == pytest.approx(ref_crowd_index(anns), abs=1e-3)
        for a in anns:
            kp = np.array(a["keypoints"], dtype=float).reshape(-1, 3)
            assert kp.shape == (k, 3) and set(kp[:, 2]) <= {0, 1, 2}
            assert a["num_keypoints"] == int((kp[:, 2] > 0).sum()) >= 3
            lab = kp[kp[:, 2] > 0]
            assert (lab[:, 0] >= 0).all() and (lab[:, 0] < img["width"]).all()
            assert (lab[:, 1] >= 0).all() and (lab[:, 1] < img["height"]).all()
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= img["width"] + 0.01 and w > 0 and h > 0
            assert a["area"] > 0 and a["iscrowd"] == 0 and a["category_id"] == cat["id"]
    ann_ids = [a["id"] for a in data["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    assert 0 < letterboxed < 8  # both the letterboxed and the plain path


def test_same_seed_same_bytes_and_subsets(tmp_path):
    a, _ = gen(tmp_path, "a", seed=5)
    b, _ = gen(tmp_path, "b", seed=5)
    c, _ = gen(tmp_path, "c", seed=6)
    sub, _ = gen(tmp_path, "sub", seed=5, image_ids=[2, 5])
    ha, hb, hc, hs = hashes(a), hashes(b), hashes(c), hashes(sub)
    assert ha == hb
    assert ha["annotations.json"] != hc["annotations.json"]
    assert sum(ha[f] != hc.get(f) for f in ha) >= len(ha) - 1
    for f in ("maps/2.npz", "maps/5.npz"):  # an image does not depend on its neighbours
        assert hs[f] == ha[f]


def test_crowd_levels(tmp_path):
    stats = {}
    for crowd in ("easy", "hard"):
        root, _ = gen(tmp_path, crowd, crowd=crowd, num_images=10, seed=1)
        data, _ = read_dataset(root)
        ci = [img["crowd_index"] for img in data["images"]]
        stats[crowd] = (np.mean(ci), len(data["annotations"]) / len(ci))
        if crowd == "easy":
            assert np.mean(np.array(ci) < 0.2) >= 0.8
        else:
            assert np.mean(np.array(ci) >= 0.8) >= 0.8
    assert stats["hard"][0] > stats["easy"][0] + 0.5
    assert stats["hard"][1] > stats["easy"][1]


def test_peaks_lie_on_labeled_joints(tmp_path):
    root, _ = gen(tmp_path, "q", noise=QUIET, num_images=6, seed=2, crowd="medium")
    data, maps = read_dataset(root)
    found = total = 0
    for img in data["images"]:
        arr = maps[img["id"]]
        heat = arr["heatmaps"].astype(np.float32)
        a2i = map_to_image(img, arr)
        tol = 1.5 * abs(a2i[0, 0])  # 1.5 heatmap pixels, in image pixels
        peaks = (heat == ndimage.maximum_filter(heat, size=(1, 3, 3))) & (heat > 0.05)
        kpts = np.array([a["keypoints"] for a in data["annotations"]
                         if a["image_id"] == img["id"]], dtype=float).reshape(-1, heat.shape[0], 3)
        for ch, v, u in np.argwhere(peaks):
            xy = a2i[:, :2] @ [u, v] + a2i[:, 2]
            gt = kpts[:, ch]
            d = np.linalg.norm(gt[gt[:, 2] > 0, :2] - xy, axis=1)
            assert d.size and d.min() < tol, f"stray peak in channel {ch} of {img['id']}"
        for p, ch in np.argwhere(kpts[..., 2] > 0):
            u, v = np.linalg.solve(a2i[:, :2], kpts[p, ch, :2] - a2i[:, 2])
            iu, iv = int(round(u)), int(round(v))
            total += 1
            found += heat[ch, max(iv - 1, 0):iv + 2, max(iu - 1, 0):iu + 2].max() > 0.05
    assert total > 20 and found == total


def test_tags_group_people(tmp_path):
    noise = replace(QUIET, tag_noise=0.05)
    root, _ = gen(tmp_path, "t", noise=noise, num_images=4, seed=4, crowd="easy")
    data, maps = read_dataset(root)
    within, between, people = [], [], 0
    for img in data["images"]:
        arr = maps[img["id"]]
        a2i = map_to_image(img, arr)
        person_tags = []
        for a in (a for a in data["annotations"] if a["image_id"] == img["id"]):
            kp = np.array(a["keypoints"], dtype=float).reshape(-1, 3)
            vals = []
            for ch in np.flatnonzero(kp[:, 2] > 0):
                u, v = np.linalg.solve(a2i[:, :2], kp[ch, :2] - a2i[:, 2]) / 2  # tag pixels
                vals.append(float(arr["tags"][ch, int(round(v)), int(round(u))]))
            person_tags.append(np.array(vals))
        people += len(person_tags)
        within += [np.abs(t - np.median(t)).mean() for t in person_tags]
        med = [np.median(t) for t in person_tags]
        between += [abs(x - y) for i, x in enumerate(med) for y in med[i + 1:]]
    assert people >= 6 and between
    assert np.mean(within) < 0.15 < 0.5 < np.min(between)


# -- real poses -----------------------------------------------------------------------------
def tiny_pose_file(path: Path) -> Path:
    """A small COCO keypoint file without crowd index or area, with a crowd region."""
    k = 14
    kp1 = np.zeros((k, 3))
    kp1[:, 0], kp1[:, 1], kp1[:, 2] = np.linspace(100, 200, k), np.linspace(50, 300, k), 2
    kp2 = kp1.copy()
    kp2[:, 0] += 40
    kp2[:2, 2] = 1
    anns = [
        {"id": 11, "image_id": 7, "category_id": 1, "keypoints": kp1.ravel().tolist(),
         "num_keypoints": 14, "bbox": [90, 40, 120, 270], "iscrowd": 0},
        {"id": 12, "image_id": 7, "category_id": 1, "keypoints": kp2.ravel().tolist(),
         "num_keypoints": 14, "bbox": [130, 40, 120, 270], "iscrowd": 0},
        {"id": 13, "image_id": 7, "category_id": 1, "keypoints": [0] * 42,
         "num_keypoints": 0, "bbox": [300, 10, 50, 40], "iscrowd": 1},
    ]
    data = {"images": [{"id": 7, "file_name": "7.jpg", "width": 400, "height": 320},
                       {"id": 9, "file_name": "9.jpg", "width": 300, "height": 300}],
            "annotations": anns,
            "categories": [{"id": 1, "name": "person",
                            "keypoints": list(get_layout("crowdpose14").joints),
                            "skeleton": [[16, 14], [14, 12]]}]}
    path.write_text(json.dumps(data))
    return path


def test_pose_file_quirks(tmp_path):
    poses = tiny_pose_file(tmp_path / "poses.json")
    with pytest.warns(UserWarning, match="skeleton"):
        root, _ = gen(tmp_path, "real", poses=str(poses), num_images=5)
    data, maps = read_dataset(root)
    assert sorted(img["id"] for img in data["images"]) == [7, 9]
    img7 = next(img for img in data["images"] if img["id"] == 7)
    anns = [a for a in data["annotations"] if a["image_id"] == 7]
    assert img7["crowd_index"] == pytest.approx(ref_crowd_index(anns[:2]), abs=1e-3)
    assert [a["id"] for a in anns] == [11, 12, 13] and anns[2]["iscrowd"] == 1
    assert anns[0]["area"] == pytest.approx(0.53 * 120 * 270)
    assert "map_to_image" in maps[7] and "map_to_image" not in maps[9]
    assert maps[9]["heatmaps"].max() < 0.5  # no people: only spurious peaks


def test_pose_file_crowdpose(tmp_path, dev_poses):
    raw = json.loads(dev_poses.read_text())
    src_images = {img["id"]: img for img in raw["images"]}
    src_anns = {a["id"]: a for a in raw["annotations"]}
    noise = replace(QUIET, tag_noise=0.05)
    with pytest.warns(UserWarning):
        root, _ = gen(tmp_path, "cp", poses=str(dev_poses), num_images=5, seed=0, noise=noise)
        again, _ = gen(tmp_path, "cp2", poses=str(dev_poses), num_images=5, seed=0,
                       noise=noise)
    assert hashes(root) == hashes(again)
    data, maps = read_dataset(root)
    assert len(data["images"]) == 5
    for img in data["images"]:
        src = src_images[img["id"]]
        assert (img["width"], img["height"]) == (src["width"], src["height"])
        assert img["crowd_index"] == src["crowdIndex"]
        assert ("map_to_image" in maps[img["id"]]) == (src["width"] != src["height"])
    for a in data["annotations"]:
        s = src_anns[a["id"]]
        assert a["keypoints"] == s["keypoints"] and a["bbox"] == s["bbox"]
        assert a["image_id"] == s["image_id"]
        assert a["area"] == pytest.approx(0.53 * s["bbox"][2] * s["bbox"][3], abs=0.01)
    # the strongest peak of each channel maps back onto a labeled joint of that type
    for img in data["images"]:
        arr = maps[img["id"]]
        a2i = map_to_image(img, arr)
        kpts = np.array([a["keypoints"] for a in data["annotations"]
                         if a["image_id"] == img["id"] and not a["iscrowd"]],
                        dtype=float).reshape(-1, 14, 3)
        for ch in range(14):
            heat = arr["heatmaps"][ch].astype(np.float32)
            if heat.max() < 0.05:
                continue
            v, u = np.unravel_index(heat.argmax(), heat.shape)
            xy = a2i[:, :2] @ [u, v] + a2i[:, 2]
            gt = kpts[kpts[:, ch, 2] > 0, ch, :2]
            assert np.linalg.norm(gt - xy, axis=1).min() < 1.5 * abs(a2i[0, 0])
    # explicit image ids (a train/test split by image)
    pick = sorted(src_images)[:3]
    with pytest.warns(UserWarning):
        sub, _ = gen(tmp_path, "ids", poses=str(dev_poses), image_ids=pick)
    assert [img["id"] for img in read_dataset(sub)[0]["images"]] == pick


# -- writing --------------------------------------------------------------------------------
def test_atomic_write(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = writer_mod.render_maps

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed mid-run")
        return real(*args, **kw)

    monkeypatch.setattr(writer_mod, "render_maps", failing)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="killed"):
        generate_dataset(out, SyntheticConfig(num_images=5), progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_dataset(out, SyntheticConfig(num_images=1), progress=False)
    generate_dataset(out, SyntheticConfig(num_images=2), progress=False, overwrite=True)
    assert not (out / "keep.txt").exists() and len(list((out / "maps").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(ValueError, match="crowd"):
        generate_dataset(tmp_path / "bad", SyntheticConfig(crowd="dense"), progress=False)


def test_config_from_mapping(tmp_path):
    """Plain values become the schema through the one shared helper (``typed``)."""
    cfg = typed(SyntheticConfig, {"num_images": 2, "seed": 1, "crowd": "easy",
                                  "layout": "coco17",
                                  "noise": {"tag_noise": 0.2, "tag_background": 0.05}})
    assert cfg.noise == DetectorNoise(tag_noise=0.2, tag_background=0.05)
    root = generate_dataset(tmp_path / "m", cfg, progress=False)
    data, maps = read_dataset(root)
    assert len(maps) == 2 and len(data["categories"][0]["keypoints"]) == 17
    assert all(np.isfinite(m["tags"]).all() and m["tags"].std() > 0 for m in maps.values())


# -- detector pieces ------------------------------------------------------------------------
def test_merge_swap_and_local_render():
    peaks = Peaks(pos=np.array([[50.0, 50.0], [51.0, 50.0], [50.0, 50.0], [90.0, 20.0]]),
                  channel=np.array([0, 0, 1, 0]), height=np.array([0.9, 0.6, 0.5, 0.7]),
                  tag=np.array([1.0, 2.0, 3.0, 4.0]))
    merged = merge_peaks(peaks, distance=2.0)
    assert len(merged.channel) == 3 and merged.tag.tolist() == [1.0, 3.0, 4.0]
    assert 50.0 < merged.pos[0, 0] < 50.5
    heat = render_heatmaps(merged, 2, 128, sigma=2.0)
    local_max = (heat == ndimage.maximum_filter(heat, size=(1, 3, 3))) & (heat > 0.01)
    assert local_max[0].sum() == 2 and local_max[1].sum() == 1
    assert heat[0, 50, 50] == pytest.approx(0.9 * np.exp(-(merged.pos[0, 0] - 50) ** 2 / 8),
                                            rel=1e-5)
    assert heat[0, 70:, :].sum() == 0 and heat[:, :40, :40].sum() == 0  # windows only
    lay = get_layout("crowdpose14")
    rng = np.random.default_rng(0)
    swapped = swapped_channels(lay, np.zeros(2, dtype=bool), 1.0, rng)
    assert (swapped == lay.flip_permutation()).all()
    assert (swapped_channels(lay, np.zeros(2, dtype=bool), 0.0, rng) == np.arange(14)).all()


def test_an_image_nobody_lands_in_is_written_empty(tmp_path, monkeypatch):
    """When every drawn person falls outside the image, the image has no people."""
    from posegnn.data.maps import PoseMapsDataset
    from posegnn.data.synthetic import scene as scene_mod

    place = scene_mod._place_bodies

    def outside(rng, w, h, spec):
        joints, labeled, behind, heights = place(rng, w, h, spec)
        return joints + 10 * max(w, h), labeled, behind, heights

    monkeypatch.setattr(scene_mod, "_place_bodies", outside)
    out = generate_dataset(tmp_path / "empty", SyntheticConfig(num_images=2, crowd="easy"),
                           progress=False)
    ds = PoseMapsDataset(out)
    assert ds.annotations == [] and all(img["crowd_index"] == 0.0 for img in ds.images)
    assert ds.load_maps(1).heatmaps.shape == (14, 256, 256)


# -- a detector that varies per image -----------------------------------------------------
def test_noise_ranges_vary_the_detector_per_image(tmp_path):
    ranges = {"heatmap_size": [128, 256], "tag_noise": [0.0, 0.6], "heat_sigma": [1.0, 3.0]}
    root, _ = gen(tmp_path, "varied", num_images=8, seed=3, noise_ranges=ranges)
    _, maps = read_dataset(root)
    sizes = {arrays["heatmaps"].shape[1] for arrays in maps.values()}
    assert len(sizes) > 1 and all(128 <= s <= 256 and s % 16 == 0 for s in sizes)
    for arrays in maps.values():  # the tag map keeps its ratio to the heatmap
        assert arrays["tags"].shape[1] * 2 == arrays["heatmaps"].shape[1]
    from posegnn.data.maps import PoseMapsDataset
    ds = PoseMapsDataset(root)  # and the contract holds at every resolution
    assert all(ds.load_maps(i).heatmaps.shape[0] == 14 for i in ds.image_ids)
    again, _ = gen(tmp_path, "again", num_images=8, seed=3, noise_ranges=ranges)
    assert hashes(again) == hashes(root)
    # without ranges, the same seed gives the fixed detector's images, as before
    fixed, _ = gen(tmp_path, "fixed", num_images=8, seed=3)
    _, fixed_maps = read_dataset(fixed)
    assert {a["heatmaps"].shape[1] for a in fixed_maps.values()} == {256}


@pytest.mark.parametrize("ranges, message", [
    ({"tag_nose": [0, 1]}, "is not one of: confusion_range"),
    ({"tag_noise": [0.5, 0.1]}, "low <= high")])
def test_bad_noise_ranges_are_refused(tmp_path, ranges, message):
    with pytest.raises(ValueError, match=message):
        gen(tmp_path, "bad", noise_ranges=ranges)


# -- D-dimensional tags -------------------------------------------------------------------
def test_d_dimensional_tags_follow_the_contract(tmp_path):
    from posegnn.data.maps import PoseMapsDataset
    root, _ = gen(tmp_path, "d3", num_images=4, seed=3, noise=DetectorNoise(tag_dim=3))
    _, maps = read_dataset(root)
    for arrays in maps.values():
        assert arrays["tags"].shape == (14, 128, 128, 3) and arrays["tags"].dtype == np.float16
        assert np.isfinite(arrays["tags"]).all()
    ds = PoseMapsDataset(root)  # the reader takes them as D-dimensional tags
    assert all(ds.load_maps(i).tags.shape == (14, 128, 128, 3) for i in ds.image_ids)


def test_tag_distances_behave_alike_whatever_the_dimension():
    from types import SimpleNamespace

    from posegnn.data.synthetic.detector import joint_tags, person_tags
    scene = SimpleNamespace(labels=np.ones((40, 14)), occluded=np.zeros((40, 14), bool))
    noise = DetectorNoise(tag_noise=0.2, crowd_confusion=0.0)
    for dim in (1, 2, 4):
        rng = np.random.default_rng(dim)
        base = person_tags(rng, 9, 1.0, dim)
        assert base.shape == (9, dim)
        gaps = np.linalg.norm(base[:, None] - base[None], axis=2) + np.eye(9) * 99
        assert gaps.min() >= 0.5  # neighbours lie about tag_spread apart, never on top
        assert 0.6 <= np.median(gaps.min(axis=1)) <= 1.4
        base = person_tags(rng, 40, 1.0, dim)
        tags = joint_tags(scene, base, noise, rng)  # [P, K, D]
        rms = np.sqrt(((tags - base[:, None]) ** 2).sum(axis=2).mean())
        assert rms == pytest.approx(0.2, rel=0.05)  # tag_noise is the noise's length


def test_a_drawn_tag_dimension_leaves_the_other_images_as_they_were(tmp_path):
    varied, _ = gen(tmp_path, "varied", num_images=10, seed=4, noise_ranges={"tag_dim": [1, 4]})
    fixed, _ = gen(tmp_path, "fixed", num_images=10, seed=4)
    _, maps = read_dataset(varied)
    dims = {i: 1 if a["tags"].ndim == 3 else a["tags"].shape[3] for i, a in maps.items()}
    assert set(dims.values()) == {1, 2, 3, 4}
    new, old = hashes(varied), hashes(fixed)
    for i, d in dims.items():  # an image that drew D = 1 is the fixed detector's image
        assert (new[f"maps/{i}.npz"] == old[f"maps/{i}.npz"]) == (d == 1)


@pytest.mark.parametrize("kw, message", [
    ({"noise_ranges": {"tag_dim": [1.5, 3]}}, "whole number"),
    ({"noise": DetectorNoise(tag_dim=0)}, "noise.tag_dim=0")])
def test_bad_tag_dimensions_are_refused(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        gen(tmp_path, "bad", **kw)


def _people(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints [N, K, 3] and boxes [N, 4] of every person of a dataset."""
    data, _ = read_dataset(root)
    anns = data["annotations"]
    k = len(data["categories"][0]["keypoints"])
    return (np.array([a["keypoints"] for a in anns], dtype=float).reshape(-1, k, 3),
            np.array([a["bbox"] for a in anns], dtype=float))


def test_hidden_below_leaves_legs_unlabeled_and_boxes_short(tmp_path):
    ankles = [get_layout("crowdpose14").joints.index(n) for n in ("left_ankle", "right_ankle")]
    whole_kp, whole_box = _people(gen(tmp_path, "whole", num_images=12, seed=3)[0])
    cut_kp, cut_box = _people(gen(tmp_path, "cut", num_images=12, seed=3, hidden_below=1.0)[0])
    assert len(whole_kp) > 30 and len(cut_kp) > 30
    assert (whole_kp[:, ankles, 2] > 0).any(axis=1).mean() > 0.6
    assert (cut_kp[:, ankles, 2] > 0).any(axis=1).mean() < 0.1
    # a box holds the seen body: it ends near the lowest labeled joint
    lowest = np.where(cut_kp[..., 2] > 0, cut_kp[..., 1], -np.inf).max(axis=1)
    assert np.all(cut_box[:, 1] + cut_box[:, 3] <= lowest + 0.1 * whole_box[:, 3].max())
    assert np.median(cut_box[:, 3]) < 0.8 * np.median(whole_box[:, 3])
    with pytest.raises(ValueError, match=r"hidden_below=1.5: a share of the people"):
        gen(tmp_path, "bad", hidden_below=1.5)


def test_hidden_below_is_a_training_world_setting(tmp_path):
    """The default world hides legs in its training split only; its other splits keep the
    names (and bytes) they had before the setting existed."""
    from posegnn.data.datamodule import DataConfig, PoseGraphDataModule, SyntheticSplits
    from posegnn.data.graph import GraphConfig

    def split_dirs(hidden: float) -> dict[str, Path]:
        data = DataConfig(root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"),
                          synthetic=SyntheticSplits(num_train=3, num_val=2, num_test=2,
                                                    hidden_below=hidden))
        dm = PoseGraphDataModule(data, GraphConfig(), progress=False)
        return {split: dm.source(split)[0].root for split in ("train", "test")}

    default, without = split_dirs(SyntheticSplits.hidden_below), split_dirs(0.0)
    assert SyntheticSplits.hidden_below > 0
    assert default["test"] == without["test"] and default["train"] != without["train"]
    for split, root in default.items():
        info = read_dataset(Path(root))[0]["info"]["config"]
        assert info["hidden_below"] == (SyntheticSplits.hidden_below if split == "train" else 0)
