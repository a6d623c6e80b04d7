"""Head to head on the same maps: HigherHRNet's official ``HeatmapParser`` (NMS, top-k,
tag matching, adjust and refine) against posegnn's gnn and ae groupings with refine, each
from an image's maps to its people, as people per image grow.

    git clone https://github.com/HRNet/HigherHRNet-Human-Pose-Estimation ../higherhrnet
    pip install munkres   # the parser's one extra dependency
    python benchmarks/bench_higherhrnet_parser.py --higherhrnet ../higherhrnet \\
        [--people 1 5 10 20 40 60] [--images 3] [--repeat 3] [--ckpt MODEL.ckpt]

Nothing of HigherHRNet's code is part of posegnn: the parser is imported from the
checkout given (its ``lib/core/group.py``). Maps are synthetic (the ``bench_people``
crowds: 256 x 256 heatmaps, 128 x 128 tags); the parser reads tags at heatmap resolution,
as HigherHRNet's test script hands them over, so the tags are upsampled once per image
before the clock starts (bilinear, as posegnn's refine samples them). Its settings are
the CrowdPose experiment's (``experiments/crowd_pose/higher_hrnet/w32_512_adam_lr1e-3.yaml``:
NMS kernel 5, detection threshold 0.1, at most 30 people, its joint order); posegnn's are
its defaults (gnn with the shipped crowdpose14 model unless ``--ckpt``). posegnn's time
runs from the maps too: candidates and their features, pairs, model and grouping. One
process, one torch thread; each figure is the median of ``--repeat`` runs per image,
averaged over images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_people import PEOPLE, make_datasets  # noqa: E402


def load_parser(checkout: Path, num_joints: int, max_people: int):
    """HigherHRNet's ``HeatmapParser`` from its checkout, with the CrowdPose test settings."""
    lib = checkout / "lib"
    if not (lib / "core" / "group.py").is_file():
        raise SystemExit(f"{checkout}: no lib/core/group.py (not a HigherHRNet checkout)")
    sys.path.insert(0, str(lib))
    try:
        from core.group import HeatmapParser
    except ImportError as err:
        raise SystemExit(f"{lib / 'core' / 'group.py'}: cannot import it ({err}); the parser "
                         "needs munkres (pip install munkres)") from None
    cfg = SimpleNamespace(
        DATASET=SimpleNamespace(NUM_JOINTS=num_joints, MAX_NUM_PEOPLE=max_people,
                                WITH_CENTER=False),
        MODEL=SimpleNamespace(TAG_PER_JOINT=True),
        TEST=SimpleNamespace(DETECTION_THRESHOLD=0.1, TAG_THRESHOLD=1.0,
                             USE_DETECTION_VAL=True, IGNORE_TOO_MUCH=False,
                             IGNORE_CENTER=True, NMS_KERNEL=5, NMS_PADDING=2))
    return HeatmapParser(cfg)


def full_resolution_tags(maps) -> torch.Tensor:
    """Tags at every heatmap pixel, [1, K, H, W] (D = 1) or [1, K, H, W, D]."""
    from posegnn.grouping.refine import tag_grid

    k, h, w = maps.heatmaps.shape
    tags = np.stack([tag_grid(maps, j).reshape(h, w, -1) for j in range(k)])
    return torch.from_numpy(tags[..., 0] if tags.shape[-1] == 1 else tags)[None]


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--higherhrnet", type=Path, required=True,
                    help="a checkout of HRNet/HigherHRNet-Human-Pose-Estimation")
    ap.add_argument("--people", type=int, nargs="+", default=list(PEOPLE))
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="runs per image; median kept")
    ap.add_argument("--max-people", type=int, default=30,
                    help="the parser's MAX_NUM_PEOPLE (HigherHRNet's CrowdPose setting: 30)")
    ap.add_argument("--ckpt", type=Path, default=None, help="default: the shipped model")
    args = ap.parse_args()

    import warnings

    from posegnn.checkpoints import load_module
    from posegnn.data.graph import AddEdges, build_vertices
    from posegnn.data.maps import PoseMapsDataset
    from posegnn.grouping import build_grouping
    from posegnn.layouts import get_layout
    from posegnn.pretrained import shipped_checkpoint

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    layout = get_layout("crowdpose14")
    parser = load_parser(args.higherhrnet.resolve(), layout.num_joints, args.max_people)
    module = load_module(args.ckpt or shipped_checkpoint(layout.name))
    cfg = module.graph_cfg
    edges = AddEdges(layout, cfg.edges)
    gnn = build_grouping("gnn", layout=layout, scorer=module.scorer)  # refine on: default
    ae = build_grouping("ae", layout=layout)

    def posegnn_gnn(maps):
        from posegnn.evaluation.runner import candidates_of

        data = edges(build_vertices(maps, layout, cfg))
        with torch.inference_mode():
            prob = torch.sigmoid(module.net(data)).numpy()
        return gnn.group(candidates_of(data), pair_index=data.pair_index.numpy(), prob=prob,
                         maps=maps)

    def posegnn_ae(maps):
        from posegnn.evaluation.runner import candidates_of

        return ae.group(candidates_of(build_vertices(maps, layout, cfg)), maps=maps)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        datasets = make_datasets(Path(tmp), args.people, args.images)
        for people in args.people:
            ds = PoseMapsDataset(datasets[people])
            t = {"higherhrnet": [], "ae": [], "gnn": []}
            found = {"higherhrnet": [], "ae": [], "gnn": []}
            for image_id in ds.image_ids:
                maps = ds.load_maps(image_id)
                det, tag = torch.from_numpy(maps.heatmaps)[None], full_resolution_tags(maps)
                hh = partial(parser.parse, det, tag, adjust=True, refine=True)
                for name, fn in (("higherhrnet", hh), ("ae", partial(posegnn_ae, maps)),
                                 ("gnn", partial(posegnn_gnn, maps))):
                    fn()  # warm: the first call loads the compiled kernels
                    t[name].append(median_ms(fn, args.repeat))
                    out = fn()
                    found[name].append(len(out[0][0]) if name == "higherhrnet" else len(out))
            rows.append((people, {k: statistics.mean(v) for k, v in t.items()},
                         {k: statistics.mean(v) for k, v in found.items()}))
    print("| people | HigherHRNet parser ms | posegnn ae + refine ms | posegnn gnn + refine ms "
          "| gnn / HigherHRNet | people found (HigherHRNet / ae / gnn) |")
    print("|---|---|---|---|---|---|")
    for people, ms, found in rows:
        print(f"| {people} | {ms['higherhrnet']:.1f} | {ms['ae']:.1f} | {ms['gnn']:.1f} | "
              f"{ms['gnn'] / ms['higherhrnet']:.2f} | {found['higherhrnet']:.0f} / "
              f"{found['ae']:.0f} / {found['gnn']:.0f} |")


if __name__ == "__main__":
    main()
