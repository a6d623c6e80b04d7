"""Several processes (Lightning DDP): a collective that waits too long is an error naming
the rank and the stage, and worker processes end with the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.trainer.call import _interrupt
from lightning.pytorch.utilities.exceptions import SIGTERMException

if TYPE_CHECKING:
    from posegnn.config import TrainerConfig

log = logging.getLogger(__name__)
# the strategies built here, with the collective timeout (Lightning's names)
DDP_START = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork",
             "ddp_notebook": "fork"}
_NOTE = re.compile(r"posegnn: rank (\d+), stage ([\w ]+?): (.*)")
_stage = "setup"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class DistributedError(RuntimeError):
    """A process of a multi-process run failed; the message names its rank and stage."""


class WorkerPreempted(RuntimeError):
    """A spawned worker stopped on SIGTERM after the run saved its checkpoint."""


class _WorkerLauncher(_MultiProcessingLauncher):
    """Lightning's ``ddp_spawn`` launcher, whose workers end with their parent, run the
    callbacks' ``on_exception`` as one process would (a preempted run saves its
    checkpoint), and add their rank and stage to the error they fail with."""

    def _wrapping_function(self, process_idx: int, trainer, *args, **kwargs) -> None:
        end_with_parent()
        try:
            super()._wrapping_function(process_idx, trainer, *args, **kwargs)
        except BaseException as err:
            strategy = self._strategy  # its global_rank, before setup set it
            name_failure(err, strategy.node_rank * strategy.num_processes + process_idx)
            if trainer is not None:
                _interrupt(trainer, err)
            if isinstance(err, SIGTERMException):  # a SystemExit, which the parent misses
                raise WorkerPreempted(f"rank {strategy.global_rank} stopped on SIGTERM") \
                    from None
            raise


@contextlib.contextmanager
def forward_sigterm(trainer: L.Trainer) -> Iterator[None]:
    """In the parent of spawned workers: pass SIGTERM (a cluster's preemption) on to the
    workers, which save the run and stop, instead of dying at once."""
    if not spawn_parent(trainer) or not hasattr(signal, "SIGTERM"):
        yield
        return
    previous = signal.signal(signal.SIGTERM,
                             lambda *_: trainer.strategy.launcher.kill(signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def workers_preempted(err: BaseException) -> bool:
    """``err`` is the parent's view of workers stopped by :class:`WorkerPreempted`."""
    return hasattr(err, "error_index") and WorkerPreempted.__name__ in str(err)


class WorkerDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose spawned workers are :class:`_WorkerLauncher`'s."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _MultiProcessingLauncher):
            self._launcher = _WorkerLauncher(self, start_method=self._start_method)


def name_failure(err: BaseException, rank: int) -> None:
    """Add this process's rank and stage to ``err`` (shown with its traceback, read by
    :func:`as_distributed_error`), and log them."""
    if isinstance(err, (KeyboardInterrupt, SIGTERMException)) or any(
            _NOTE.search(n) for n in getattr(err, "__notes__", [])):
        return
    note = f"posegnn: rank {rank}, stage {_stage}: {_first_line(err)}"
    err.add_note(note)
    log.error(note)


def trainer_kwargs(cfg: TrainerConfig) -> dict:
    """``L.Trainer`` arguments from ``trainer=``: the DDP strategies get their
    collective timeout (``trainer.collective_timeout_s``) instead of torch's 30 min."""
    kwargs = asdict(cfg)
    timeout = kwargs.pop("collective_timeout_s")
    if kwargs["strategy"] in DDP_START:
        kwargs["strategy"] = WorkerDDPStrategy(start_method=DDP_START[kwargs["strategy"]],
                                               timeout=timedelta(seconds=timeout))
    return kwargs


def claim_rank(cfg: TrainerConfig) -> None:
    """Give Lightning's rank-zero guard this process's global rank before any logger is
    made, when a launcher started the process with ``NODE_RANK`` (and ``LOCAL_RANK``)
    alone: otherwise every node would think itself rank 0 until ``fit``."""
    if "RANK" in os.environ or "NODE_RANK" not in os.environ or \
            not isinstance(cfg.devices, int) or cfg.devices < 1:
        return
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    rank = int(os.environ["NODE_RANK"]) * cfg.devices + int(os.environ.get("LOCAL_RANK", 0))
    rank_zero_only.rank = rank


def spawn_parent(trainer: L.Trainer) -> bool:
    """This process started the run's workers (``ddp_spawn``) and trains in none."""
    return isinstance(trainer.strategy, DDPStrategy) and multiprocessing.parent_process() \
        is None and trainer.strategy._start_method in ("spawn", "fork")


def progress_from_workers(trainer: L.Trainer, last_ckpt: str | Path) -> None:
    """In the parent of spawned workers, after ``fit``: take the loops' progress (epochs,
    steps) from the workers' ``last.ckpt``; Lightning returns only the metrics."""
    if not spawn_parent(trainer) or not Path(last_ckpt).is_file():
        return
    loops = torch.load(last_ckpt, map_location="cpu", weights_only=True).get("loops", {})
    if "fit_loop" in loops:
        trainer.fit_loop.load_state_dict(loops["fit_loop"])
        trainer.fit_loop.restarting = False
        done = trainer.fit_loop.epoch_progress  # saved at the last epoch's end, not after it
        done.current.completed, done.total.completed = done.current.processed, \
            done.total.processed


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Name the stage this process is in (setup, fit, validation AP, test) for error
    messages; an error inside leaves it named, for the message."""
    global _stage
    previous, _stage = _stage, name
    yield
    _stage = previous


def leave_process_group() -> None:
    """After ``fit`` under plain ``ddp``: rank 0 tests alone, so no later collective
    (torchmetrics syncs whenever a group exists) may wait for the other ranks."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def set_stage(name: str) -> None:
    global _stage
    _stage = name


def end_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux), so that a killed
    run leaves no worker behind; exits at once when the parent is already gone."""
    parent = multiprocessing.parent_process()
    expected = parent.pid if parent is not None else None
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("could not tie this worker to its parent (prctl errno %d)",
                        ctypes.get_errno())
    if expected is not None and os.getppid() != expected:  # died before prctl took effect
        os._exit(1)


def is_worker(trainer: L.Trainer) -> bool:
    """A process this run started itself: a spawned worker, or a ``ddp`` child."""
    return multiprocessing.parent_process() is not None or (
        trainer.local_rank > 0 and not trainer.strategy.cluster_environment
        .creates_processes_externally)


class RankGuard(L.Callback):
    """Every rank: end with the parent process (workers), compute the epoch's synced
    metrics at the same point on all ranks, stop on SIGTERM at the same batch as the
    others, and name rank and stage on an error.

    The epoch-end sync fixes a deadlock: Lightning's progress bar, enabled on rank 0
    only, reads the epoch's metrics in ``on_train_epoch_end`` before the module's own
    hook, so rank 0 entered the all-reduce of ``train/loss`` while the other ranks
    entered the all-gather of the module's torchmetrics. Computed here first, on every
    rank, the progress bar finds them computed."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size > 1 and is_worker(trainer):
            end_with_parent()
        set_stage("test" if stage == "test" else "setup")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_stage("fit")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_stage("test")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning's own handler, which flags SIGTERM on this rank alone and so can
        # stop one rank a step before the others (which then wait in a collective)
        self._sigterm = False
        if trainer.world_size > 1 and hasattr(signal, "SIGTERM"):
            self._previous = signal.signal(signal.SIGTERM, self._note_sigterm)

    def _note_sigterm(self, *_) -> None:
        self._sigterm = True

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        """Every rank learns of a SIGTERM at the same batch, then stops there."""
        if getattr(self, "_previous", None) is None:
            return
        flag = torch.tensor([float(self._sigterm)], device=trainer.strategy.root_device)
        if trainer.strategy.reduce(flag, reduce_op="max").item() > 0:
            trainer._signal_connector.received_sigterm = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def _restore(self) -> None:
        if getattr(self, "_previous", None) is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            trainer.callback_metrics  # noqa: B018 (computes, with the collectives, once)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self._restore()
        if trainer.world_size > 1 and not spawn_parent(trainer):  # (ddp: every rank)
            name_failure(exception, trainer.global_rank)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip()


def as_distributed_error(err: BaseException, timeout_s: float) -> DistributedError | None:
    """One-line :class:`DistributedError` for the failure of a multi-process run (the
    parent's view of a spawned worker's error, or this rank's own), or None when ``err``
    says nothing of a rank."""
    texts = [*getattr(err, "__notes__", []), str(err)]
    found = next((m for t in texts if (m := _NOTE.search(t))), None)
    if found:
        rank, where, reason = found.groups()
    elif hasattr(err, "error_index"):  # a spawned worker died without a Python error
        rank, where, reason = err.error_index, "an unknown stage", str(err).strip()
    else:
        return None
    hint = ""
    if "timed out" in reason.lower() or "timeout" in reason.lower():
        hint = (f" (no answer from the other processes within {timeout_s:g} s: one of them "
                "failed or waits elsewhere; trainer.collective_timeout_s sets the limit)")
    return DistributedError(f"rank {rank} failed during {where}: {reason}{hint}")
