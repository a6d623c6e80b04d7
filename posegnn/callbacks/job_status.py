"""Hydra callbacks: record every job's outcome, so a failed sweep job is never silent."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
STATUS_FILE = "job_status.json"


class JobStatusCallback(Callback):
    """Write ``job_status.json`` (status, overrides, error) into each job's folder.

    Hydra's basic sweeper runs every job, then exits 1 without ``on_multirun_end`` when
    one failed; per-job files keep the other jobs' results readable by ``posegnn-report``.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = job_return.hydra_cfg.hydra if job_return.hydra_cfg else None
        if hydra_cfg is None:
            return
        out = Path(hydra_cfg.runtime.output_dir)
        failed = job_return.status == JobStatus.FAILED
        record = {
            "status": "failed" if failed else "completed",
            "job_num": hydra_cfg.job.get("num"),
            "overrides": list(job_return.overrides or []),
        }
        if failed:
            err = job_return._return_value
            record["error"] = f"{type(err).__name__}: {err}"
            log.error("job %s failed: %s", record["job_num"], record["error"])
        out.mkdir(parents=True, exist_ok=True)
        (out / STATUS_FILE).write_text(json.dumps(record, indent=2))
