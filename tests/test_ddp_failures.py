"""Multi-process runs that go wrong: a collective that waits too long is an error naming
rank and stage, and no worker outlives a killed parent."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from tests import processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads processes from /proc")
TRAIN = processes.command("posegnn-train")
# imported by every Python process of the run; in the spawned workers alone it makes the
# validation AP of rank 0 take far longer than the collective timeout
SLOW_VAL_AP = """
import sys, time
if "--multiprocessing-fork" in sys.argv:
    import posegnn.callbacks.val_ap as val_ap
    def _slow(self, trainer, pl_module):
        time.sleep({sleep})
        raise RuntimeError("rank 0 should have been stopped before this")
    val_ap.ValGroupingAP.compute = _slow
"""


def ddp_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [TRAIN, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data=maps",
            f"data.train={data}", f"data.test={data}", "data.batch_size=4", "logger=csv",
            f"data.cache_dir={out / 'cache'}", "callbacks.figures_every_n_epochs=0",
            "progress=false", f"hydra.run.dir={out / 'run'}", *extra]


def test_a_collective_that_waits_too_long_is_an_error_naming_rank_and_stage(
        tmp_path, small_dataset):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_VAL_AP.format(sleep=100))
    env = {**processes.ENV,
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    rc, out = processes.run(ddp_args(small_dataset, tmp_path, "trainer.max_epochs=1",
                                     "trainer.collective_timeout_s=30"), timeout=300, env=env)
    assert rc == 1, out[-3000:]
    last = out.strip().splitlines()[-2]  # then the HYDRA_FULL_ERROR hint
    assert last.startswith("posegnn-train: error: rank 1 failed during validation AP: "), \
        out[-3000:]
    assert "within 30 s" in last and "trainer.collective_timeout_s" in last
    assert "should have been stopped" not in out
    assert not (tmp_path / "run" / "metrics.json").exists()


def _workers(job: processes.Job) -> list[int]:
    return [p for p in job.descendants()
            if b"--multiprocessing-fork" in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_no_worker_outlives_a_killed_parent(tmp_path, small_dataset):
    with processes.Job(ddp_args(small_dataset, tmp_path, "trainer.max_epochs=200",
                                "test=false")) as job:
        assert processes.wait_for(lambda: len(_workers(job)) == 2, timeout=120), \
            "the two workers never started"
        workers = _workers(job)
        # until they train: the first epoch's checkpoint
        last = tmp_path / "run" / "checkpoints" / "last.ckpt"
        assert processes.wait_for(last.exists, timeout=200), "no checkpoint was written"
        os.kill(job.proc.pid, signal.SIGKILL)
        gone = processes.wait_for(lambda: not any(map(processes.alive, workers)), timeout=30)
        survivors = [p for p in workers if processes.alive(p)]
    assert gone, f"workers {survivors} survived their parent"


def test_a_preempted_ddp_run_saves_and_resumes_to_its_end(tmp_path, small_dataset):
    """SIGTERM to the parent (a cluster's preemption): the workers save last.ckpt at a
    batch boundary and the run exits 143; resuming it under ddp runs to its last epoch."""
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    args = ddp_args(small_dataset, tmp_path, "trainer.max_epochs=30", "test=false",
                    "callbacks.val_ap_every_n_epochs=0", "scheduler=step")
    with processes.Job(args) as job:
        assert processes.wait_for(last.exists, timeout=200), "no checkpoint was written"
        os.kill(job.proc.pid, signal.SIGTERM)
        rc, out = job.wait(timeout=120)
    assert rc == 128 + signal.SIGTERM, out[-3000:]
    assert "preempted at epoch" in out and not (run / "metrics.json").exists()
    rc, out = processes.run([*args, f"ckpt_path={last}"], timeout=400)
    assert rc == 0, out[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    # 7 training images in shards of 4 per rank, batches of 4: one step per epoch
    assert metrics["epochs"] == 30
    assert torch.load(last, weights_only=True)["global_step"] == 30
