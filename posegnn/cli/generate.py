"""``posegnn-generate out=DIR num_images=N seed=S crowd=... layout=... [poses=FILE]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from posegnn.cli.common import CONF_DIR, user_errors


@hydra.main(config_path=CONF_DIR, config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from posegnn.data.synthetic import DetectorNoise, SyntheticConfig, generate_dataset

    if not cfg.out:
        raise SystemExit("posegnn-generate: give the output folder, e.g. out=outputs/my_data")
    spec = SyntheticConfig(num_images=cfg.num_images, seed=cfg.seed, crowd=cfg.crowd,
                           layout=cfg.layout, poses=cfg.poses,
                           noise=DetectorNoise(**OmegaConf.to_container(cfg.noise)))
    with user_errors("posegnn-generate"):
        out = generate_dataset(cfg.out, spec, progress=True, overwrite=cfg.overwrite)
    print(f"wrote {cfg.num_images} images to {out}")


if __name__ == "__main__":
    main()
