"""Grouping time per image as people per image grow: gnn (graph edges + model + decode)
against ae, side by side, with candidate and pair counts and peak memory.

    python benchmarks/bench_people.py --ckpt outputs/train/<run>/checkpoints/last.ckpt
    python benchmarks/bench_people.py --people 1 5 10 20 40 60 --images 3

People come from a packed synthetic crowd (about 60 per image): for each count P, the P
largest people of each image are kept and the network's maps are simulated for them
alone (``poses=`` path of the generator). Without ``--ckpt`` an untrained default model
is timed (its probabilities, and so the decoder's work, are not realistic).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch_geometric.data import Batch

from posegnn.checkpoints import load_module
from posegnn.data.cache import build_graphs
from posegnn.data.graph import AddEdges, GraphConfig
from posegnn.data.maps import PoseMapsDataset
from posegnn.data.synthetic import SyntheticConfig, generate_dataset
from posegnn.evaluation.runner import candidates_of
from posegnn.grouping import build_grouping
from posegnn.models.module import PosegnnModule


def crowd_with(people: int, packed: Path, out: Path) -> Path:
    """A poses file holding the ``people`` largest people of each packed image."""
    data = json.loads((packed / "annotations.json").read_text())
    kept = []
    for img in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == img["id"]]
        kept += sorted(anns, key=lambda a: -a["area"])[:people]
    path = out / f"poses_{people}.json"
    path.write_text(json.dumps({**data, "annotations": kept}))
    return path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(graphs, module, graph_cfg: GraphConfig, layout, grouping: dict) -> dict[str, float]:
    edges = AddEdges(layout, graph_cfg.edges)
    gnn = build_grouping("gnn", layout=layout, **grouping)
    ae = build_grouping("ae", layout=layout)
    t = {"edges": 0.0, "model": 0.0, "decode": 0.0, "ae": 0.0}
    pairs = 0
    for g in graphs:
        start = time.perf_counter()
        data = edges(g)
        t["edges"] += time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            prob = module.edge_probabilities(Batch.from_data_list([data])).numpy()
        t["model"] += time.perf_counter() - start
        cands = candidates_of(g)
        start = time.perf_counter()
        gnn.group(cands, pair_index=data.pair_index.numpy(), prob=prob)
        t["decode"] += time.perf_counter() - start
        start = time.perf_counter()
        ae.group(cands)
        t["ae"] += time.perf_counter() - start
        pairs += data.pair_index.shape[1]
    n = len(graphs)
    return {**{k: 1000 * v / n for k, v in t.items()}, "pairs": pairs / n,
            "candidates": sum(g.num_nodes for g in graphs) / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, nargs="+", default=[1, 5, 10, 20, 40, 60])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--ckpt", type=Path, default=None)
    ap.add_argument("--threshold", type=float, default=0.1, help="gnn decoder threshold")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    L.seed_everything(0, verbose=False)
    warnings.simplefilter("ignore")
    if args.ckpt:
        module = load_module(args.ckpt)
        graph_cfg = GraphConfig(**module.hparams.graph)
    else:
        graph_cfg = GraphConfig()
        module = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        packed = generate_dataset(tmp / "packed", SyntheticConfig(
            num_images=args.images, crowd="packed", seed=7), progress=False)
        print(f"{'people':>6} {'cands':>6} {'pairs':>7} | {'edges ms':>8} {'model ms':>8} "
              f"{'decode ms':>9} {'gnn total':>9} | {'ae ms':>6} | {'peak RSS MiB':>12}")
        for people in args.people:
            poses = crowd_with(people, packed, tmp)
            ds = PoseMapsDataset(generate_dataset(tmp / f"p{people}", SyntheticConfig(
                num_images=args.images, poses=str(poses), seed=7), progress=False))
            graphs = build_graphs(ds, ds.image_ids, graph_cfg, progress=False)
            if module is None:
                sample = AddEdges(ds.layout, graph_cfg.edges)(graphs[0])
                module = PosegnnModule(sample.x.shape[1], sample.edge_attr.shape[1],
                                       model={"conv": "edgeconv_attr",
                                              "classifier_edge_attr": True}).eval()
            r = bench(graphs, module.eval(), graph_cfg, ds.layout,
                      {"threshold": args.threshold})
            total = r["edges"] + r["model"] + r["decode"]
            print(f"{people:>6} {r['candidates']:>6.0f} {r['pairs']:>7.0f} | "
                  f"{r['edges']:>8.1f} {r['model']:>8.1f} {r['decode']:>9.1f} {total:>9.1f} | "
                  f"{r['ae']:>6.1f} | {peak_rss_mib():>12.0f}")


if __name__ == "__main__":
    main()
