"""Generation speed: images per second, synthetic people and real poses (one process).

    python benchmarks/bench_generate.py --num-images 200
    python benchmarks/bench_generate.py --poses /path/to/crowdpose_val.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from posegnn.data.synthetic import SyntheticConfig, generate_dataset


def bench(name: str, cfg: SyntheticConfig, repeat: int) -> None:
    """Generate ``cfg.num_images`` images ``repeat`` times; print the best rate."""
    best = float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            out = generate_dataset(Path(tmp) / "ds", cfg, progress=False)
            best = min(best, time.perf_counter() - start)
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{name:<28} {cfg.num_images / best:8.1f} images/s   "
          f"({cfg.num_images} images in {best:.2f} s, {size / 2**20:.1f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the best counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--poses", type=Path, default=None,
                    help="COCO keypoint file for the real-poses case (skipped without it)")
    args = ap.parse_args()
    for layout in ("crowdpose14", "coco17"):
        cfg = SyntheticConfig(num_images=args.num_images, seed=args.seed, crowd="mixed",
                              layout=layout)
        bench(f"synthetic mixed {layout}", cfg, args.repeat)
    if args.poses is not None:
        cfg = SyntheticConfig(num_images=args.num_images, seed=args.seed,
                              poses=str(args.poses))
        bench(f"poses {args.poses.name}", cfg, args.repeat)
    else:
        print("real poses: skipped (give --poses FILE)")


if __name__ == "__main__":
    main()
