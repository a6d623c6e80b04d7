"""Images per second of ``posegnn-eval`` (graph building, the shipped model and the three
groupings with their defaults) on one synthetic test set, for this checkout and,
optionally, an older one, in one run on one machine.

    git archive <old commit> | tar -x -C ../posegnn-before
    python benchmarks/bench_eval.py --images 500 [--crowd mixed] [--baseline-src ../posegnn-before]

Each code runs the same command in its own process (one torch thread, a fresh graph
cache, so graphs are built): ``posegnn-eval data=maps data.test=DIR``. Reported: the
command's wall time, its CPU time (user + system, steadier than the wall time when other
jobs share the cores), images per CPU second, and the seconds per image of each grouping
that ``metrics.json`` records. The numba cache is warmed by a first tiny run of
each code, so compiling is not counted (``bench_compile.py`` measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run_eval(src: Path, data: Path, out: Path, env: dict) -> tuple[float, float, dict]:
    """Wall seconds, CPU seconds (user + system) and metrics of one ``posegnn-eval`` run
    of the code under ``src``."""
    cmd = [sys.executable, "-m", "posegnn.cli.evaluate", "data=maps", f"data.test={data}",
           f"paths.output_dir={out}", f"paths.cache_dir={out / 'cache'}", "progress=false"]
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, env={**env, "PYTHONPATH": str(src)}, capture_output=True,
                          text=True, check=False, cwd=out.parent)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode:
        raise SystemExit(f"posegnn-eval ({src}) failed:\n{done.stderr[-3000:]}")
    metrics = json.loads(next(out.rglob("metrics.json")).read_text())
    return wall, cpu, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--crowd", default="mixed")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each code, in turn; each figure is the median")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="a checkout of the old code (git archive <commit> | tar -x -C DIR)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from posegnn.data.synthetic import SyntheticConfig, generate_dataset

    codes = [("new", HERE)] + ([("old", args.baseline_src.resolve())]
                               if args.baseline_src else [])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = generate_dataset(tmp / "data", SyntheticConfig(
            num_images=args.images, seed=args.seed, crowd=args.crowd), progress=False)
        tiny = generate_dataset(tmp / "tiny", SyntheticConfig(num_images=2, seed=1),
                                progress=False)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
               "NUMBA_CACHE_DIR": str(tmp / "numba")}
        for label, src in codes:
            run_eval(src, tiny, tmp / f"warm_{label}", env)  # compiles, once
        runs = {label: [] for label, _ in codes}
        for r in range(args.rounds):  # in turn, so both codes see the same load
            for label, src in codes:
                runs[label].append(run_eval(src, data, tmp / f"run_{label}_{r}", env))
    print(f"{args.images} {args.crowd} images; median of {args.rounds} run(s) each\n")
    print("| code | wall s | CPU s | images / CPU s | gnn s/img | ae s/img | oracle s/img "
          "| gnn AP | ae AP |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, done in runs.items():
        wall = statistics.median(w for w, _, _ in done)
        cpu = statistics.median(c for _, c, _ in done)
        m = done[0][2]
        cells = [statistics.median(d[2].get(f"test/{g}/sec_per_image", float("nan"))
                                   for d in done) for g in ("gnn", "ae", "oracle")]
        print(f"| {label} | {wall:.1f} | {cpu:.1f} | {args.images / cpu:.2f} | "
              + " | ".join(f"{c * 1000:.1f} ms" for c in cells)
              + f" | {m.get('test/gnn/AP', float('nan')):.4f} | "
              f"{m.get('test/ae/AP', float('nan')):.4f} |")


if __name__ == "__main__":
    main()
