"""Time HigherHRNet's adjust and refine after grouping, per image, on synthetic maps.

Writes a synthetic dataset (256 x 256 heatmaps, 128 x 128 tags) into a temporary folder,
builds its graphs, then times reading each image's maps and the ae and oracle groupings
with the steps off, with ``adjust``, with ``refine`` and with both.

    python benchmarks/bench_refine.py --images 100 [--crowd packed] [--clock cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from posegnn.data.cache import build_graphs
from posegnn.data.graph import GraphConfig
from posegnn.data.maps import PoseMapsDataset
from posegnn.data.synthetic import SyntheticConfig, generate_dataset
from posegnn.evaluation.runner import candidates_of
from posegnn.grouping import build_grouping

CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
STEPS = {"none": {"adjust": False, "refine": False}, "adjust": {"adjust": True, "refine": False},
         "refine": {"adjust": False, "refine": True}, "both": {"adjust": True, "refine": True}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--crowd", default="mixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: this thread's CPU time (steadier when "
                             "other jobs share the cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(Path(tmp) / "data", SyntheticConfig(
            num_images=args.images, seed=args.seed, crowd=args.crowd), progress=False)
        ds = PoseMapsDataset(root)
        graphs = build_graphs(ds, ds.image_ids, GraphConfig(), progress=False)
        start = time.perf_counter()
        maps = [ds.load_maps(int(g.image_id)) for g in graphs]
        read_ms = 1000 * (time.perf_counter() - start) / len(graphs)
        cands = [candidates_of(g) for g in graphs]
        print(f"{len(graphs)} images, {np.mean([len(c) for c in cands]):.1f} candidates each; "
              f"reading the maps: {read_ms:.1f} ms an image\n")
        clock = CLOCKS[args.clock]
        print("| grouping | steps | ms / image |\n|---|---|---|")
        for name in ("ae", "oracle"):
            for steps, settings in STEPS.items():
                grouping = build_grouping(name, layout=ds.layout, **settings)
                start = clock()
                for g, c, m in zip(graphs, cands, maps, strict=True):
                    kwargs = {"person": g.person.numpy()} if name == "oracle" else {}
                    grouping.group(c, maps=m, **kwargs)
                ms = 1000 * (clock() - start) / len(graphs)
                print(f"| {name} | {steps} | {ms:.1f} |")


if __name__ == "__main__":
    main()
