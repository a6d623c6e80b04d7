"""Structured-config schemas: a misspelled key or a wrong type fails at start.

Each config group in ``conf/`` fills one field of these dataclasses; the primary
configs (``train``, ``eval``, ``predict``, ``generate``) start from the registered
schema, so Hydra validates every override against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from posegnn.data.datamodule import DataConfig
from posegnn.data.graph import GraphConfig
from posegnn.data.synthetic import SyntheticConfig
from posegnn.figures import MIN_SCORE
from posegnn.grouping.ae import AEGroupingConfig
from posegnn.grouping.gnn import GNNGroupingConfig
from posegnn.grouping.oracle import OracleGroupingConfig
from posegnn.models.module import LossConfig, OptimizerConfig, SchedulerConfig
from posegnn.models.network import ModelConfig


def _conf_dir() -> str:
    """``conf/``: inside the package once installed from a wheel (setup.py puts it
    there), at the top of the repository in a checkout or an editable install."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"posegnn's conf/ is neither in {here} (an installed wheel) nor "
                            f"in {here.parent} (a checkout): reinstall posegnn")


CONF_DIR = _conf_dir()


@dataclass
class TrainerConfig:
    """Lightning Trainer arguments (``trainer=cpu|gpu|ddp``)."""

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    max_epochs: int = 20
    gradient_clip_val: float | None = None
    deterministic: Any = True  # True on CPU; "warn" on GPU (max aggregation)
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    # several processes (trainer=ddp): a collective (all-reduce, broadcast, barrier) that
    # waits longer than this is an error naming the rank and the stage, not a hang
    collective_timeout_s: float = 300.0


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "posegnn"
    entity: str | None = None
    group: str | None = None  # defaults to the sweep's folder name in a multirun
    name: str | None = None  # defaults to the run's overrides
    tags: list[str] = field(default_factory=list)
    log_model: bool = True  # the best checkpoint as an artifact


@dataclass
class LoggerConfig:
    """Which loggers a run writes to (``logger=csv|tensorboard|wandb|many|none``)."""

    csv: bool = True
    tensorboard: bool = False
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CallbacksConfig:
    monitor: str = "val/loss"  # or val/gnn/AP once the AP callback runs
    mode: str = "min"
    save_top_k: int = 1
    early_stopping: bool = False
    patience: int = 5
    # val AP of gnn and ae every N epochs (about 1 s per 60 images) and always at the
    # last epoch; 0: only there
    val_ap_every_n_epochs: int = 1
    val_ap_max_images: int = 100
    figures_every_n_epochs: int = 5  # prediction-vs-truth PNGs (and W&B images); 0: none
    figures_num_images: int = 4


@dataclass
class GroupingConfig:
    """Which groupings an evaluation runs, and their settings (``grouping=...``)."""

    run: list[str] = field(default_factory=lambda: ["gnn", "ae", "oracle"])
    gnn: GNNGroupingConfig = field(default_factory=GNNGroupingConfig)
    ae: AEGroupingConfig = field(default_factory=AEGroupingConfig)
    oracle: OracleGroupingConfig = field(default_factory=OracleGroupingConfig)
    max_dets: int = 20  # people per image that COCOeval scores


@dataclass
class PathsConfig:
    output_dir: str = "outputs"  # relative paths start where posegnn is started
    data_dir: str = "${paths.output_dir}/data"  # generated synthetic datasets
    cache_dir: str = "${paths.output_dir}/cache"  # built graphs


@dataclass
class QuestionConfig:
    """One question ``posegnn-report`` answers from a sweep (``questions`` of
    ``conf/sweep/seed_questions.yaml``): the jobs compared by the value of one setting."""

    title: str = MISSING
    factor: str = MISSING  # the swept config leaf, e.g. optimizer.name
    # leaves that change along with it (a model group changes model.*), so that jobs
    # differing in them still count as differing only in the factor; [] = the factor alone
    owns: list[str] = field(default_factory=list)
    keeps: list[str] = field(default_factory=list)  # leaves under ``owns`` swept on their own
    # what the jobs are compared on (labels of posegnn/report/compare.py's METRICS), the
    # answer going by the first that tells the values apart
    metrics: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # factor value -> name in the report
    curves: bool = False  # instead: the shape of each job's loss curves, by the factor
    best_of_each: bool = False  # also the best job of each value (its ``keeps`` shown)


@dataclass
class RunConfig:
    """What every job has: where outputs go, progress bars, CPU threads."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    progress: bool = True
    threads: int = 1  # torch CPU threads: these small graphs run fastest on one


@dataclass
class TrainConfig(RunConfig):
    """``posegnn-train``: fit, then test the best checkpoint with every grouping."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    ckpt_path: str | None = None  # resume training from this checkpoint (e.g. last.ckpt)
    # resume even when data or graph settings differ from the checkpoint's
    resume_allow_changes: bool = False
    # start from these weights with a new optimizer ("shipped": the layout's shipped model)
    finetune_from: str | None = None
    test: bool = True
    # what a sweeper (hparams_search) optimizes, from this run's metrics.json; a sweep
    # whose runs lack it fails, naming the metrics they have
    optimized_metric: str = "test/gnn/AP"
    # what posegnn-report answers from a sweep of these runs (none: the seed questions)
    questions: list[QuestionConfig] = field(default_factory=list)


@dataclass
class EvalConfig(RunConfig):
    """``posegnn-eval``: all groupings side by side on a test split."""

    seed: int = 0
    ckpt_path: str | None = None  # the gnn model; None: the one shipped for the layout
    split: str = "test"
    data: DataConfig = field(default_factory=DataConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    grouping: GroupingConfig = field(default_factory=GroupingConfig)


@dataclass
class PredictConfig(RunConfig):
    """``posegnn-predict``: COCO results for a dataset without annotations."""

    ckpt_path: str | None = None  # the gnn model; None: the one shipped for the layout
    input: str | None = None
    out: str | None = None
    # the grouping (grouping.run: one of gnn, ae) and its settings, named as in posegnn-eval
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    batch_size: int = 8
    draw: int = 0  # draw the people of the first N images into <run>/figures/
    images: str | None = None  # draw over these image files (by file_name), not heatmaps
    draw_min_score: float = MIN_SCORE  # the drawings show people scored at least this


@dataclass
class GenerateConfig(SyntheticConfig):
    """``posegnn-generate``: write a synthetic pose-maps dataset (every setting of
    :class:`SyntheticConfig`, its detector and map sizes included)."""

    out: str | None = None
    overwrite: bool = False


def register_schemas() -> None:
    """Register the schemas under ``schema/<name>`` for the primary configs' defaults."""
    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=node)


SCHEMAS = {"train": TrainConfig, "eval": EvalConfig, "predict": PredictConfig,
           "generate": GenerateConfig}  # primary config -> its schema
