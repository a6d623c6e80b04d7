"""What both drop-ins share: tensors to numpy, groupers per layout, tags at joints."""

from __future__ import annotations

import numpy as np

KNOWN_LAYOUTS = {14: "crowdpose14", 17: "coco17"}


def to_numpy(x) -> np.ndarray:
    """A torch tensor (any device, any float dtype) or an array as a float32 array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def layout_for(num_joints: int, layout: str | None = None) -> str:
    if layout is not None:
        return layout
    if num_joints not in KNOWN_LAYOUTS:
        raise ValueError(f"{num_joints} joints: pass layout= (known: "
                         f"{', '.join(f'{k} -> {v}' for k, v in KNOWN_LAYOUTS.items())})")
    return KNOWN_LAYOUTS[num_joints]


class Groupers:
    """One :class:`posegnn.api.Grouper` per (layout, settings), made on first use."""

    def __init__(self, ckpt_path=None, grouping: str = "gnn", **settings) -> None:
        self.ckpt_path, self.grouping, self.settings = ckpt_path, grouping, settings
        self._made: dict = {}

    def get(self, layout: str, **overrides):
        from posegnn.api import load_grouper

        key = (layout, tuple(sorted(overrides.items())))
        if key not in self._made:
            settings = {**self.settings, **overrides}
            if self.grouping == "ae" or self.ckpt_path is None:
                settings["layout"] = layout
            self._made[key] = load_grouper(self.ckpt_path, self.grouping, **settings)
            made = self._made[key].layout.name
            if made != layout:
                raise ValueError(f"{self.ckpt_path}: a {made} model, but the maps have "
                                 f"{layout}'s joints")
        return self._made[key]


def tags_at(tags: np.ndarray, keypoints: np.ndarray, stride: tuple[float, float]
            ) -> np.ndarray:
    """[P, K, D] tag of each person's joints (``keypoints`` [P, K, 3] in heatmap pixels)
    read at the nearest tag pixel (``tags`` [K, Ht, Wt, D], ``stride`` heatmap pixels per
    tag pixel in x, y); 0 for missing joints."""
    k, ht, wt, d = tags.shape
    out = np.zeros((len(keypoints), k, d), np.float32)
    for p, person in enumerate(keypoints):
        for j in np.flatnonzero(person[:, 2] > 0):
            u = int(np.clip(round(person[j, 0] / stride[0]), 0, wt - 1))
            v = int(np.clip(round(person[j, 1] / stride[1]), 0, ht - 1))
            out[p, j] = tags[j, v, u]
    return out
