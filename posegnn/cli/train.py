"""``posegnn-train``: fit the edge classifier and test it (Hydra app; see conf/train.yaml)."""

from __future__ import annotations

from posegnn.cli.launch import launch


def job(cfg) -> float | None:
    from posegnn.cli.common import hydra_run_info, prepare_runtime, user_errors
    from posegnn.tasks.train import train

    settings = prepare_runtime(cfg, "posegnn-train")
    out_dir, overrides, sweep = hydra_run_info()
    with user_errors("posegnn-train"):
        metrics = train(settings, out_dir, overrides, sweep)
    return optimized_value(metrics, settings.optimized_metric)


def optimized_value(metrics: dict, name: str) -> float | None:
    """The value a sweeper optimizes. Hydra's basic sweeper ignores it; any other (Optuna)
    needs it, so a missing metric is an error there, naming the ones the run has."""
    value = metrics.get(name)
    if value is None and _sweeper_reads_results():
        have = ", ".join(sorted(k for k, v in metrics.items() if isinstance(v, float)
                                and "/" in k and k.split("/")[0] in ("val", "test")))
        raise ValueError(f"optimized_metric={name} is not among this run's metrics ({have}); "
                         "set optimized_metric to one of them, or keep test=true")
    return value


def _sweeper_reads_results() -> bool:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    target = str(HydraConfig.get().sweeper.get("_target_", ""))
    return bool(target) and not target.endswith("BasicSweeper")


def main() -> None:
    launch("train", job)


if __name__ == "__main__":
    main()
