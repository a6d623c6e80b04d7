"""``posegnn-predict input=DIR out=FILE [ckpt_path=CKPT] [grouping.run=[ae]] [draw=N
[images=DIR]]``: COCO keypoint results, and the people of N images drawn over their
heatmaps or images. Without ``ckpt_path``, gnn uses the model shipped for the layout."""

from __future__ import annotations

from posegnn.cli.launch import launch

PROG = "posegnn-predict"


def job(cfg) -> None:
    from posegnn.cli.common import hydra_run_info, prepare_runtime, user_errors
    from posegnn.tasks.predict import predict

    settings = prepare_runtime(cfg, PROG)
    run = list(settings.grouping.run)
    if run == ["oracle"]:
        raise SystemExit(f"{PROG}: error: the oracle grouping needs ground truth; "
                         "use posegnn-eval")
    if len(run) != 1 or run[0] not in ("gnn", "ae"):
        raise SystemExit(f"{PROG}: error: grouping.run={run}: predict runs one grouping, "
                         "grouping.run=[gnn] or grouping.run=[ae]")
    missing = [k for k in ("input", "out") if not getattr(settings, k)]
    if missing:
        raise SystemExit(f"{PROG}: error: set {', '.join(f'{k}=...' for k in missing)}")
    with user_errors(PROG):
        n = predict(settings, hydra_run_info()[0])
    print(f"wrote {n} people to {settings.out}")


def main() -> None:
    launch("predict", job)


if __name__ == "__main__":
    main()
