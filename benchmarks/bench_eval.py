"""Images per second of ``posegnn-eval`` (graph building, the shipped model and the three
groupings with their defaults) on one synthetic test set, for this checkout and,
optionally, an older one, in one run on one machine.

    git archive <old commit> | tar -x -C ../posegnn-before
    python benchmarks/bench_eval.py --images 500 [--crowd mixed] [--baseline-src ../posegnn-before]

Each code runs the same command in its own process (one torch thread, a fresh graph
cache, so graphs are built): ``posegnn-eval data=maps data.test=DIR``. Reported: the
command's wall time, images per second over it, and the seconds per image of each
grouping that ``metrics.json`` records. The numba cache is warmed by a first tiny run of
each code, so compiling is not counted (``bench_compile.py`` measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run_eval(src: Path, data: Path, out: Path, env: dict) -> tuple[float, dict]:
    """Wall seconds and metrics of one ``posegnn-eval`` run of the code under ``src``."""
    cmd = [sys.executable, "-m", "posegnn.cli.evaluate", "data=maps", f"data.test={data}",
           f"paths.output_dir={out}", f"paths.cache_dir={out / 'cache'}", "progress=false"]
    start = time.perf_counter()
    done = subprocess.run(cmd, env={**env, "PYTHONPATH": str(src)}, capture_output=True,
                          text=True, check=False, cwd=out.parent)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"posegnn-eval ({src}) failed:\n{done.stderr[-3000:]}")
    metrics = json.loads(next(out.rglob("metrics.json")).read_text())
    return wall, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--crowd", default="mixed")
    ap.add_argument("--seed", type=int, default=11)
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
        rows = []
        for label, src in codes:
            run_eval(src, tiny, tmp / f"warm_{label}", env)  # compiles, once
            wall, metrics = run_eval(src, data, tmp / f"run_{label}", env)
            rows.append((label, wall, metrics))
    print(f"{args.images} {args.crowd} images\n")
    print("| code | wall s | images / s | gnn s/img | ae s/img | oracle s/img | gnn AP | ae AP |")
    print("|---|---|---|---|---|---|---|---|")
    for label, wall, m in rows:
        cells = [m.get(f"test/{g}/sec_per_image", float("nan")) for g in ("gnn", "ae", "oracle")]
        print(f"| {label} | {wall:.1f} | {args.images / wall:.1f} | "
              + " | ".join(f"{c * 1000:.1f} ms" for c in cells)
              + f" | {m.get('test/gnn/AP', float('nan')):.4f} | "
              f"{m.get('test/ae/AP', float('nan')):.4f} |")


if __name__ == "__main__":
    main()
