"""A training callback that draws what the model does: predicted people vs ground truth
on a few validation images, and the histogram of edge probabilities."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np

from posegnn.evaluation.runner import candidates_of, edge_probabilities
from posegnn.figures import (
    draw_examples,
    edge_probability_histogram,
    make_example,
    save_figure,
)
from posegnn.grouping import build_grouping
from posegnn.grouping.gnn import GNNGroupingConfig

if TYPE_CHECKING:
    from posegnn.config import CallbacksConfig

log = logging.getLogger(__name__)


class PredictionFigures(L.Callback):
    """Every ``callbacks.figures_every_n_epochs`` validations (and once at the end of
    fit), on the first ``callbacks.figures_num_images`` validation graphs: run the model,
    group with ``gnn``, draw the examples and the edge-probability histogram of the whole
    validation split.

    PNGs go to ``<out_dir>/figures/`` (``out_dir`` defaults to the trainer's
    ``default_root_dir``) as ``val_examples_epoch<N>.png`` and
    ``val_edge_prob_hist_epoch<N>.png``; a W&B logger also gets them as ``val/examples``
    and ``val/edge_prob_hist`` images, with a ``val/edge_prob`` histogram.
    ``grouping`` holds the gnn grouping's settings (``cfg.grouping.gnn``)."""

    def __init__(self, callbacks: CallbacksConfig, grouping: GNNGroupingConfig,
                 out_dir: str | Path | None = None, max_hist_images: int = 200) -> None:
        self.every = callbacks.figures_every_n_epochs
        self.num_images = callbacks.figures_num_images
        if self.every < 0 or self.num_images < 0:
            raise ValueError("callbacks.figures_every_n_epochs and figures_num_images must "
                             "be >= 0")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.grouping = grouping
        self.max_hist_images = int(max_hist_images)
        self._drawn_epoch: int | None = None
        self.saved: list[Path] = []

    # -- hooks ----------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every <= 0:
            return
        if (trainer.current_epoch + 1) % self.every == 0:
            self.draw(trainer, pl_module, trainer.current_epoch)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = max(trainer.current_epoch - 1, 0)  # the loop has moved past the last epoch
        if self._drawn_epoch != last:
            self.draw(trainer, pl_module, last)

    # -- the work -------------------------------------------------------------------------
    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> list[Path]:
        if not trainer.is_global_zero:
            return []
        dm = trainer.datamodule
        if dm is None:
            log.warning("PredictionFigures needs a datamodule; no figures drawn")
            return []
        dataset = dm.dataset("val", self.max_hist_images)
        if len(dataset) == 0:
            return []
        graphs = dataset.graphs
        was_training = pl_module.training
        try:
            scores = edge_probabilities(pl_module, dataset, batch_size=dm.cfg.batch_size)
        finally:
            pl_module.train(was_training)
        out = (self.out_dir or Path(trainer.default_root_dir)) / "figures"
        paths: dict[str, Path] = {}
        labels = np.concatenate([s.y for s in scores])
        all_probs = np.concatenate([s.prob for s in scores])
        paths["val/edge_prob_hist"] = save_figure(
            edge_probability_histogram(
                all_probs, labels,
                threshold=self.grouping.threshold,
                title=f"validation pairs, epoch {epoch}"),
            out / f"val_edge_prob_hist_epoch{epoch:03d}.png")
        if self.num_images > 0:
            grouping = build_grouping("gnn", self.grouping, layout=dm.layout)
            source = dm.images("val")
            examples = []
            for g, s in list(zip(graphs, scores, strict=True))[:self.num_images]:
                cands = candidates_of(g)
                maps = source.load_maps(int(g.image_id)) if grouping.needs_maps else None
                people = grouping.group(cands, pair_index=s.pair_index, prob=s.prob,
                                        vertex_prob=s.vertex_prob, maps=maps)
                examples.append(make_example(source, int(g.image_id), people, cands.pos))
            paths["val/examples"] = save_figure(
                draw_examples(examples, dm.layout),
                out / f"val_examples_epoch{epoch:03d}.png")
        self._drawn_epoch = epoch
        self.saved.extend(paths.values())
        self._log_wandb(trainer, paths, all_probs)
        return list(paths.values())

    @staticmethod
    def _log_wandb(trainer: L.Trainer, paths: dict[str, Path], probs: np.ndarray) -> None:
        loggers = [lg for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]
        if not loggers:
            return
        import wandb

        payload = {key: wandb.Image(str(path)) for key, path in paths.items()}
        if len(probs):
            payload["val/edge_prob"] = wandb.Histogram(probs)
        for lg in loggers:
            lg.log_metrics(payload, step=trainer.global_step)
