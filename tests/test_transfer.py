"""posegnn-transfer: worlds, mixes, and the matrix, run end to end as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posegnn.config import CONF_DIR
from posegnn.data.maps import PoseMapsDataset
from posegnn.data.synthetic import SyntheticConfig, generate_dataset
from posegnn.tasks.transfer import gap_closed
from posegnn.tasks.worlds import WorldConfig, mixed_dataset, world_split

ENV = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}


def transfer(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "posegnn.cli.transfer", *args], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"posegnn-transfer failed:\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def run_folder(out: Path) -> Path:
    (run,) = sorted((out / "transfer").iterdir())
    return run


@pytest.fixture(scope="module")
def cross(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("transfer")
    proc = transfer("transfer=tiny", f"paths.output_dir={out}", cwd=out)
    assert "trained on \\ tested on" in proc.stdout
    return run_folder(out)


def test_gap_closed():
    assert gap_closed(0.6, 0.4, 0.8) == pytest.approx(0.5)
    assert gap_closed(0.3, 0.4, 0.8) == pytest.approx(-0.25)
    assert gap_closed(0.5, 0.4, 0.4) is None and gap_closed(None, 0.4, 0.8) is None


@pytest.mark.slow
def test_cross_matrix_has_every_cell_from_its_evaluations(cross):
    result = json.loads((cross / "transfer.json").read_text())
    worlds = ["skeletons_fixed", "learned"]
    assert result["worlds"] == worlds and result["rows"] == worlds
    for row in worlds:
        for w in worlds:
            c = result["cells"][row][w]
            gnn = json.loads((cross / "eval" / row / w / "metrics.json").read_text())
            base = json.loads((cross / "eval" / "baselines" / w / "metrics.json").read_text())
            assert c["gnn_AP"] == gnn["test/gnn/AP"] and c["ae_AP"] == base["test/ae/AP"]
            assert c["oracle_AP_hard"] == base["test/oracle/AP_hard"]
            assert c["gap_AP"] == pytest.approx(gap_closed(c["gnn_AP"], c["ae_AP"],
                                                           c["oracle_AP"]))
            assert 0.0 <= c["ae_AP"] <= 1.0 and 0.0 < c["oracle_AP"] <= 1.0
    # one model per row, trained on that world's training split only
    for row in worlds:
        trained = json.loads((cross / "train" / row / "metrics.json").read_text())
        assert trained["epochs"] == 2
        assert result["checkpoints"][row].startswith(str(cross / "train" / row))
    table = (cross / "transfer.md").read_text()
    starts = [line.split(" | ")[0] for line in table.splitlines()]
    assert starts.count("| skeletons_fixed") == 1 and starts.count("| learned") == 1
    # the learned world's maps carry the flip test's 2-D tags and an affine
    learned = Path(result["splits"]["learned"]["test"])
    with np.load(next((learned / "maps").glob("*.npz"))) as z:
        assert z["tags"].ndim == 4 and z["tags"].shape[-1] == 2 and "map_to_image" in z


@pytest.mark.slow
def test_leave_one_out_with_the_shipped_model_as_an_extra_row(cross):
    out = cross.parent.parent
    transfer("transfer=tiny", f"paths.output_dir={out}", "mode=leave_one_out",
             "use=[skeletons_fixed,skeletons_varied,learned]", "ckpt_path=shipped",
             "hydra.run.dir=" + str(out / "loo"), cwd=out)
    result = json.loads((out / "loo" / "transfer.json").read_text())
    assert result["rows"] == ["all but skeletons_fixed", "all but skeletons_varied",
                              "all but learned", "shipped crowdpose14"]
    assert set(result["cells"]["all but learned"]) == {"learned"}
    assert set(result["cells"]["shipped crowdpose14"]) == set(result["worlds"])
    # the mix of the other two worlds: 8 training images of each (16 / 2)
    mix = PoseMapsDataset(next((out / "data").glob("mix-*")))
    assert len(mix) == 16


def test_a_world_without_its_pose_file_fails_in_one_line(tmp_path):
    proc = transfer("transfer=tiny", f"paths.output_dir={tmp_path}", "use=[real_poses]",
                    cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "world real_poses" in proc.stderr and "poses=" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_mix_renumbers_images_and_keeps_their_people(tmp_path):
    a = generate_dataset(tmp_path / "a", SyntheticConfig(num_images=3, seed=1), progress=False)
    b = generate_dataset(tmp_path / "b", SyntheticConfig(num_images=4, seed=2), progress=False)
    mix = PoseMapsDataset(mixed_dataset({"a": (a, 2), "b": (b, 4)}, tmp_path / "data"))
    assert mix.image_ids == [1, 2, 3, 4, 5, 6]
    src = PoseMapsDataset(b)
    np.testing.assert_array_equal(mix.load_maps(3).heatmaps, src.load_maps(1).heatmaps)
    assert len(mix.annotations_of(6)) == len(src.annotations_of(4))
    assert mix.image(6)["file_name"].startswith("b/")


def test_real_pose_worlds_share_test_images_that_never_trained(dev_poses, tmp_path):
    world = WorldConfig(kind="poses", poses=str(dev_poses), num_train=6, num_test=4)
    test = PoseMapsDataset(world_split("real", world, "test", tmp_path))
    train = PoseMapsDataset(world_split("real", world, "train", tmp_path))
    assert len(test) == 4 and len(train) == 6
    assert not set(test.image_ids) & set(train.image_ids)
    # written once: the same settings find the same folder
    assert world_split("real", world, "test", tmp_path) == test.root


@pytest.mark.parametrize("path", sorted((Path(CONF_DIR) / "world").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_a_world_file_repeats_no_schema_default(path):
    from omegaconf import OmegaConf

    from tests.test_defaults_once import _leaves

    base = OmegaConf.structured(WorldConfig)
    repeats = [f"{k}: {v}" for k, v in _leaves(OmegaConf.load(path))
               if OmegaConf.select(base, k, default=object()) == v]
    assert not repeats, f"{path} repeats WorldConfig's defaults: {repeats}"


@pytest.mark.parametrize("option", ["tiny"])
def test_a_transfer_preset_composes_and_an_unknown_world_key_fails(option):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import posegnn.cli.transfer  # noqa: F401  (registers the schema)

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("transfer", overrides=[f"transfer={option}"]))
        assert set(cfg.use) <= set(cfg.worlds)
        for world in cfg.worlds:
            with pytest.raises(Exception, match="bogus"):
                compose("transfer", overrides=[f"worlds.{world}.bogus=1"])
