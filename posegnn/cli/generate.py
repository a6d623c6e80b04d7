"""``posegnn-generate out=DIR num_images=N seed=S crowd=... layout=... [poses=FILE]``."""

from __future__ import annotations

from dataclasses import fields

import hydra
from omegaconf import DictConfig, OmegaConf

from posegnn.cli.common import CONF_DIR, user_errors


@hydra.main(config_path=CONF_DIR, config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from posegnn.data.synthetic import SyntheticConfig, generate_dataset

    if not cfg.out:
        raise SystemExit("posegnn-generate: give the output folder, e.g. out=outputs/my_data")
    with user_errors("posegnn-generate"):
        settings = OmegaConf.to_object(cfg)
        spec = SyntheticConfig(**{f.name: getattr(settings, f.name)
                                  for f in fields(SyntheticConfig)})
        out = generate_dataset(cfg.out, spec, progress=True, overwrite=cfg.overwrite)
    print(f"wrote {cfg.num_images} images to {out}")


if __name__ == "__main__":
    main()
