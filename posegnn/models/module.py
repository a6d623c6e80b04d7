"""The LightningModule: BCE training of the edge classifier, with its edge metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
)

from posegnn.choices import one_of, typed
from posegnn.data.graph import GraphConfig, stored_graph
from posegnn.layouts import get_layout
from posegnn.models.network import EdgeGNN, ModelConfig, model_settings
from posegnn.models.person_scorer import PersonScorer

STAGES = ("train", "val", "test")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step", "plateau")


def cosine_factor(epoch: int, warmup_epochs: int, epochs: int) -> float:
    """The learning-rate factor of an epoch: a linear warm-up from a tenth, then a
    cosine to zero at the last epoch."""
    warm = min(warmup_epochs, epochs - 1)
    if epoch < warm:
        return 0.1 + 0.9 * epoch / warm
    return 0.5 * (1.0 + math.cos(math.pi * min((epoch - warm) / max(epochs - warm, 1), 1.0)))


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd

    def __post_init__(self) -> None:
        one_of("optimizer.name", self.name, OPTIMIZERS)


@dataclass
class SchedulerConfig:
    name: str = "none"  # none | cosine | step | plateau
    warmup_epochs: int = 0  # cosine
    step_size: int = 10  # step
    gamma: float = 0.5  # step, plateau
    patience: int = 3  # plateau
    monitor: str = "val/loss"  # plateau: the metric it watches (val/gnn/AP with mode=max)
    mode: str = "min"  # plateau: min | max

    def __post_init__(self) -> None:
        one_of("scheduler.name", self.name, SCHEDULERS)
        one_of("scheduler.mode", self.mode, ("min", "max"))


@dataclass
class LossConfig:
    pos_weight: float | None = None  # weight of positive pairs; None = 1
    vertex_weight: float = 1.0  # weight of the vertex head's BCE (model.vertex_head)


def edge_metrics() -> MetricCollection:
    return MetricCollection({"edge_acc": BinaryAccuracy(), "edge_precision": BinaryPrecision(),
                             "edge_recall": BinaryRecall(), "edge_f1": BinaryF1Score(),
                             "edge_auroc": BinaryAUROC()})


class PosegnnModule(L.LightningModule):
    """Edge classifier over candidate graphs.

    Settings come in as schema dataclasses and are stored as plain values (dicts,
    numbers, lists), so ``PosegnnModule.load_from_checkpoint(path)`` rebuilds the network
    with no config at hand (it passes them back as dicts), including the graph settings
    (``graph_cfg``) and feature statistics used at predict time.
    """

    def __init__(self, in_dim: int, edge_dim: int, model: ModelConfig | dict | None = None,
                 optimizer: OptimizerConfig | dict | None = None,
                 scheduler: SchedulerConfig | dict | None = None,
                 loss: LossConfig | dict | None = None, graph: GraphConfig | dict | None = None,
                 layout: str = "crowdpose14", feature_mean: list[float] | None = None,
                 feature_std: list[float] | None = None, num_joints: int | None = None
                 ) -> None:
        super().__init__()
        self.model_cfg = typed(ModelConfig, model_settings(model))
        self.optim_cfg = typed(OptimizerConfig, optimizer)
        self.sched_cfg = typed(SchedulerConfig, scheduler)
        self.loss_cfg = typed(LossConfig, loss)
        self.graph_cfg = typed(GraphConfig, stored_graph(graph))
        self.save_hyperparameters({
            "in_dim": in_dim, "edge_dim": edge_dim, "model": asdict(self.model_cfg),
            "optimizer": asdict(self.optim_cfg), "scheduler": asdict(self.sched_cfg),
            "loss": asdict(self.loss_cfg), "graph": asdict(self.graph_cfg), "layout": layout,
            "feature_mean": feature_mean, "feature_std": feature_std,
            "num_joints": num_joints})
        self.net = EdgeGNN(self.model_cfg, in_dim, edge_dim)
        if feature_mean is not None and feature_std is not None:
            self.net.feature_mean.copy_(torch.tensor(feature_mean))
            self.net.feature_std.copy_(torch.tensor(feature_std))
        self.person_scorer = (PersonScorer(num_joints or get_layout(layout).num_joints)
                              if self.model_cfg.person_scorer else None)
        self.metrics = torch.nn.ModuleDict({f"{s}_edges": edge_metrics() for s in STAGES})
        if self.model_cfg.vertex_head:
            self.metrics.update({f"{s}_vertices": BinaryAccuracy() for s in STAGES})

    def forward(self, batch) -> Tensor:
        """Logits of every scored pair of the batch."""
        self._check_widths(batch)
        return self.net(batch)

    def _check_widths(self, batch) -> None:
        """Refuse graphs whose widths differ from the training graphs', in one line."""
        want = (self.hparams.in_dim, self.hparams.edge_dim)
        got = (batch.x.shape[1], batch.edge_attr.shape[1])
        if got == want:
            return
        why = ("its graph settings carry raw tags (graph=raw_tags), so it reads only the tag "
               f"dimension it was trained on, and these maps have D={batch.tag.shape[1]}"
               if not self.graph_cfg.dimension_free else "they were built with other settings")
        raise ValueError(f"graphs of {got[0]} vertex / {got[1]} pair features, the model was "
                         f"trained on {want[0]} / {want[1]}: {why}")

    @property
    def scorer(self):
        """The fitted person scorer's ``score`` (features -> expected OKS), or None."""
        fitted = self.person_scorer is not None and bool(self.person_scorer.fitted)
        return self.person_scorer.score if fitted else None

    @torch.no_grad()
    def probabilities(self, batch) -> tuple[Tensor, Tensor | None]:
        """Same-person probability of every scored pair and, with the vertex head, the
        probability [N] that each candidate belongs to some person (None without it)."""
        self._check_widths(batch)
        stages, vertex = self.net.outputs(batch)
        return torch.sigmoid(stages[-1]), None if vertex is None else torch.sigmoid(vertex)

    def _step(self, batch, stage: str) -> Tensor:
        stages, vertex = self.net.outputs(batch)
        logits, y = stages[-1], batch.y
        pos_weight = (None if self.loss_cfg.pos_weight is None
                      else logits.new_tensor(self.loss_cfg.pos_weight))
        losses = []
        if logits.numel():  # every stage is supervised; metrics describe the last one
            losses.append(sum(F.binary_cross_entropy_with_logits(s, y, pos_weight=pos_weight)
                              for s in stages) / len(stages))
            self.metrics[f"{stage}_edges"].update(torch.sigmoid(logits.detach()), y.long())
        if vertex is not None and vertex.numel():
            belongs = (batch.person >= 0).float()
            losses.append(self.loss_cfg.vertex_weight
                          * F.binary_cross_entropy_with_logits(vertex, belongs))
            self.metrics[f"{stage}_vertices"].update(torch.sigmoid(vertex.detach()),
                                                     belongs.long())
        # a batch without pairs still gives a loss connected to every trained weight
        loss = sum(losses) if losses else sum(p.sum() for p in self.net.parameters()) * 0.0
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test",
                 batch_size=batch.num_graphs, sync_dist=True)  # mean over processes
        return loss

    def _log_metrics(self, stage: str) -> None:
        metrics = self.metrics[f"{stage}_edges"]
        if any(m.update_count for m in metrics.values()):
            # torchmetrics already gathered every process's counts: equal values everywhere
            self.log_dict({f"{stage}/{k}": v for k, v in metrics.compute().items()},
                          prog_bar=False, sync_dist=True)
        metrics.reset()
        vertices = self.metrics[f"{stage}_vertices"] if self.model_cfg.vertex_head else None
        if vertices is not None and vertices.update_count:
            self.log(f"{stage}/vertex_acc", vertices.compute(), sync_dist=True)
            vertices.reset()

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self):
        o = self.optim_cfg
        params = self.net.parameters()  # the person scorer is fitted apart
        if o.name == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        elif o.name == "adamw":
            opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        else:  # sgd (OptimizerConfig allows no other)
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                  weight_decay=o.weight_decay)
        sched = self._scheduler(opt)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    def on_train_start(self) -> None:
        """A resumed cosine run starts at its schedule's rate for the new max_epochs, not
        at the rate the checkpoint stored for the old one."""
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
                rates = [base * fn(sched.last_epoch)
                         for base, fn in zip(sched.base_lrs, sched.lr_lambdas, strict=True)]
                for group, rate in zip(sched.optimizer.param_groups, rates, strict=True):
                    group["lr"] = rate
                sched._last_lr = rates

    def _max_epochs(self) -> int:
        return max(int(self.trainer.max_epochs or 1), 1) if self._trainer else 1

    def _scheduler(self, opt):
        s = self.sched_cfg
        if s.name == "none":
            return None
        if s.name == "cosine":  # one schedule that reads max_epochs at each step, so that a
            # run resumed with more epochs stretches it instead of restarting the cosine
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: cosine_factor(
                epoch, s.warmup_epochs, self._max_epochs()))
        if s.name == "step":
            return torch.optim.lr_scheduler.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
        # plateau (SchedulerConfig allows no other)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=s.mode, factor=s.gamma,
                                                             patience=s.patience)
        return {"scheduler": plateau, "monitor": s.monitor}
