"""Graph building speed, cache size and load time, and graph statistics.

    python benchmarks/bench_graphs.py --images 300

Builds the vertex graphs of a generated mixed-crowd dataset on one core (reading the
npz maps included), writes and reloads the cache, and prints the statistics of the
graphs with their edges (candidates and pairs per image, positives, coverage).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from posegnn.data.cache import build_graphs, cached_graphs, load_graphs
from posegnn.data.graph import AddEdges, GraphConfig, GraphList
from posegnn.data.maps import PoseMapsDataset
from posegnn.data.stats import graph_statistics
from posegnn.data.synthetic import SyntheticConfig, generate_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--crowd", default="mixed")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = GraphConfig()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = PoseMapsDataset(generate_dataset(tmp / "data", SyntheticConfig(
            num_images=args.images, crowd=args.crowd), progress=False))
        start = time.perf_counter()
        build_graphs(ds, ds.image_ids, cfg, progress=False)
        build = time.perf_counter() - start
        start = time.perf_counter()
        path = cached_graphs(ds, ds.image_ids, cfg, tmp / "cache", "bench", progress=False)
        build_and_save = time.perf_counter() - start
        start = time.perf_counter()
        graphs = load_graphs(path)
        load = time.perf_counter() - start
        tensors = sum(t.numel() * t.element_size() for g in graphs for _, t in g
                      if torch.is_tensor(t)) / 2**20
        stats = graph_statistics(GraphList(graphs, AddEdges(ds.layout, cfg.edges)), ds)
        per_k = 1000 / args.images
        print(f"{args.images} {args.crowd} images, {ds.layout.name}, threads={args.threads}")
        print(f"graph building: {args.images / build:.1f} images/s "
              f"({1000 * build / args.images:.1f} ms/image, maps read included)")
        print(f"cache: {path.stat().st_size / 2**20 * per_k:.1f} MiB per 1,000 graphs on disk, "
              f"written in {build_and_save - build:+.1f} s beyond building, loaded in "
              f"{load * per_k:.2f} s per 1,000 graphs, {tensors * per_k:.1f} MiB of tensors in "
              "memory per 1,000 graphs (edges are added per batch, not stored)")
        print("statistics: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in stats.items()))


if __name__ == "__main__":
    main()
