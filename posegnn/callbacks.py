"""Training callbacks: grouping AP on the validation split."""

from __future__ import annotations

import lightning as L

from posegnn.data.datamodule import GraphList
from posegnn.evaluation.runner import evaluate_groupings


class ValGroupingAP(L.Callback):
    """Every ``every_n_epochs`` epochs, assemble people on (up to ``max_images`` of) the
    validation split and log ``val/gnn/AP`` (and AP50, AP75); ``val/ae/AP`` is computed
    once as the reference line."""

    def __init__(self, grouping_cfg: dict, every_n_epochs: int = 5,
                 max_images: int = 100) -> None:
        self.grouping_cfg = grouping_cfg
        self.every = every_n_epochs
        self.max_images = max_images
        self._reference: dict[str, float] | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every:
            return
        dm = trainer.datamodule
        subset = GraphList(dm.graphs["val"][:self.max_images], dm.edges)
        gt = dm.source("val")[0].coco_dict([int(g.image_id) for g in subset.graphs])
        was_training = pl_module.training
        gnn_cfg = {**self.grouping_cfg, "run": ["gnn"]}
        metrics = evaluate_groupings(gt, dm.layout, subset, gnn_cfg, module=pl_module,
                                     prefix="val", batch_size=dm.cfg.batch_size)
        pl_module.train(was_training)
        if self._reference is None:
            ref_cfg = {**self.grouping_cfg, "run": ["ae"]}
            self._reference = evaluate_groupings(gt, dm.layout, subset, ref_cfg, prefix="val")
        logged = {k: v for k, v in {**metrics, **self._reference}.items()
                  if k.rsplit("/", 1)[-1] in ("AP", "AP50", "AP75")}
        pl_module.log_dict(logged)
