"""The models shipped with the package."""

from __future__ import annotations

import pytest
import torch

from posegnn.api import load_grouper
from posegnn.data.maps import PoseMapsDataset
from posegnn.pretrained import export_checkpoint, shipped_checkpoint


def test_the_shipped_model_loads_weights_only_and_groups_an_image(small_dataset):
    path = shipped_checkpoint("crowdpose14")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in ckpt and ckpt["hyper_parameters"]["layout"] == "crowdpose14"
    grouper = load_grouper()  # no checkpoint: the shipped one
    assert grouper.module.scorer is not None  # its person scorer was fitted
    ds = PoseMapsDataset(small_dataset)
    people = grouper(ds.load_maps(ds.image_ids[0]))
    assert len(people) > 0 and people.keypoints.shape[1:] == (14, 3)
    assert (people.scores[:-1] >= people.scores[1:]).all()


def test_every_built_in_layout_has_a_shipped_model_with_a_fitted_scorer():
    from posegnn.checkpoints import load_module
    from posegnn.layouts import LAYOUTS

    for name, layout in LAYOUTS.items():
        module = load_module(shipped_checkpoint(name))
        assert module.hparams.layout == name and module.hparams.num_joints == layout.num_joints
        assert module.scorer is not None


def test_a_layout_without_a_shipped_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shipped model for layout 'mpii'.*crowdpose14"):
        shipped_checkpoint("mpii")
    slim = export_checkpoint(shipped_checkpoint("crowdpose14"), tmp_path / "copy.ckpt")
    assert slim.stat().st_size == shipped_checkpoint("crowdpose14").stat().st_size
