"""A setting with a closed set of values is checked when the config is composed and
built, before any data work, and the message lists the allowed values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from posegnn.choices import SettingError
from posegnn.config import CONF_DIR, register_schemas

register_schemas()


@pytest.mark.parametrize("override, allowed", [
    ("model.conv=edgconv", "edgeconv, edgeconv_attr, gatv2, gine, transformer"),
    ("model.pair=concatenate", "concat, symmetric"),
    ("optimizer.name=adm", "adam, adamw, sgd"),
    ("scheduler.name=cosin", "none, cosine, step, plateau"),
    ("scheduler.mode=up", "min, max"),
    ("graph.normalization=global", "none, per_map, dataset"),
    ("graph.edges.strategy=radiu", "partners, radius, knn, skeleton"),
    ("grouping.gnn.decoder=local", "greedy, local_moves, parallel_moves"),
    ("grouping.gnn.linkage=avg", "mean, min, max"),
    ("grouping.gnn.score=prob", "heat_x_prob, heat, learned"),
    ("data.kind=map", "synthetic, poses, maps"),
    ("data.synthetic.crowd=hrd", "easy, medium, hard, packed, mixed"),
    ("data.synthetic.layout=coco", "crowdpose14, coco17"),
])
def test_a_value_outside_its_set_is_refused_listing_the_allowed_ones(override, allowed):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[override])
    key, value = override.split("=")
    with pytest.raises(SettingError) as err:
        OmegaConf.to_object(cfg)
    assert str(err.value) == f"{key}={value!r} is not one of: {allowed}"


def test_every_decoder_setting_can_be_swept_from_the_command_line():
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["grouping.gnn.linkage=min", "grouping.gnn.score=heat",
                                          "grouping.gnn.decoder=greedy"])
    built = OmegaConf.to_object(cfg).grouping.gnn
    assert (built.linkage, built.score, built.decoder) == ("min", "heat", "greedy")


def test_the_command_line_says_it_in_one_line_before_any_data_work(tmp_path):
    run = subprocess.run(
        [str(Path(sys.executable).with_name("posegnn-train")), "model.conv=edgconv",
         f"paths.output_dir={tmp_path}"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"})
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[0] == ("posegnn-train: error: model.conv='edgconv' is not "
                                          "one of: edgeconv, edgeconv_attr, gatv2, gine, "
                                          "transformer")
    assert not (tmp_path / "data").exists() and not (tmp_path / "cache").exists()
