"""``posegnn-transfer [mode=cross|leave_one_out] [use=[...]] [ckpt_path=shipped]``: train
on one world, test on every other, print one matrix (Hydra app; see conf/transfer.yaml)."""

from __future__ import annotations

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from posegnn.cli.common import CONF_DIR, hydra_run_info, prepare_runtime, user_errors
from posegnn.tasks.transfer import TransferConfig

ConfigStore.instance().store(name="transfer_schema", node=TransferConfig)


@hydra.main(config_path=CONF_DIR, config_name="transfer", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from posegnn.tasks.transfer import run_transfer

    settings = prepare_runtime(cfg, "posegnn-transfer")
    out_dir, _, _ = hydra_run_info()
    with user_errors("posegnn-transfer"):
        run_transfer(settings, out_dir)


if __name__ == "__main__":
    main()
