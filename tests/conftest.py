"""Shared fixtures: small real datasets written by the synthetic world."""

from __future__ import annotations

import os
from pathlib import Path

# the compiled kernels' cache, shared by every test process of every run (each kernel
# compiles once; before numba is first imported)
os.environ.setdefault("NUMBA_CACHE_DIR",
                      str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "numba"))

import pytest  # noqa: E402
import torch  # noqa: E402

from posegnn.data.synthetic import DetectorNoise, SyntheticConfig, generate_dataset  # noqa: E402

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)  # as the entry points do: small graphs run fastest on one thread
REPO = Path(__file__).resolve().parents[1]
# Real CrowdPose validation poses, beside the repository in the development workspace only:
# never part of the project. Tests reach them through the ``dev_poses`` fixture alone.
_DEV_POSES = REPO.parent / "shared" / "data" / "crowdpose_val_dev.json"

CLEAN = DetectorNoise(tag_noise=0.0, crowd_confusion=0.0, miss_rate=0.0,
                      occluded_miss_rate=0.0, false_positive_rate=0.0, jitter=0.0,
                      swap_rate=0.0)


@pytest.fixture(scope="session")
def dev_poses() -> Path:
    """The real CrowdPose poses file; tests that need it skip, saying why, without it."""
    if not _DEV_POSES.is_file():
        pytest.skip(f"real CrowdPose poses not found at {_DEV_POSES} (development workspace "
                    "only; point data.poses at your own CrowdPose or COCO file)")
    return _DEV_POSES


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """Eight images of the default (noisy) synthetic world, crowdpose14."""
    out = tmp_path_factory.mktemp("data") / "small"
    return generate_dataset(out, SyntheticConfig(num_images=8, seed=1), progress=False)


@pytest.fixture(scope="session")
def clean_dataset(tmp_path_factory) -> Path:
    """Six easy images with a noiseless detector: maps rendered from ground truth."""
    out = tmp_path_factory.mktemp("data") / "clean"
    cfg = SyntheticConfig(num_images=6, seed=2, crowd="easy", noise=CLEAN)
    return generate_dataset(out, cfg, progress=False)


def tiny_train_overrides(out: Path) -> list[str]:
    """Hydra overrides for a seconds-long posegnn-train run writing under ``out``."""
    return [f"paths.output_dir={out}", "data.synthetic.num_train=12",
            "data.synthetic.num_val=6", "data.synthetic.num_test=6", "trainer.max_epochs=2",
            "progress=false", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "callbacks.val_ap_every_n_epochs=1",
            "data.batch_size=4"]


@pytest.fixture(scope="session")
def small_graphs(small_dataset) -> list:
    """Four graphs of ``small_dataset`` with the default settings, edges and labels added."""
    from posegnn.data.graph import AddEdges, GraphConfig, build_vertices
    from posegnn.data.maps import PoseMapsDataset

    ds = PoseMapsDataset(small_dataset)
    cfg = GraphConfig()
    edges = AddEdges(ds.layout, cfg.edges)
    out = []
    for image_id in ds.image_ids[:4]:
        gt, areas = ds.gt_keypoints(image_id)
        out.append(edges(build_vertices(ds.load_maps(image_id), ds.layout, cfg, gt, areas)))
    return out
