"""Grouping cost per image as people per image grow: the gnn grouping end to end from the
candidates (pairs + edge attributes, model, decode) against ae on the same candidates.

    python benchmarks/bench_people.py --ckpt NEW.ckpt
    git archive <old commit> | tar -x -C ../posegnn-before
    python benchmarks/bench_people.py --ckpt NEW.ckpt --baseline OLD.ckpt \\
        --baseline-src ../posegnn-before --images 3 --repeat 5 [--refine]

People come from a packed synthetic crowd (about 60 per image): for each count P, the P
largest people of each image are kept and the network's maps simulated for them alone
(the ``poses=`` path of the generator). Each pipeline (``--ckpt`` with this checkout's
code; ``--baseline`` with the code under ``--baseline-src``) runs in its own process, one
torch thread, so both are measured in one run on one machine and each reports its own
peak RSS. Stage times are the median of ``--repeat`` runs per image, averaged over
images; with ``--rounds R`` the pipelines run R times in turn and each figure is the
median over rounds; ``--clock cpu`` times the worker thread's CPU time instead of the
elapsed time; ``--refine`` also times both groupings with HigherHRNet's refine on. Without
``--ckpt`` an untrained default model is timed (its probabilities, and so the decoder's
work, are not realistic).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

PEOPLE = (1, 5, 10, 20, 40, 60)


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


def make_datasets(root: Path, people: list[int], images: int) -> dict[int, str]:
    """One pose-maps dataset per people count, under ``root``."""
    from posegnn.data.synthetic import SyntheticConfig, generate_dataset

    packed = generate_dataset(root / "packed", SyntheticConfig(
        num_images=images, crowd="packed", seed=7), progress=False)
    out = {}
    for p in people:
        poses = crowd_with(p, packed, root)
        out[p] = str(generate_dataset(root / f"p{p}", SyntheticConfig(
            num_images=images, poses=str(poses), seed=7), progress=False))
    return out


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def median_ms(fn, repeat: int, clock=time.perf_counter) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = clock()
        result = fn()
        times.append(clock() - start)
    return 1000 * statistics.median(times), result


def time_image(g, edges, module, gnn, ae, repeat: int,
               clock=time.perf_counter, maps=None) -> tuple[dict[str, float], int]:
    """Median milliseconds of each stage on one vertex graph, and its scored pairs; with
    the image's ``maps``, also both groupings with HigherHRNet's refine on."""
    import torch

    from posegnn.evaluation.runner import candidates_of

    def model(data):
        with torch.inference_mode():
            return torch.sigmoid(module.net(data)).numpy()

    times = {}
    times["edges"], data = median_ms(partial(edges, g), repeat, clock)
    times["model"], prob = median_ms(partial(model, data), repeat, clock)
    cands = candidates_of(g)
    pair_index = data.pair_index.numpy()
    times["decode"], _ = median_ms(partial(gnn.group, cands, pair_index=pair_index,
                                           prob=prob), repeat, clock)
    times["ae"], _ = median_ms(partial(ae.group, cands), repeat, clock)
    if maps is not None:
        times["decode_refine"], _ = median_ms(partial(gnn.group, cands, pair_index=pair_index,
                                                      prob=prob, maps=maps), repeat, clock)
        times["ae_refine"], _ = median_ms(partial(ae.group, cands, maps=maps), repeat, clock)
    return times, pair_index.shape[1]


def worker(args) -> None:
    """Time one pipeline (the posegnn found on sys.path) and print one JSON line."""
    import resource
    import warnings

    import torch

    from posegnn.data.cache import build_graphs
    from posegnn.data.graph import AddEdges
    from posegnn.data.maps import PoseMapsDataset
    from posegnn.grouping import build_grouping

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    datasets = {int(k): v for k, v in json.loads(args.datasets).items()}
    module, graph_cfg = load(args.ckpt, datasets)
    try:
        from dataclasses import asdict

        from posegnn.config import GNNGroupingConfig
        settings = asdict(GNNGroupingConfig())
    except ImportError:
        settings = {"threshold": 0.1}
    rows = []
    for people, root in sorted(datasets.items()):
        ds = PoseMapsDataset(root)
        graphs = build_graphs(ds, ds.image_ids, graph_cfg, progress=False)
        edges = AddEdges(ds.layout, graph_cfg.edges)
        scorer = getattr(module, "scorer", None)  # a fitted person scorer scores the people
        gnn = build_grouping("gnn", layout=ds.layout, **settings,
                             **({"scorer": scorer} if scorer is not None else {}))
        ae = build_grouping("ae", layout=ds.layout)
        t = {"edges": [], "model": [], "decode": [], "ae": [], "decode_refine": [],
             "ae_refine": []}
        pairs = 0
        if people == min(datasets):  # once, untimed: compiles (or loads) numba's kernels
            time_image(graphs[0], edges, module, gnn, ae, 1, CLOCKS[args.clock],
                       ds.load_maps(int(graphs[0].image_id)))
        for g in graphs:
            maps = ds.load_maps(int(g.image_id)) if args.refine else None
            times, num_pairs = time_image(g, edges, module, gnn, ae, args.repeat,
                                          CLOCKS[args.clock], maps)
            for k, v in times.items():
                t[k].append(v)
            pairs += num_pairs
        row = {k: statistics.mean(v) for k, v in t.items() if v}
        row.update(people=people, pairs=pairs / len(graphs),
                   candidates=sum(g.num_nodes for g in graphs) / len(graphs),
                   peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        rows.append(row)
    print(json.dumps({"settings": settings, "edges": graph_cfg.edges.strategy, "rows": rows}))


def load(ckpt: str | None, datasets: dict[int, str]):
    """The module and graph settings of a checkpoint, or an untrained default model."""
    from posegnn.data.graph import GraphConfig

    if ckpt:
        from posegnn.checkpoints import load_module
        module = load_module(ckpt)
        if hasattr(module, "graph_cfg"):
            return module.eval(), module.graph_cfg
        return module.eval(), GraphConfig(**module.hparams.graph)  # a --baseline-src before it
    from posegnn.data.cache import build_graphs
    from posegnn.data.graph import AddEdges
    from posegnn.data.maps import PoseMapsDataset
    from posegnn.models.module import PosegnnModule

    cfg = GraphConfig()
    ds = PoseMapsDataset(datasets[min(datasets)])
    sample = AddEdges(ds.layout, cfg.edges)(build_graphs(ds, ds.image_ids[:1], cfg,
                                                         progress=False)[0])
    module = PosegnnModule(sample.x.shape[1], sample.edge_attr.shape[1],
                           model={"conv": "edgeconv_attr", "classifier_edge_attr": True})
    return module.eval(), cfg


def run_pipeline(ckpt: Path | None, src: Path, datasets: dict[int, str],
                 repeat: int, clock: str = "wall", refine: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--repeat", str(repeat), "--clock", clock,
           "--datasets", json.dumps(datasets)] + (["--ckpt", str(ckpt)] if ckpt else []) + (
        ["--refine"] if refine else [])
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"pipeline {ckpt} ({src}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """One run whose every figure is the median of ``runs``' figures."""
    rows = [{key: statistics.median(run["rows"][r][key] for run in runs)
             for key in runs[0]["rows"][r]} for r in range(len(runs[0]["rows"]))]
    return {**runs[0], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, nargs="+", default=list(PEOPLE))
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="runs per image; median kept")
    ap.add_argument("--ckpt", type=Path, default=None)
    ap.add_argument("--baseline", type=Path, default=None, help="checkpoint of the old code")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="a checkout of the old code (git archive <commit> | tar -x -C DIR)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: elapsed time; cpu: the worker thread's CPU time (steadier "
                         "when other jobs share the cores)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each pipeline, alternating new and old; each figure is "
                         "the median over rounds")
    ap.add_argument("--refine", action="store_true",
                    help="also time gnn and ae with HigherHRNet's refine on (the default)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--datasets", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if (args.baseline is None) != (args.baseline_src is None):
        ap.error("--baseline and --baseline-src go together")
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        datasets = make_datasets(Path(tmp), args.people, args.images)
        pipelines = [("new", args.ckpt, here)]
        if args.baseline:
            pipelines.append(("old", args.baseline, args.baseline_src.resolve()))
        done = {label: [] for label, _, _ in pipelines}
        for _ in range(args.rounds):
            for label, ckpt, src in pipelines:
                done[label].append(run_pipeline(ckpt, src, datasets, args.repeat, args.clock,
                                                args.refine))
        runs = [(label, median_run(done[label])) for label, _, _ in pipelines]
    print("| code | people | candidates | pairs | pairs+attrs ms | model ms | decode ms "
          "| gnn total ms | ae ms | gnn / ae | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for people in args.people:
        for label, run in runs:
            r = next(r for r in run["rows"] if r["people"] == people)
            total = r["edges"] + r["model"] + r["decode"]
            print(f"| {label} | {people} | {r['candidates']:.0f} | {r['pairs']:,.0f} | "
                  f"{r['edges']:.2f} | {r['model']:.2f} | {r['decode']:.2f} | {total:.2f} | "
                  f"{r['ae']:.2f} | {total / r['ae']:.1f} | {r['peak_rss_mib']:.0f} |")
    if args.refine:
        print("\nWith HigherHRNet's refine on for both (the default):\n")
        print("| code | people | gnn + refine ms | ae + refine ms | gnn / ae |")
        print("|---|---|---|---|---|")
        for people in args.people:
            for label, run in runs:
                r = next(r for r in run["rows"] if r["people"] == people)
                total = r["edges"] + r["model"] + r["decode_refine"]
                print(f"| {label} | {people} | {total:.2f} | {r['ae_refine']:.2f} | "
                      f"{total / r['ae_refine']:.2f} |")
    for label, run in runs:
        print(f"{label}: edges={run['edges']}, grouping settings {run['settings']}")


if __name__ == "__main__":
    main()
