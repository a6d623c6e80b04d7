"""The drop-ins take each tool's tensors in its own layout and answer in its format."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from posegnn.api import load_grouper
from posegnn.data.maps import PoseMapsDataset
from posegnn.integrations.higherhrnet import HeatmapParser
from posegnn.integrations.mmpose import PosegnnAEDecoder


def _maps_at_heat_resolution(ds, image_id):
    """Heatmaps [K, H, W] and tags [K, H, W, D] upsampled to them (as both tools give)."""
    maps = ds.load_maps(image_id)
    sx, sy = (int(s) for s in maps.tag_stride)
    tags = np.repeat(np.repeat(maps.tags, sy, axis=1), sx, axis=2)
    return maps, maps.heatmaps, tags


def _to_image(points, affine):
    return points @ affine[:, :2].T + affine[:, 2]


@pytest.mark.parametrize("grouping", ["gnn", "ae"])
def test_higherhrnet_parse_contract(small_dataset, grouping):
    ds = PoseMapsDataset(small_dataset)
    image_id = ds.image_ids[0]
    maps, heat, tags = _maps_at_heat_resolution(ds, image_id)
    flip = np.concatenate([tags, tags], axis=3)  # flip test: D = 2
    det, tag = torch.from_numpy(heat)[None], torch.from_numpy(flip)[None]
    parser = HeatmapParser(SimpleNamespace(DATASET=SimpleNamespace(NUM_JOINTS=14)),
                           grouping=grouping)
    (people,), scores = parser.parse(det, tag, True, True)
    assert people.shape[1:] == (14, 3 + 2) and len(scores) == len(people) > 0
    assert all(isinstance(s, float) for s in scores)
    # HigherHRNet's adjusted coordinates: det pixels + 0.5; mapped to the image they are
    # posegnn's own people for these maps
    own = load_grouper(grouping=grouping, layout="crowdpose14")(
        heat, flip, map_to_image=maps.map_to_image)
    present = people[..., 2] > 0
    mapped = _to_image(people[..., :2].reshape(-1, 2) - 0.5, maps.map_to_image)
    expected = np.asarray(own.keypoints)[..., :2].reshape(-1, 2)
    assert np.allclose(mapped[present.reshape(-1)], expected[present.reshape(-1)], atol=1e-3)
    # gnn's person score reads sizes in image pixels, which parse (in det's pixels) lacks
    assert np.allclose(scores, own.scores, atol=1e-6 if grouping == "ae" else 0.05)
    # each joint's tag is read where the joint is
    p, j = np.argwhere(present)[0]
    x, y = np.round(people[p, j, :2] - 0.5).astype(int)
    assert np.allclose(people[p, j, 3:], flip[j, y, x])


def test_higherhrnet_parse_without_tag_per_joint_or_with_a_centre(small_dataset):
    ds = PoseMapsDataset(small_dataset)
    _, heat, tags = _maps_at_heat_resolution(ds, ds.image_ids[1])
    shared = tags[:1]  # one tag map for every joint
    (people,), _ = HeatmapParser(grouping="ae").parse(
        torch.from_numpy(heat)[None], torch.from_numpy(shared)[None], False, False)
    assert people.shape[1:] == (14, 4)
    centre = np.concatenate([heat, heat[:1]])[None]  # WITH_CENTER: 15 channels
    cfg = SimpleNamespace(DATASET=SimpleNamespace(NUM_JOINTS=15, WITH_CENTER=True),
                          TEST=SimpleNamespace(IGNORE_CENTER=True))
    (with_centre,), _ = HeatmapParser(cfg, grouping="ae").parse(
        torch.from_numpy(centre), torch.from_numpy(tags)[None], False, False)
    assert with_centre.shape[1] == 14
    with pytest.raises(ValueError, match=r"expected \[1, K, H, W\]"):
        HeatmapParser().parse(torch.from_numpy(heat), torch.from_numpy(tags)[None])


def test_mmpose_batch_decode_contract(small_dataset):
    ds = PoseMapsDataset(small_dataset)
    batch = [_maps_at_heat_resolution(ds, i) for i in ds.image_ids[:2]]
    k, h, w = batch[0][1].shape
    heat = torch.from_numpy(np.stack([b[1] for b in batch]))
    # mmpose's tag channels: dimension l of joint k at l * K + k (L = 2, the second zero)
    tags = np.zeros((2, 2 * k, h, w), np.float32)
    tags[:, :k] = np.stack([b[2][..., 0] for b in batch])
    decoder = PosegnnAEDecoder(input_size=(2 * w, 2 * h), heatmap_size=(w, h))
    keypoints, keypoint_scores, instance_scores = decoder.batch_decode(
        heat, torch.from_numpy(tags))
    assert len(keypoints) == len(keypoint_scores) == len(instance_scores) == 2
    grouper = load_grouper(layout="crowdpose14")
    for i, (_, hm, tg) in enumerate(batch):
        n = len(instance_scores[i])
        assert keypoints[i].shape == (n, k, 2) and keypoint_scores[i].shape == (n, k)
        two_dims = np.concatenate([tg, np.zeros_like(tg)], axis=3)
        own = grouper(hm, two_dims, map_to_image=[[2.0, 0, 0], [0, 2.0, 0]])
        assert np.allclose(keypoints[i], np.asarray(own.keypoints)[..., :2], atol=1e-4)
        assert np.allclose(instance_scores[i], own.scores, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, L \* K, H, W\]"):
        decoder.batch_decode(heat, torch.from_numpy(tags[:, :, :4]))


def test_the_dump_script_needs_a_higherhrnet_checkout(tmp_path):
    from posegnn.integrations.higherhrnet_dump import main

    with pytest.raises(SystemExit, match="is not HigherHRNet's lib/"):
        main(["--higherhrnet", str(tmp_path), "--cfg", "x.yaml", "--out", str(tmp_path)])
