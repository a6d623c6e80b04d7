"""Two "nodes" of one process each on loopback, started as ``srun`` starts them: each
with its ``NODE_RANK``, the same ``MASTER_ADDR``/``MASTER_PORT``, read by Lightning's own
cluster environment (plain ``ddp``), both writing to one run folder."""

from __future__ import annotations

import json
import math
import socket
import sys

import pytest
import torch

from tests import processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads processes from /proc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_loopback_train_test_and_share_one_cache(tmp_path, small_dataset):
    run = tmp_path / "run"
    args = [processes.command("posegnn-train"), "trainer=ddp", "trainer.strategy=ddp",
            "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
            "data=maps", f"data.train={small_dataset}", f"data.test={small_dataset}",
            "data.batch_size=2", "trainer.max_epochs=1", "logger=csv", "progress=false",
            f"data.cache_dir={tmp_path / 'cache'}", "callbacks.figures_every_n_epochs=0",
            f"hydra.run.dir={run}"]
    port = str(free_port())
    nodes = [processes.Job(args, env={**processes.ENV, "MASTER_ADDR": "127.0.0.1",
                                      "MASTER_PORT": port, "WORLD_SIZE": "2",
                                      "NODE_RANK": str(rank)})
             for rank in (0, 1)]
    try:
        results = [node.wait(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.close()
    for rank, (rc, out) in enumerate(results):
        assert rc == 0, f"node {rank}:\n{out[-3000:]}"
    assert "Test split" in results[0][1] and "Test split" not in results[1][1]
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test/gnn/AP", "test/ae/AP", "test/gnn/edge_acc", "val/gnn/AP"):
        assert math.isfinite(metrics[key]), key
    # 8 images, 1 held out for val: 7 in shards of 4 per node, batches of 2 -> 2 steps
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    # both nodes read each split's graphs from one shared cache file
    caches = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.pt"))
    assert caches == ["test", "train", "val"]
    assert not list((tmp_path / "cache").glob(".*.tmp"))
