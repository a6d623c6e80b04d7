"""The learned-detector world: rendering, targets, losses, the flip test, the writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posegnn.data.learned_detector.network import BottomUpNet
from posegnn.data.learned_detector.render import letterbox_geometry, render_scene
from posegnn.data.learned_detector.train import (
    DetectorConfig,
    ae_loss,
    heatmap_targets,
    held_out_ids,
    load_detector,
    train_detector,
)
from posegnn.data.learned_detector.write import WriteConfig, flip_test, map_affine, write_dataset
from posegnn.data.maps import PoseMapsDataset
from posegnn.data.synthetic import PoseFile, synthetic_scene
from posegnn.layouts import get_layout
from posegnn.tasks.check import check_dataset

LAYOUT = get_layout("crowdpose14")


def scene(seed: int = 0, crowd: str = "medium"):
    return synthetic_scene(np.random.default_rng(seed), 1, LAYOUT, crowd)


def test_render_paints_bodies_and_leaves_the_letterbox_padding_black():
    sc = scene()
    geom = letterbox_geometry(sc.image["width"], sc.image["height"], 64)
    img = render_scene(sc, LAYOUT, geom, np.random.default_rng(1))
    assert img.shape == (3, 64, 64) and img.dtype == np.float32
    lo = geom.to_input(np.zeros(2))
    hi = geom.to_input(np.array([sc.image["width"], sc.image["height"]], float))
    outside = np.ones((64, 64), bool)
    outside[int(lo[1]):int(np.ceil(hi[1])), int(lo[0]):int(np.ceil(hi[0]))] = False
    assert outside.any()  # a letterboxed image (not square)
    assert (img[:, outside] == 0).all()
    empty = sc.__class__(**{**sc.__dict__, "regions": sc.regions.__class__(
        **{**sc.regions.__dict__, "valid": np.zeros_like(sc.regions.valid)}),
        "labels": np.zeros_like(sc.labels)})
    bare = render_scene(empty, LAYOUT, geom, np.random.default_rng(1))
    xy = geom.to_input(sc.joints[sc.labels > 0]).astype(int).clip(0, 63)
    # at the joints the bodies cover the background: the two images differ there
    assert np.abs(img - bare)[:, xy[:, 1], xy[:, 0]].max(axis=0).mean() > 0.05


def test_heatmap_target_peaks_where_the_affine_puts_the_joint():
    sc = scene(3)
    geom = letterbox_geometry(sc.image["width"], sc.image["height"], 64)
    joints = geom.to_input(sc.joints)
    p, k = np.argwhere(sc.labels > 0)[0]
    target = heatmap_targets(joints[p:p + 1], sc.labels[p:p + 1], LAYOUT.num_joints, 32, 1.0)
    v, u = np.unravel_index(target[k].argmax(), target[k].shape)
    affine = map_affine(geom, (32, 32))
    back = affine @ np.array([u, v, 1.0])
    # the target's peak pixel maps back within one output pixel (2 input pixels) of it
    per_pixel = geom.side / 32
    assert np.abs(back - sc.joints[p, k]).max() <= per_pixel
    # and the upsampled maps' affine agrees with the output maps' on the same point
    up = map_affine(geom, (64, 64)) @ np.array([2 * u + 0.5, 2 * v + 0.5, 1.0])
    np.testing.assert_allclose(up, back, atol=1e-9)


def test_ae_loss_pulls_a_persons_tags_together_and_pushes_people_apart():
    tags = torch.zeros(1, 2, 4, 4)
    tags[0, :, 0, :] = 0.0  # person 0 at row 0
    tags[0, :, 3, :] = 10.0  # person 1 at row 3
    rows = np.array([[0, 0, 0, 1], [0, 1, 0, 2], [1, 0, 3, 0], [1, 1, 3, 3]])
    pull, push = ae_loss(tags, [rows])
    assert float(pull) == 0.0 and float(push) < 1e-12
    same = torch.zeros(1, 2, 4, 4)
    pull, push = ae_loss(same, [rows])
    assert float(push) == pytest.approx(0.5)  # exp(0) for the one pair, times 0.5
    spread = torch.zeros(1, 2, 4, 4)
    spread[0, 1, 0, 2] = 2.0  # person 0: tags 0 and 2, mean 1
    pull, _ = ae_loss(spread, [rows])
    assert float(pull) == pytest.approx(0.5)  # ((0-1)^2 + (2-1)^2)/2, over 2 people


def test_flip_test_is_mirror_equivariant():
    torch.manual_seed(0)
    net = BottomUpNet(LAYOUT.num_joints, width=4, depth=2, input_size=32).eval()
    image = torch.rand(1, 3, 32, 32)
    heat, tags = flip_test(net, image, LAYOUT, upsample=True)
    heat_m, tags_m = flip_test(net, image.flip(-1), LAYOUT, upsample=True)
    perm = LAYOUT.flip_permutation()
    np.testing.assert_allclose(heat_m, heat[:, perm, :, ::-1], atol=1e-5)
    # the two tag dimensions trade places under a mirror
    np.testing.assert_allclose(tags_m[..., 0], tags[..., 1][:, perm, :, ::-1], atol=1e-5)
    assert heat.shape == (1, 14, 32, 32) and tags.shape == (1, 14, 16, 16, 2)


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    out = tmp_path_factory.mktemp("detector") / "detector.pt"
    cfg = DetectorConfig(input_size=64, width=4, depth=2, num_scenes=4, steps=3, batch_size=2)
    net, stats = train_detector(cfg, out, log_every=0)
    assert np.isfinite([stats["heat_loss"], stats["pull"], stats["push"]]).all()
    return out


def test_a_briefly_trained_detector_writes_a_valid_dataset_with_2d_tags(tiny_detector,
                                                                          tmp_path):
    out = write_dataset(WriteConfig(out=str(tmp_path / "maps"), weights=str(tiny_detector),
                                    num_images=3, batch_size=2), progress=False)
    result = check_dataset(out)
    assert result.ok, [p.message for p in result.problems]
    ds = PoseMapsDataset(out)
    assert len(ds) == 3 and ds.layout.name == "crowdpose14"
    with np.load(out / "maps" / "1.npz") as z:
        assert z["heatmaps"].shape == (14, 64, 64)
        assert z["tags"].shape == (14, 32, 32, 2)
        assert z["map_to_image"].shape == (2, 3)
    img = ds.image(1)
    corners = ds.load_maps(1).heatmap_to_image(np.array([[0.0, 0.0], [64.0, 64.0]]))
    side = max(img["width"], img["height"])
    np.testing.assert_allclose(corners[1] - corners[0], [side, side], rtol=1e-3)


def test_load_detector_refuses_a_foreign_file(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"something": 1}, bad)
    with pytest.raises(ValueError, match="not a posegnn detector file"):
        load_detector(bad)
    with pytest.raises(FileNotFoundError, match="posegnn-detector train"):
        load_detector(tmp_path / "missing.pt")


def test_real_pose_test_images_never_train_the_detector(dev_poses, tmp_path):
    poses = PoseFile(dev_poses)
    held = held_out_ids(poses, 20, 0)
    cfg = WriteConfig(out=str(tmp_path / "t"), poses=str(dev_poses), images="test",
                      num_images=5, holdout=20)
    from posegnn.data.learned_detector.write import scenes

    test_ids = {s.image["id"] for s in scenes(cfg, poses.layout)}
    train_cfg = WriteConfig(out="x", poses=str(dev_poses), images="train", num_images=5,
                            holdout=20)
    train_ids = {s.image["id"] for s in scenes(train_cfg, poses.layout)}
    assert test_ids <= held and not train_ids & held and len(train_ids) == 5
