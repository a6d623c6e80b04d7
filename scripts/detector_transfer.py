"""Does a model keep its lead on maps from a detector it never saw?

    python scripts/detector_transfer.py --ckpt fixed=RUN_A/checkpoints/best.ckpt \\
        --ckpt varied=RUN_B/checkpoints/best.ckpt --out outputs/transfer

Generates one synthetic test set per detector setting below (300 mixed-crowd images each;
the first is the default test detector, most others lie outside the default training
ranges, ``data.synthetic.noise_ranges``), evaluates each checkpoint's gnn grouping on it
with ``posegnn-eval`` (ae and oracle once per setting) and prints a markdown table of AP
and AP_hard. ``--only`` picks settings by a part of their name (repeatable), e.g.
``--only "tag dimension"`` for the tag-dimension rows. A model whose graph widths depend
on the tag dimension (``graph=raw_tags``, as before issue 13) reads only 1-D tags: its
cells for another D say so. Results are kept under ``--out``: rerunning reuses the
generated data and finished evaluations.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from posegnn.checkpoints import load_module
from posegnn.data.synthetic import DetectorNoise, SyntheticConfig, generate_dataset

# name -> (DetectorNoise changes, map sizes (heatmap, tag) or None for 256/128)
SETTINGS: dict[str, tuple[dict, tuple[int, int] | None]] = {
    "the default test detector (in domain)": ({}, None),
    "nearly clean tags": ({"tag_noise": 0.01, "crowd_confusion": 0.0}, None),
    "tags hostile to ae": ({"tag_noise": 0.5, "crowd_confusion": 0.8}, None),
    "many false peaks and swaps": ({"false_positive_rate": 2.0, "swap_rate": 0.12}, None),
    "misses and jitter": ({"miss_rate": 0.2, "occluded_miss_rate": 0.5, "jitter": 0.035}, None),
    "blurry, weak heatmaps": ({"heat_sigma": 3.5, "peak_height": 0.5}, None),
    "low resolution (128/64)": ({}, (128, 64)),
    "sharp, high resolution (384/192)": ({"heat_sigma": 1.2}, (384, 192)),
    "tag dimension 2": ({"tag_dim": 2}, None),
    "tag dimension 8": ({"tag_dim": 8}, None),
    "tag dimension 8, tags hostile to ae": ({"tag_dim": 8, "tag_noise": 0.5,
                                             "crowd_confusion": 0.8}, None),
}


def dataset(out: Path, name: str, images: int, seed: int) -> Path:
    changes, sizes = SETTINGS[name]
    root = out / "data" / name.split(" (")[0].replace(" ", "_").replace(",", "")
    if not root.exists():
        heat, tag = sizes or (256, 128)
        cfg = SyntheticConfig(num_images=images, seed=seed, crowd="mixed",
                              heatmap_size=heat, tag_size=tag, noise=DetectorNoise(**changes))
        generate_dataset(root, cfg, progress=False)
    return root


def evaluate(out: Path, data: Path, ckpt: str | None, label: str, groupings: str) -> dict:
    run = out / "eval" / label / data.name
    if not (run / "metrics.json").is_file():
        command = [str(Path(sys.executable).with_name("posegnn-eval")), "data=maps",
                   f"data.test={data}", f"grouping.run=[{groupings}]", f"hydra.run.dir={run}",
                   f"paths.output_dir={out}", "progress=false"]
        if ckpt:
            command.append(f"ckpt_path={ckpt}")
        subprocess.run(command, check=True, capture_output=True)
    return json.loads((run / "metrics.json").read_text())


def reads_any_tag_dim(ckpt: str) -> bool:
    """Whether a checkpoint's graphs have the same widths for every tag dimension."""
    return load_module(ckpt).graph_cfg.dimension_free


def cell(m: dict, grouping: str) -> str:
    return f"{m[f'test/{grouping}/AP']:.3f} / {m[f'test/{grouping}/AP_hard']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", action="append", required=True, help="NAME=PATH, repeatable")
    ap.add_argument("--out", type=Path, default=Path("outputs/transfer"))
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", action="append", default=[],
                    help="run the settings whose name contains this (repeatable)")
    args = ap.parse_args()
    ckpts = dict(item.split("=", 1) for item in args.ckpt)
    any_dim = {label: reads_any_tag_dim(path) for label, path in ckpts.items()}
    names = [n for n in SETTINGS if not args.only or any(part in n for part in args.only)]
    head = [f"gnn ({name})" for name in ckpts] + ["ae", "oracle"]
    print("| test detector | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")
    for name in names:
        data = dataset(args.out, name, args.images, args.seed)
        other_dim = SETTINGS[name][0].get("tag_dim", 1) != 1
        cells = []
        for label, path in ckpts.items():
            if other_dim and not any_dim[label]:
                cells.append("cannot read (D-dependent widths)")
                continue
            cells.append(cell(evaluate(args.out, data, path, label, "gnn"), "gnn"))
        base = evaluate(args.out, data, None, "baselines", "ae,oracle")
        cells += [cell(base, g) for g in ("ae", "oracle")]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print("\nCells: AP / AP_hard (OKS AP on images of crowd index >= 0.8).")


if __name__ == "__main__":
    main()
