"""``posegnn-eval [ckpt_path=CKPT] [data=maps data.test=DIR]``: every grouping, one table."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from posegnn.cli.common import CONF_DIR, hydra_run_info, prepare_runtime, user_errors

log = logging.getLogger(__name__)


@hydra.main(config_path=CONF_DIR, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from posegnn.tasks.evaluate import evaluate

    settings = prepare_runtime(cfg, "posegnn-eval")
    out_dir, _, _ = hydra_run_info()
    with user_errors("posegnn-eval"):
        evaluate(settings, out_dir)


if __name__ == "__main__":
    main()
