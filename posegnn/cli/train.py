"""``posegnn-train``: fit the edge classifier and test it (Hydra app; see conf/train.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from posegnn.cli.common import CONF_DIR, hydra_run_info, prepare_runtime, user_errors


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from posegnn.train import train

    prepare_runtime(cfg)
    out_dir, overrides, sweep = hydra_run_info()
    with user_errors("posegnn-train"):
        metrics = train(cfg, out_dir, overrides, sweep)
    # what a sweeper maximizes (hparams_search): test AP, else the last epoch's val AP
    return next((metrics[k] for k in ("test/gnn/AP", "val/gnn/AP")
                 if metrics.get(k) is not None), None)


if __name__ == "__main__":
    main()
