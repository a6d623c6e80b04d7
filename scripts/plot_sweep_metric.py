"""Plot a metric of every grouping against one swept override of a multirun.

    posegnn-eval -m ckpt_path=CKPT data.synthetic.noise.tag_noise=0.05,0.1,0.2,0.3,0.45
    python scripts/plot_sweep_metric.py outputs/multirun/<time> \
        --key data.synthetic.noise.tag_noise --metric AP --out tag_noise.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def collect(sweep: Path, key: str, metric: str, split: str) -> dict[str, list[tuple]]:
    """{grouping: [(value, metric), ...]} over the sweep's jobs, sorted by value."""
    series: dict[str, list[tuple]] = {}
    for job in sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        value = next(float(o.split("=", 1)[1]) for o in overrides if o.startswith(key + "="))
        metrics = json.loads((job / "metrics.json").read_text())
        for name in ("gnn", "ae", "oracle"):
            if f"{split}/{name}/{metric}" in metrics:
                series.setdefault(name, []).append((value, metrics[f"{split}/{name}/{metric}"]))
    return {k: sorted(v) for k, v in series.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--key", required=True)
    ap.add_argument("--metric", default="AP")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    series = collect(args.sweep, args.key, args.metric, args.split)
    fig = Figure(figsize=(5.5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, points in series.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=name, linestyle="--" if name == "oracle" else "-")
        print(name, " ".join(f"{x:g}:{y:.3f}" for x, y in points))
    ax.set_xlabel(args.key.rsplit(".", 1)[-1])
    ax.set_ylabel(f"{args.split} {args.metric}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = args.out or args.sweep / f"{args.metric}_vs_{args.key.rsplit('.', 1)[-1]}.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
