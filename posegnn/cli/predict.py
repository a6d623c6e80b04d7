"""``posegnn-predict ckpt_path=CKPT input=DIR out=FILE [draw=N [images=DIR]]``: COCO
keypoint results, and the people of N images drawn over their heatmaps or images."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from posegnn.cli.common import CONF_DIR, hydra_run_info, prepare_runtime, user_errors


@hydra.main(config_path=CONF_DIR, config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from posegnn.tasks.predict import predict

    settings = prepare_runtime(cfg, "posegnn-predict")
    if settings.method == "oracle":
        raise SystemExit("posegnn-predict: the oracle grouping needs ground truth; "
                         "use posegnn-eval")
    missing = [k for k in ("input", "out") if not getattr(settings, k)]
    if settings.method == "gnn" and not settings.ckpt_path:
        missing.insert(0, "ckpt_path")
    if missing:
        raise SystemExit(f"posegnn-predict: set {', '.join(f'{k}=...' for k in missing)}")
    with user_errors("posegnn-predict"):
        n = predict(settings, hydra_run_info()[0])
    print(f"wrote {n} people to {settings.out}")


if __name__ == "__main__":
    main()
