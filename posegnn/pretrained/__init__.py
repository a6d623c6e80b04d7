"""The models shipped with the package: one trained checkpoint per joint layout.

``posegnn-eval`` and ``posegnn-predict`` use them when no ``ckpt_path`` is given. They
were trained on the synthetic world with a detector drawn per image from wide ranges
(the default training), so they are meant for maps from networks they never saw;
``docs/pretrained.md`` gives their numbers and how they were made.
"""

from __future__ import annotations

from pathlib import Path

import torch

from posegnn.io import atomic_torch_save

HERE = Path(__file__).resolve().parent
# what a checkpoint needs to rebuild the module; optimizer and loop states are dropped
KEPT = ("state_dict", "hyper_parameters", "pytorch-lightning_version")


def shipped_checkpoint(layout: str) -> Path:
    """The shipped checkpoint of ``layout``, or a clear error naming the ones there are."""
    path = HERE / f"{layout}.ckpt"
    if not path.is_file():
        there = sorted(p.stem for p in HERE.glob("*.ckpt"))
        raise FileNotFoundError(
            f"no shipped model for layout {layout!r} (shipped: {', '.join(there) or 'none'}); "
            "give ckpt_path=, or leave gnn out with grouping.run=[ae,oracle]")
    return path


def export_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write ``src`` without its optimizer and loop states: the module, its settings and
    its feature statistics, loadable with ``weights_only=True``."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    slim = {k: ckpt[k] for k in KEPT if k in ckpt}
    atomic_torch_save(slim, dst)
    return Path(dst)
