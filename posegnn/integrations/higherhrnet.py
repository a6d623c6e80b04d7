"""A drop-in for HigherHRNet's ``core.group.HeatmapParser``: the same ``parse`` call, the
same tensors in and the same people-and-scores out, grouped by posegnn.

In HigherHRNet's ``tools/valid.py`` (or ``dist_inference.py``), one line swaps it::

    from posegnn.integrations.higherhrnet import HeatmapParser   # was: from core.group ...
    parser = HeatmapParser(cfg)                                   # unchanged

``parse(det, tag, adjust, refine)`` takes ``det`` [1, K, H, W] (the averaged heatmaps at
the resolution HigherHRNet groups at) and ``tag`` [1, K, H, W, D] (D = 2 with flip
testing; [1, 1, H, W, D] without a tag per joint), and returns ``([people], scores)``:
``people`` [P, K, 3 + D] with x, y in ``det``'s pixels, the joint's score and its tag;
``scores`` one float per person. ``get_final_preds`` then maps them to the image as
before. As in HigherHRNet, ``adjust=True`` reports a peak at pixel u as u + 0.5 (pixel
centres); posegnn's candidates carry their own sub-pixel offsets, so its quarter-pixel
step (``grouping.*.adjust``) stays off unless asked for. ``refine`` is posegnn's
refinement (HigherHRNet's logic: missing joints filled from the maps).
"""

from __future__ import annotations

import numpy as np

from posegnn.integrations.common import Groupers, layout_for, tags_at, to_numpy


class HeatmapParser:
    """``HeatmapParser(cfg)`` as in HigherHRNet (``cfg`` is read for the joint count
    only, and may be None); ``ckpt_path`` (default: the model shipped for the layout),
    ``grouping`` (gnn or ae) and grouping settings (``threshold=``, ``tag_threshold=``,
    ...) choose posegnn's side."""

    def __init__(self, cfg=None, ckpt_path=None, grouping: str = "gnn",
                 layout: str | None = None, **settings) -> None:
        num_joints = None
        if cfg is not None:
            num_joints = int(cfg.DATASET.NUM_JOINTS)
            if getattr(cfg.DATASET, "WITH_CENTER", False) and \
                    getattr(cfg.TEST, "IGNORE_CENTER", True):
                num_joints -= 1  # HigherHRNet drops the centre channel before parsing
        self.num_joints, self.layout = num_joints, layout
        self.groupers = Groupers(ckpt_path, grouping, **settings)

    def parse(self, det, tag, adjust: bool = True, refine: bool = True):
        """People of one image: ``([array [P, K, 3 + D]], [score] * P)``."""
        heat, tags = to_numpy(det), to_numpy(tag)
        if heat.ndim != 4 or heat.shape[0] != 1:
            raise ValueError(f"det of shape {heat.shape}: expected [1, K, H, W] "
                             "(HigherHRNet's test batch of one)")
        if tags.ndim == 4:
            tags = tags[..., None]
        if tags.ndim != 5 or tags.shape[0] != 1:
            raise ValueError(f"tag of shape {tags.shape}: expected [1, K, H, W, D]")
        heat, tags = heat[0], tags[0]
        k = heat.shape[0]
        if self.num_joints is not None and k != self.num_joints:
            heat = heat[:self.num_joints]  # a centre channel HigherHRNet would ignore
            k = self.num_joints
        if tags.shape[0] == 1 and k > 1:
            tags = np.repeat(tags, k, axis=0)  # one tag map for every joint
        tags = tags[:k]
        grouper = self.groupers.get(layout_for(k, self.layout), refine=bool(refine))
        h, w = heat.shape[1:]
        shift = 0.5 if adjust else 0.0
        affine = [[1.0, 0.0, shift], [0.0, 1.0, shift]]
        people = grouper(heat, tags, map_to_image=affine)
        kps = np.asarray(people.keypoints, np.float32).reshape(-1, k, 3)
        kps[..., :2] = np.where(kps[..., 2:3] > 0, kps[..., :2], 0.0)
        stride = (w / tags.shape[2], h / tags.shape[1])
        at = tags_at(tags, kps - [shift, shift, 0.0], stride)
        grouped = np.concatenate([kps, at], axis=2)
        return [grouped], [float(s) for s in np.asarray(people.scores).reshape(-1)]
