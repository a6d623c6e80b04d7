"""``posegnn-generate out=DIR num_images=N seed=S crowd=... layout=... [poses=FILE]``."""

from __future__ import annotations

from posegnn.cli.launch import launch

PROG = "posegnn-generate"


def job(cfg) -> None:
    from dataclasses import fields

    from omegaconf import OmegaConf

    from posegnn.cli.common import user_errors
    from posegnn.data.synthetic import SyntheticConfig, generate_dataset

    if not cfg.out:
        raise SystemExit(f"{PROG}: give the output folder, e.g. out=outputs/my_data")
    with user_errors(PROG):
        settings = OmegaConf.to_object(cfg)
        spec = SyntheticConfig(**{f.name: getattr(settings, f.name)
                                  for f in fields(SyntheticConfig)})
        out = generate_dataset(cfg.out, spec, progress=True, overwrite=cfg.overwrite)
    print(f"wrote {cfg.num_images} images to {out}")


def main() -> None:
    launch("generate", job)


if __name__ == "__main__":
    main()
