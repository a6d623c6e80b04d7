"""Grouping AP on the validation split during training, so that runs sort by AP."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import lightning as L

from posegnn.distributed import stage
from posegnn.evaluation.runner import evaluate_groupings

if TYPE_CHECKING:
    from posegnn.config import CallbacksConfig, GroupingConfig

AP_KEYS = ("AP", "AP50", "AP75", "AP_hard")


class ValGroupingAP(L.Callback):
    """Assemble people on (up to ``max_images`` of) the validation split and log
    ``val/gnn/AP``, AP50, AP75 and AP_hard, with ``val/ae/...`` (computed once: it does
    not train) beside them, so that runs and sweeps sort by AP.

    It runs every ``callbacks.val_ap_every_n_epochs`` epochs (0: never in between; every
    epoch when ``callbacks.monitor`` is an AP, which must exist after each validation) and
    always at the last epoch, also when early stopping ends the run before ``max_epochs``."""

    def __init__(self, grouping_cfg: GroupingConfig, callbacks: CallbacksConfig) -> None:
        self.grouping_cfg = grouping_cfg
        self.every = 1 if "/AP" in callbacks.monitor else max(callbacks.val_ap_every_n_epochs, 0)
        self.max_images = callbacks.val_ap_max_images
        self._reference: dict[str, float] | None = None
        self._done_epoch: int | None = None

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 \
            and epoch >= trainer.max_epochs
        return last or (self.every > 0 and epoch % self.every == 0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._due(trainer):
            return
        # once, over the whole split, on the first process; the others wait for it in the
        # broadcast (trainer.collective_timeout_s bounds the wait) and log the same values
        with stage("validation AP"):
            metrics = self.compute(trainer, pl_module) if trainer.is_global_zero else None
            metrics = trainer.strategy.broadcast(metrics, src=0)
        pl_module.log_dict(metrics, sync_dist=True)
        self._done_epoch = trainer.current_epoch

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A run stopped early (or resumed after its last epoch) still gets its val AP."""
        last = max(trainer.current_epoch - 1, 0)  # the loop has moved past the last epoch
        if self._done_epoch == last or not trainer.is_global_zero:
            return
        metrics = self.compute(trainer, pl_module)
        for lg in trainer.loggers:
            lg.log_metrics({**metrics, "epoch": last}, step=trainer.global_step)
            lg.save()
        trainer.callback_metrics.update(metrics)  # metrics.json reads them from here
        self._done_epoch = last

    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule,
                dm=None) -> dict[str, float]:
        """The AP metrics of ``pl_module`` on ``dm`` (by default the trainer's)."""
        dm = dm or trainer.datamodule
        subset = dm.dataset("val", self.max_images)
        gt = dm.ground_truth("val", self.max_images)
        maps = dm.maps_reader("val")
        was_training = pl_module.training
        try:
            metrics = evaluate_groupings(gt, dm.layout, subset,
                                         replace(self.grouping_cfg, run=["gnn"]), module=pl_module,
                                         prefix="val", batch_size=dm.cfg.batch_size,
                                         maps=maps)
        finally:
            pl_module.train(was_training)
        if self._reference is None:
            ref_cfg = replace(self.grouping_cfg, run=["ae"])
            self._reference = evaluate_groupings(gt, dm.layout, subset, ref_cfg, prefix="val",
                                                 maps=maps)
        return {k: float(v) for k, v in {**metrics, **self._reference}.items()
                if k.rsplit("/", 1)[-1] in AP_KEYS}
