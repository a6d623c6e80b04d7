"""Graph caches for large splits and shared folders: built by several processes, built once
when several jobs need them at once, never half-written, and a waiter that says why."""

from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import contextmanager

import pytest
import torch

import posegnn.data.cache as cache_mod
from posegnn.data.graph import GraphConfig
from posegnn.data.maps import PoseMapsDataset
from tests import processes


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        _same(a[k], b[k]) if isinstance(a[k], dict) else
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
        for k in a)


def test_a_split_built_by_two_processes_is_the_one_built_by_one(small_dataset, monkeypatch):
    ds = PoseMapsDataset(small_dataset)
    one = cache_mod.build_graphs(ds, ds.image_ids, GraphConfig(), progress=False)
    monkeypatch.setattr(cache_mod, "CHUNK", 3)  # 8 images: chunks of 3, 3 and 2
    beats = []
    two = cache_mod.build_graphs(ds, ds.image_ids, GraphConfig(), progress=False, workers=2,
                                 beat=lambda: beats.append(1))
    assert len(beats) == 3
    assert _same(cache_mod.pack_graphs(one), cache_mod.pack_graphs(two))


@contextmanager
def _lock_held_by_a_thread(lock):
    """``lock`` held by another thread (a builder that makes no progress) until the
    event this yields is set; the thread ends on leaving."""
    held, release = threading.Event(), threading.Event()

    def builder() -> None:
        with cache_mod.waiting_lock(lock, "the train graphs"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=builder)
    thread.start()
    try:
        assert held.wait(30)
        yield release
    finally:
        release.set()
        thread.join(30)


def test_a_waiter_says_whom_it_waits_for_then_gets_the_lock(tmp_path, caplog):
    lock = tmp_path / "train-x.lock"
    with _lock_held_by_a_thread(lock) as release:
        threading.Timer(0.5, release.set).start()
        with caplog.at_level(logging.INFO, logger=cache_mod.__name__), \
                cache_mod.waiting_lock(lock, "the train graphs", timeout_s=60):
            assert release.is_set()
    waits = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert waits == [f"waiting for the train graphs: pid {os.getpid()} on "
                     f"{os.uname().nodename} builds them"]


def test_a_builder_without_progress_is_given_up_on_in_one_line(tmp_path):
    lock = tmp_path / "train-x.lock"
    with _lock_held_by_a_thread(lock), pytest.raises(cache_mod.LockTimeout) as err, \
            cache_mod.waiting_lock(lock, "the train graphs", timeout_s=0.3):
        pass
    message = str(err.value)
    assert message.startswith(f"{lock}: waited for the train graphs") and "\n" not in message
    assert "no progress for 0.3 s" in message and "data.lock_timeout_s" in message


def test_two_evaluations_of_one_split_at_once_share_one_intact_cache(tmp_path, small_dataset):
    """Started together on one cache folder: both succeed with the same AP, one cache
    file exists, it loads, and no temporary file is left."""
    cache = tmp_path / "cache"
    args = [processes.command("posegnn-eval"), "grouping.run=[ae,oracle]", "data=maps",
            f"data.test={small_dataset}", f"data.cache_dir={cache}", "progress=false"]
    jobs = [processes.Job([*args, f"hydra.run.dir={tmp_path / name}"]) for name in "ab"]
    try:
        results = [job.wait(timeout=240) for job in jobs]
    finally:
        for job in jobs:
            job.close()
    for rc, out in results:
        assert rc == 0, out[-3000:]
        waits = [line for line in out.splitlines() if "waiting for" in line]
        assert all("the test graphs" in line and "builds them" in line for line in waits)
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "ab")
    assert a["test/ae/AP"] == b["test/ae/AP"] and a["test/oracle/AP"] == b["test/oracle/AP"]
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("test-")
    assert len(cache_mod.load_graphs(files[0])) == len(PoseMapsDataset(small_dataset).image_ids)
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]


def test_a_joblib_multirun_shares_one_cache_and_keeps_each_job_apart(tmp_path, small_dataset):
    """Two training jobs at once (joblib, 2 workers) on one cache folder: both succeed,
    the cache of each split exists once and loads, and each job has its own checkpoints
    and metrics."""
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    rc, out = processes.run(
        [processes.command("posegnn-train"), "-m", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", "model=edgeconv,edgeconv_attr", "data=maps",
         f"data.train={small_dataset}", f"data.test={small_dataset}", "data.batch_size=4",
         f"data.cache_dir={cache}", "trainer.max_epochs=1", "progress=false",
         "trainer.enable_progress_bar=false", "callbacks.figures_every_n_epochs=0",
         "logger=csv", f"hydra.sweep.dir={sweep}"], timeout=400)
    assert rc == 0, out[-3000:]
    splits = sorted(p.name.split("-")[0] for p in cache.glob("*.pt"))
    assert splits == ["test", "train", "val"]
    for path in cache.glob("*.pt"):
        assert cache_mod.load_graphs(path)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    convs = set()
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["test/gnn/AP"] >= 0
        state = torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)
        convs.add(state["hyper_parameters"]["model"]["conv"])
    assert convs == {"edgeconv", "edgeconv_attr"}  # each job's own checkpoint
