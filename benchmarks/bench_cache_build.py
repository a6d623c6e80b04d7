"""Building one split's graph cache with 1 and N processes: images/s and peak memory.

    python benchmarks/bench_cache_build.py --images 10000 --workers 1 2
    python benchmarks/bench_cache_build.py --data DIR --workers 1 2   # an existing dataset

Generates a mixed-crowd dataset (or reads ``--data``), then for each worker count builds
and writes the cache in a fresh process (``cached_graphs(..., workers=N)``, what
``data.build_workers=N`` does), and prints the rate, the peak resident memory of that
process and of its largest worker, and whether every build gave the same cache file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_once(data: Path, cache: Path, workers: int) -> dict:
    """In this process: build and write the cache; the rate and peak memory."""
    import torch

    from posegnn.data.cache import cached_graphs
    from posegnn.data.graph import GraphConfig
    from posegnn.data.maps import PoseMapsDataset

    torch.set_num_threads(1)
    ds = PoseMapsDataset(data)
    start = time.perf_counter()
    path = cached_graphs(ds, ds.image_ids, GraphConfig(), cache, "bench", progress=False,
                         workers=workers)
    seconds = time.perf_counter() - start
    kib = 1024 if sys.platform.startswith("linux") else 1  # ru_maxrss: KiB on Linux
    return {"workers": workers, "images": len(ds.image_ids), "seconds": seconds,
            "images_per_s": len(ds.image_ids) / seconds,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 2**20,
            "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            * kib / 2**20,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--data", type=Path, help="an existing pose-maps dataset instead")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--timeout-s", type=float, default=3600, help="per build process")
    ap.add_argument("--one", nargs=3, metavar=("DATA", "CACHE", "WORKERS"),
                    help=argparse.SUPPRESS)  # the child process of one measurement
    args = ap.parse_args()
    if args.one:
        print(json.dumps(build_once(Path(args.one[0]), Path(args.one[1]), int(args.one[2]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            from posegnn.data.synthetic import SyntheticConfig, generate_dataset

            data = generate_dataset(tmp / "data", SyntheticConfig(num_images=args.images),
                                    progress=False)
        rows = []
        for workers in args.workers:
            out = subprocess.run([sys.executable, __file__, "--one", str(data),
                                  str(tmp / f"cache-{workers}"), str(workers)],
                                 check=True, capture_output=True, text=True,
                                 timeout=args.timeout_s)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{rows[0]['images']} images, default graph settings, one thread per process")
        print("| processes | images/s | seconds | peak MiB (builder) | peak MiB (a worker) |")
        print("|---|---|---|---|---|")
        for r in rows:
            worker = f"{r['worker_peak_mib']:.0f}" if r["workers"] > 1 else "-"
            print(f"| {r['workers']} | {r['images_per_s']:.1f} | {r['seconds']:.1f} | "
                  f"{r['peak_mib']:.0f} | {worker} |")
        same = len({r["sha256"] for r in rows}) == 1
        print(f"same cache file from every build: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
