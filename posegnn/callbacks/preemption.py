"""Preemption: a cluster's SIGTERM (or SLURM's early SIGUSR1) saves the run and stops it.

Lightning turns SIGTERM into ``SIGTERMException`` at the next batch boundary; this
callback saves ``last.ckpt`` at that point, with the training loader's place in the
epoch, so ``posegnn-train ckpt_path=<run>/checkpoints/last.ckpt`` ends exactly where an
uninterrupted run would. Under SLURM with auto-requeue (Lightning's ``SLURMEnvironment``,
detected from the job's environment) SIGUSR1 is Lightning's: it saves an
``hpc_ckpt_*.ckpt`` in the run folder and requeues the job, which resumes from it.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class Preempted(SystemExit):
    """The run stopped on a preemption signal after saving ``checkpoint``."""

    EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM'd process

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(self.EXIT_CODE)
        self.checkpoint = checkpoint


def _slurm_requeues(trainer: L.Trainer) -> bool:
    env = trainer._accelerator_connector.cluster_environment
    return isinstance(env, SLURMEnvironment) and env.auto_requeue


class SaveOnPreemption(L.Callback):
    """Save ``last.ckpt`` when the run is stopped by SIGTERM, or by SIGUSR1 outside
    SLURM's auto-requeue (it is passed on as SIGTERM)."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = Path(checkpoint)
        self._previous_usr1 = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning has set its own handlers, which it restores when the run ends
        if hasattr(signal, "SIGUSR1") and not _slurm_requeues(trainer):
            self._previous_usr1 = signal.signal(
                signal.SIGUSR1, lambda *_: os.kill(os.getpid(), signal.SIGTERM))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.checkpoint)
            log.warning("preempted at epoch %d, batch %d: saved %s; resume with "
                        "posegnn-train ckpt_path=%s", trainer.current_epoch,
                        trainer.fit_loop.epoch_loop.batch_progress.current.completed,
                        self.checkpoint, self.checkpoint)

    def _restore(self) -> None:
        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None
