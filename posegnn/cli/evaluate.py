"""``posegnn-eval [ckpt_path=CKPT] [data=maps data.test=DIR]``: every grouping, one table."""

from __future__ import annotations

from posegnn.cli.launch import launch

PROG = "posegnn-eval"


def job(cfg) -> None:
    from posegnn.cli.common import hydra_run_info, prepare_runtime, user_errors
    from posegnn.tasks.evaluate import evaluate

    settings = prepare_runtime(cfg, PROG)
    out_dir, _, _ = hydra_run_info()
    with user_errors(PROG):
        evaluate(settings, out_dir)


def main() -> None:
    launch("eval", job)


if __name__ == "__main__":
    main()
