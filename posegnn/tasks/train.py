"""Fit the edge classifier on a DataModule, then test it with every grouping."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import ModelSummary

from posegnn.callbacks.checkpoint import RunCheckpoint, RunSettings
from posegnn.callbacks.figures import PredictionFigures
from posegnn.callbacks.preemption import Preempted, SaveOnPreemption
from posegnn.callbacks.val_ap import ValGroupingAP
from posegnn.checkpoints import (
    check_graph_compatible,
    check_resume,
    load_module,
    resume_state,
    store_person_scorer,
)
from posegnn.config import TrainConfig
from posegnn.data.datamodule import PoseGraphDataModule
from posegnn.distributed import (
    RankGuard,
    as_distributed_error,
    claim_rank,
    forward_sigterm,
    leave_process_group,
    progress_from_workers,
    trainer_kwargs,
    workers_preempted,
)
from posegnn.evaluation.runner import evaluate_groupings, fit_person_scorer, format_table
from posegnn.io import AtomicCheckpointIO, write_metrics
from posegnn.loggers import build_loggers, finish_wandb, log_final_metrics, wandb_run_dir
from posegnn.models.module import PosegnnModule
from posegnn.pretrained import shipped_checkpoint

log = logging.getLogger(__name__)


def build_datamodule(cfg: TrainConfig, progress: bool = True) -> PoseGraphDataModule:
    return PoseGraphDataModule(cfg.data, cfg.graph, progress=progress)


def build_module(cfg: TrainConfig, dm: PoseGraphDataModule) -> PosegnnModule:
    """A fresh module sized for the DataModule's graphs, or the weights of
    ``finetune_from`` (graph settings checked) with a new optimizer."""
    in_dim, edge_dim = dm.dims()
    use_stats = cfg.graph.normalization == "dataset"
    module = PosegnnModule(
        in_dim=in_dim, edge_dim=edge_dim, model=cfg.model, optimizer=cfg.optimizer,
        scheduler=cfg.scheduler, loss=cfg.loss, graph=cfg.graph, layout=dm.layout.name,
        feature_mean=dm.feature_mean.tolist() if use_stats else None,
        feature_std=dm.feature_std.tolist() if use_stats else None,
        num_joints=dm.layout.num_joints)
    if cfg.finetune_from:
        path = (shipped_checkpoint(dm.layout.name) if cfg.finetune_from == "shipped"
                else cfg.finetune_from)
        source = load_module(path)
        check_graph_compatible(source.graph_cfg, cfg.graph, path)
        module.net.load_state_dict(source.net.state_dict())
        log.info("fine-tuning from the weights of %s", path)
    return module


def build_callbacks(cfg: TrainConfig, out_dir: Path) -> list[L.Callback]:
    c = cfg.callbacks
    callbacks: list[L.Callback] = [RankGuard(), RunCheckpoint(
        dirpath=out_dir / "checkpoints", filename="best-{epoch:03d}", monitor=c.monitor,
        mode=c.mode, save_top_k=c.save_top_k, save_last=True, auto_insert_metric_name=False),
        SaveOnPreemption(out_dir / "checkpoints" / "last.ckpt")]
    if c.early_stopping:
        callbacks.append(EarlyStopping(monitor=c.monitor, mode=c.mode, patience=c.patience))
    # every run logs val AP at its last epoch at least, so runs sort by AP in W&B
    callbacks.append(ValGroupingAP(cfg.grouping, c))
    callbacks.append(RunSettings(cfg.data, cfg.graph))
    if c.figures_every_n_epochs > 0:
        callbacks.append(PredictionFigures(c, cfg.grouping.gnn, out_dir))
    if cfg.logger.csv or cfg.logger.tensorboard or cfg.logger.wandb.enabled:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    return callbacks


def run_name(overrides: list[str]) -> str:
    """A run's name from its command-line overrides ("default" without any)."""
    return ",".join(o for o in overrides if not o.startswith("hydra")) or "default"


