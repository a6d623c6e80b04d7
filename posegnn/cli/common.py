"""What every Hydra entry point shares: schemas, the config folder, run information."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from posegnn.config import CONF_DIR, RunConfig, register_schemas

__all__ = ["CONF_DIR", "hydra_run_info", "prepare_runtime", "register_resolvers",
           "user_errors"]


def _resume_run_dir(ckpt_path: str | None, new_dir: str) -> str:
    """``hydra.run.dir`` of posegnn-train: a checkpoint's own run folder when resuming
    (``ckpt_path=<run>/checkpoints/last.ckpt``), else a new one."""
    from posegnn.checkpoints import run_folder

    run = run_folder(ckpt_path) if ckpt_path else None
    return str(run) if run is not None else new_dir


def _resume_output_subdir(ckpt_path: str | None, stamp: str, mode=None) -> str:
    """Where Hydra writes the job's config: a run resumed in its own folder keeps its
    original ``.hydra/`` files and gets ``.hydra/resume-<time>/`` beside them (the jobs
    of a multirun have folders of their own)."""
    from posegnn.checkpoints import run_folder

    multirun = str(mode).upper().endswith("MULTIRUN")
    if ckpt_path and not multirun and run_folder(ckpt_path) is not None:
        return f".hydra/resume-{stamp}"
    return ".hydra"


def register_resolvers() -> None:
    """The ``posegnn_*`` resolvers the configs in ``conf/`` use."""
    for name, fn in (("posegnn_run_dir", _resume_run_dir),
                     ("posegnn_output_subdir", _resume_output_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_schemas()
register_resolvers()


def hydra_run_info() -> tuple[Path, list[str], str | None]:
    """(output folder, command-line overrides, sweep name or None) of the current job."""
    hc = HydraConfig.get()
    sweep = None
    if hc.mode is not None and hc.mode.name == "MULTIRUN":
        sweep = Path(hc.sweep.dir).name
    return Path(hc.runtime.output_dir), list(hc.overrides.task), sweep


def prepare_runtime(cfg: DictConfig, prog: str) -> RunConfig:
    """The job's typed settings (the schema dataclasses, built once here: their checks,
    closed sets of values included, run before any data work); set torch's CPU threads
    from ``threads`` and silence warnings that say nothing actionable on a CPU-only
    machine. A setting out of its allowed set is one line from ``prog``."""
    with user_errors(prog):
        select_maps_source(cfg, prog)
        settings = OmegaConf.to_object(cfg)
    import torch

    torch.set_num_threads(max(int(settings.threads), 1))
    os.environ.setdefault("WANDB_SILENT", "true")
    for pattern in (".*does not have many workers.*", ".*GPU available but not used.*",
                    ".*tensorboardX.*", ".*LeafSpec.*", ".*isinstance.*treespec.*"):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    return settings


def select_maps_source(cfg: DictConfig, prog: str) -> None:
    """A maps folder given (``data.train``/``val``/``test``) without ``data=maps``: the
    synthetic default gives way to the maps source, saying so; a poses source, which
    draws every split from ``data.poses``, refuses it in one line."""
    data = cfg.get("data")
    if data is None or data.get("kind") == "maps":
        return
    given = [f"data.{s}={data[s]}" for s in ("train", "val", "test") if data.get(s)]
    if not given:
        return
    if data.kind != "synthetic":
        raise SystemExit(f"{prog}: error: {given[0]} is a maps folder, but data={data.kind} "
                         "draws every split from data.poses; add data=maps to read it")
    data.kind = "maps"
    print(f"{prog}: {', '.join(given)}: reading maps folders (data=maps)")


def full_traceback_wanted() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _user_errors() -> tuple[type[BaseException], ...]:
    from posegnn.checkpoints import SettingsMismatch
    from posegnn.choices import SettingError
    from posegnn.data.maps import DatasetError
    from posegnn.distributed import DistributedError
    from posegnn.io import WriteError

    return (DatasetError, SettingsMismatch, FileNotFoundError, WriteError, SettingError,
            DistributedError)


@contextmanager
def user_errors(prog: str, traceback: bool = False) -> Iterator[None]:
    """Report a problem with the user's data, checkpoint or files as one message naming
    what is wrong, without a traceback (exit status 1). ``HYDRA_FULL_ERROR=1`` or
    ``traceback`` keeps the traceback; so does a multirun job, whose error Hydra records
    in the job's status while the sweep goes on."""
    try:
        yield
    except _user_errors() as err:
        multirun = HydraConfig.initialized() and HydraConfig.get().mode is not None \
            and HydraConfig.get().mode.name == "MULTIRUN"
        if traceback or full_traceback_wanted() or multirun:
            raise
        raise SystemExit(f"{prog}: error: {err}\n(set HYDRA_FULL_ERROR=1 for the traceback)") \
            from None