def train(cfg: TrainConfig, out_dir: str | Path, overrides: list[str] | None = None,
          sweep_name: str | None = None) -> dict[str, float]:
    """The whole ``posegnn-train`` job; returns (and writes) its flat metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resume_epoch = check_resume_settings(cfg, out_dir) if cfg.ckpt_path else None
    claim_rank(cfg.trainer)
    L.seed_everything(cfg.seed, workers=True)
    dm = build_datamodule(cfg, progress=cfg.progress)
    dm.prepare_data()
    dm.setup("fit")
    stats = dm.statistics("train")
    log.info("train graphs: %.0f candidates and %.0f pairs per image, %.1f%% positive pairs, "
             "%.1f%% of candidates matched, %.1f%% of labeled joints covered",
             stats["candidates_per_image"], stats["pairs_per_image"],
             100 * stats["positive_pairs"], 100 * stats["matched_candidates"],
             100 * stats["gt_joints_covered"])
    module = build_module(cfg, dm)
    loggers = build_loggers(cfg.logger, out_dir, run_name(overrides or []), sweep_name,
                            resume_epoch=resume_epoch)
    summary = ModelSummary(module, max_depth=3)
    for lg in loggers:
        lg.log_hyperparams({**asdict(cfg),
                            "model_params": summary.total_parameters,
                            "model_summary": str(summary)})
    trainer = L.Trainer(**trainer_kwargs(cfg.trainer), logger=loggers or False,
                        callbacks=build_callbacks(cfg, out_dir), default_root_dir=str(out_dir),
                        plugins=[AtomicCheckpointIO()])
    metrics: dict[str, float] = {f"data/train/{k}": float(v) for k, v in stats.items()}
    metrics["model/params"] = summary.total_parameters
    start = time.perf_counter()
    try:
        try:
            with forward_sigterm(trainer):
                trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
        except SIGTERMException:
            raise Preempted(out_dir / "checkpoints" / "last.ckpt") from None
        except Exception as err:
            if workers_preempted(err):
                raise Preempted(out_dir / "checkpoints" / "last.ckpt") from None
            failed = as_distributed_error(err, cfg.trainer.collective_timeout_s)
            if failed is None:
                raise
            raise failed from err
        leave_process_group()
        if not trainer.is_global_zero:  # another rank of a run its launcher started (srun)
            return {}
        progress_from_workers(trainer, _last(trainer.checkpoint_callback))
        metrics["time/fit_s"] = time.perf_counter() - start
        metrics["epochs"] = trainer.current_epoch
        metrics.update(_scalars(trainer.callback_metrics))
        best = trainer.checkpoint_callback.best_model_path or None
        metrics["best_model_score"] = _float(trainer.checkpoint_callback.best_model_score)
        testing = cfg.test and "test" in dm.available_splits()
        if cfg.model.person_scorer or testing:  # the best weights, read once for both
            module = load_module(best) if best else trainer.lightning_module
        if cfg.model.person_scorer:
            metrics.update(fit_scorer_into(module, best, trainer, dm, cfg))
            metrics.update(final_val_ap(trainer, module, dm))
        if testing:
            metrics.update(test(cfg, dm, trainer, module, out_dir))
        elif cfg.test:
            log.warning("no test split (data.test is not set): skipping the test groupings")
        wandb_dir = wandb_run_dir(loggers)
    finally:
        finish_wandb(loggers)
    write_metrics(out_dir / "metrics.json", metrics)
    print(where_things_went(out_dir, trainer.checkpoint_callback, wandb_dir))
    return metrics


def where_things_went(out_dir: Path, checkpoints: ModelCheckpoint,
                      wandb_dir: Path | None) -> str:
    """The closing lines of a run: its folder, checkpoints, metrics and W&B run."""
    lines = ["", f"run folder:      {out_dir}",
             f"best checkpoint: {checkpoints.best_model_path or '-'}",
             f"last checkpoint: {checkpoints.last_model_path or _last(checkpoints)}",
             f"metrics:         {out_dir / 'metrics.json'}"]
    if (out_dir / "csv" / "metrics.csv").is_file():
        lines.append(f"curves:          {out_dir / 'csv' / 'metrics.csv'}")
    if wandb_dir is not None:
        lines.append(f"W&B run:         {wandb_dir}")
        if wandb_dir.name.startswith("offline-"):
            run_id = wandb_dir.name.rsplit("-", 1)[-1]  # a resumed run has several parts
            parts = sorted(wandb_dir.parent.glob(f"offline-run-*-{run_id}"))
            lines.append(f"upload it with:  wandb sync {' '.join(map(str, parts))}")
    return "\n".join(lines)


def _last(checkpoints: ModelCheckpoint) -> str:
    """``last.ckpt`` when it exists (``ddp_spawn`` saves it in a child process)."""
    path = Path(checkpoints.dirpath or "") / f"{checkpoints.CHECKPOINT_NAME_LAST}.ckpt"
    return str(path) if checkpoints.dirpath and path.is_file() else "-"


def check_resume_settings(cfg: TrainConfig, out_dir: Path) -> int:
    """Refuse a resume whose data or graph settings differ from the checkpoint's (unless
    ``resume_allow_changes``); returns the epoch it resumes at."""
    changed = check_resume(cfg.ckpt_path, cfg.data, cfg.graph, cfg.resume_allow_changes)
    if changed:
        log.warning("resuming with other settings (resume_allow_changes=true): %s",
                    "; ".join(changed))
    epoch = resume_state(cfg.ckpt_path)["epoch"]
    log.info("resuming %s after %d epoch(s), in %s", cfg.ckpt_path, epoch, out_dir)
    return epoch


def fit_scorer_into(module: PosegnnModule, ckpt: str | None, trainer: L.Trainer,
                    dm: PoseGraphDataModule, cfg: TrainConfig) -> dict[str, float]:
    """Fit the person scorer of ``module`` (the best weights) on the training split's
    people, and store it in ``module``'s checkpoint ``ckpt`` when there is one."""
    start = time.perf_counter()
    fit = fit_person_scorer(module, dm.dataset("train"), dm.ground_truth("train"), dm.layout,
                            cfg.grouping.gnn, dm.cfg.batch_size, cfg.progress)
    log.info("person scorer fitted on %d training people (mean OKS %.3f, mse %.4f) in %.1f s",
             fit["people"], fit["mean_oks"], fit["mse"], time.perf_counter() - start)
    if ckpt and trainer.is_global_zero:
        store_person_scorer(ckpt, module)
    return {f"person_scorer/{k}": v for k, v in fit.items()}


def final_val_ap(trainer: L.Trainer, module: PosegnnModule,
                 dm: PoseGraphDataModule) -> dict[str, float]:
    """Validation AP of ``module`` (the best weights) with its fitted person scorer, the
    ranking the test split gets; the per-epoch values, logged before the scorer existed,
    rank people by heat x probability. Replaces them in ``metrics.json`` and the loggers."""
    val_ap = next((c for c in trainer.callbacks if isinstance(c, ValGroupingAP)), None)
    if val_ap is None:  # every process computes it alike (and writes metrics.json)
        return {}
    metrics = {k: v for k, v in val_ap.compute(trainer, module, dm).items() if "/gnn/" in k}
    log.info("val gnn AP with the fitted person scorer: %.3f", metrics.get("val/gnn/AP", -1))
    log_final_metrics(trainer.loggers, metrics, step=trainer.global_step,
                      epoch=max(trainer.current_epoch - 1, 0))
    return metrics


def test(cfg: TrainConfig, dm: PoseGraphDataModule, trainer: L.Trainer,
         module: PosegnnModule, out_dir: Path) -> dict[str, float]:
    """Edge metrics and the three groupings on the test split, with ``module`` (the best
    weights)."""
    tester = trainer
    if trainer.world_size > 1:  # edge metrics once over the whole split, in this process
        tester = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, logger=False,
                           enable_progress_bar=False, deterministic=cfg.trainer.deterministic)
    tester.test(module, datamodule=dm, verbose=False)
    metrics = _scalars(tester.callback_metrics, prefix="test/")
    grouped = evaluate_groupings(
        dm.ground_truth("test"), dm.layout, dm.dataset("test"),
        cfg.grouping, module=module, prefix="test",
        batch_size=dm.cfg.batch_size, results_dir=out_dir, progress=cfg.progress,
        maps=dm.maps_reader("test"))
    # AP, AP50, AP75, AP_hard, ... of every grouping: CSV row, TensorBoard, W&B summary
    metrics.update(grouped)
    log_final_metrics(trainer.loggers, grouped if tester is trainer else metrics,
                      step=trainer.global_step, epoch=max(trainer.current_epoch - 1, 0))
    print("\nTest split: OKS AP of each grouping on the same candidates\n")
    print(format_table(metrics, "test"))
    return metrics


def _float(value) -> float | None:
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def _scalars(callback_metrics: dict, prefix: str = "") -> dict[str, float]:
    return {k: _float(v) for k, v in callback_metrics.items() if k.startswith(prefix)}
